"""TSR-V4.20 (``TSR4``): the layout, the model and the rules of the framework's current format.

A TSR4 file is a 128-byte file header, a directory of ``tensor_count`` 64-byte entries at
byte 128, then one data block per tensor: RAW (file_mode 0: blocks 256-aligned from
``128 + 64N`` rounded up to 256, zero gaps, the file ends at the last block) or ZLIB
(file_mode 1: one zlib stream per tensor, packed from ``128 + 64N``). Every tensor is 4-D
NHWC; CRC-32 covers the header (with its CRC field zeroed) and each tensor's uncompressed
bytes. The normative text is ``spec/tsr-v4.md``.

:data:`HEADER` and :data:`ENTRY` are the single declaration of the layout; offsets, sizes,
the fast codec and the spec tables derive from them (:class:`tsr._layout.Layout`).
:func:`header_problems` and :func:`directory_problems` list every rule broken, in reading
order, each as a :class:`Problem` tied to its field and byte offset: the reader raises the
first fatal one, the validator reports them all, so the two cannot disagree.
:func:`plan` lays out a file exactly as the C++ writer does. :data:`GENERATION` plugs all this
into the neutral model (:mod:`tsr._model`): ``tsr.load_all``/``open``/``save_all``/``validate``
read and write TSR4 through it (payloads by the shared :mod:`tsr._blocks`); the model of the
C++ importer is :mod:`tsr._v4cpp`.
"""

from __future__ import annotations

import itertools
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, Literal

import construct as cs
import numpy as np
import numpy.typing as npt

from . import _zlib
from ._layout import Layout
from ._model import (
    Compression,
    Directory,
    Encoded,
    FormatName,
    HeadFor,
    Problem,
    ReadAt,
    TensorInfo,
    check_shape,
)
from .dtypes import FP16, FP32, INT8, INT32, DType
from .errors import (
    BadArgumentError,
    BadFieldError,
    BadMagicError,
    ChecksumError,
    CompressionError,
    LayoutError,
    SizeMismatchError,
    TruncatedError,
    TSRError,
    UnsupportedDTypeError,
    UnsupportedVersionError,
)

MAGIC = b"TSR4"
VERSION = (4, 20)
RAW, ZLIB = 0, 1
RAW_ALIGN = 256
ZLIB_CPP_MAX = 1 << 32
"""C++ refuses to inflate a tensor of this many bytes or more ("larger than 4GB")."""
NDIM = 4
INDEX_MAX = 2**63 - 1  # the largest array NumPy (and torch) can index, in bytes

HEADER = cs.Struct(
    "magic" / cs.Const(MAGIC) * "file signature, the ASCII bytes `TSR4`",
    "version_major" / cs.Int16ul * "4",
    "version_minor" / cs.Int16ul * "20",
    "header_size" / cs.Int32ul * "size of this header in bytes; 128",
    "file_mode" / cs.Int32ul * "0 RAW, 1 ZLIB; applies to every tensor of the file",
    "tensor_count" / cs.Int32ul * "number of directory entries (tensors), at least 1",
    "entry_size" / cs.Int32ul * "size of a directory entry in bytes; 64",
    "dir_offset" / cs.Int64ul * "where the directory starts; 128",
    "data_offset" / cs.Int64ul * "where the first block starts (informational; see Layout)",
    "header_crc32" / cs.Int32ul * "CRC-32 of these 128 bytes with this field zeroed",
    "reserved_0" / cs.Int32ul * "reserved; 0",
    "reserved_1" / cs.Bytes(80) * "reserved; all 0",
)
"""The 128-byte TSR4 file header. All integers little-endian."""

ENTRY = cs.Struct(
    "dtype" / cs.Int8ul * "element type code (see Data types)",
    "reserved_0" / cs.Bytes(3) * "reserved; all 0",
    "shape" / cs.Array(NDIM, cs.Int32sl) * "N, H, W, C; each at least 1",
    "numel" / cs.Int64sl * "number of elements: the product of the four dims",
    "row_stride" / cs.Int64ul * "bytes per row, W·C·itemsize (informational)",
    "nbytes" / cs.Int64ul * "uncompressed size: numel × itemsize",
    "data_offset" / cs.Int64ul * "absolute file offset of the tensor's block",
    "payload_size" / cs.Int64ul * "bytes stored in the block (RAW: nbytes)",
    "data_crc32" / cs.Int32ul * "CRC-32 of the uncompressed tensor bytes",
)
"""One 64-byte TSR4 directory entry (entry ``i`` at ``128 + 64·i``); the 64-bit fields are
unaligned and there is no other padding."""

HEADER_LAYOUT = Layout("TSR4 file header", HEADER)
ENTRY_LAYOUT = Layout("TSR4 directory entry", ENTRY)
HEADER_SIZE: int = HEADER_LAYOUT.size
ENTRY_SIZE: int = ENTRY_LAYOUT.size
assert (HEADER_SIZE, ENTRY_SIZE) == (128, 64), "the schemas disagree with the format"
_CRC_AT = HEADER_LAYOUT.offset_of("header_crc32")

DTYPES: dict[int, DType] = {0: FP32, 1: FP16, 2: INT8, 3: INT32}
"""TSR4 dtype codes (they differ from v1's)."""
CODE_OF: dict[str, int] = {dt.numpy_name: code for code, dt in DTYPES.items()}
MODES = {RAW: "RAW", ZLIB: "ZLIB"}

Level = Literal["error", "strict", "warning"]
"""``error``: C++ rejects too, or the file cannot back the tensor; always fatal.
``strict``: C++ accepts it, but a strict reader refuses it (overlapping blocks, a block in
the header, junk in a payload); fatal unless ``strict=False``. ``warning``: harmless and
accepted by C++ (a padded ``row_stride``, a wrong header ``data_offset``, gaps)."""


def round_up(value: int, to: int) -> int:
    return -(-value // to) * to


def directory_end(count: int) -> int:
    """Where the directory of ``count`` entries ends: ``128 + 64·count``."""
    return HEADER_SIZE + ENTRY_SIZE * count


def data_start(count: int, mode: int) -> int:
    """Where the C++ writer puts the first block of a file of ``count`` tensors."""
    end = directory_end(count)
    return round_up(end, RAW_ALIGN) if mode == RAW else end


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class FileHeader:
    """A decoded TSR4 file header (raw field values, nothing checked)."""

    magic: bytes
    version_major: int
    version_minor: int
    header_size: int
    file_mode: int
    tensor_count: int
    entry_size: int
    dir_offset: int
    data_offset: int
    header_crc32: int
    reserved_0: int
    reserved_1: bytes

    format = "v4"

    @property
    def compression(self) -> Compression:
        """``"zlib"`` for a ZLIB file, None for RAW."""
        return "zlib" if self.file_mode == ZLIB else None

    @property
    def mode_name(self) -> str:
        return MODES.get(self.file_mode, str(self.file_mode))


@dataclass(frozen=True)
class Entry:
    """A decoded directory entry (raw field values) and its index."""

    index: int
    dtype_code: int
    reserved_0: bytes
    shape: tuple[int, int, int, int]
    numel: int
    row_stride: int
    nbytes: int
    data_offset: int
    payload_size: int
    data_crc32: int

    @property
    def dtype(self) -> DType:
        """The element type; raises :class:`UnsupportedDTypeError` for unknown codes."""
        dt = DTYPES.get(self.dtype_code)
        if dt is None:
            raise UnsupportedDTypeError(
                f"tensor {self.index}: unknown dtype code {self.dtype_code}",
                field="dtype",
                found=self.dtype_code,
                expected="0-3",
            )
        return dt

    @property
    def end(self) -> int:
        """The file offset just past this entry's block."""
        return self.data_offset + self.payload_size

    @property
    def offset(self) -> int:
        """Where this entry is in the file."""
        return HEADER_SIZE + ENTRY_SIZE * self.index


_new = object.__new__
_set = object.__setattr__


def decode_header(buffer: bytes | bytearray | memoryview) -> FileHeader:
    """The 128 header bytes as a :class:`FileHeader` (no rule checked)."""
    h = _new(FileHeader)
    h.__dict__.update(HEADER_LAYOUT.unpack(buffer))
    return h


_ENTRY_STRUCT = ENTRY_LAYOUT.fast
assert [f.name for f in ENTRY_LAYOUT.fields] == [
    "dtype", "reserved_0", "shape", "numel", "row_stride", "nbytes", "data_offset",
    "payload_size", "data_crc32",
] and ENTRY_LAYOUT.by_name["shape"].count == 4, "decode_directory is out of step"  # fmt: skip


def decode_directory(buffer: bytes | bytearray | memoryview, count: int) -> list[Entry]:
    """``count`` entries from ``buffer`` (which holds at least ``64·count`` bytes)."""
    out: list[Entry] = []
    append = out.append
    view = memoryview(buffer)[: ENTRY_SIZE * count]
    for i, f in enumerate(_ENTRY_STRUCT.iter_unpack(view)):
        e = _new(Entry)
        # the flat tuple spelled out: a frozen dataclass's __init__ costs 4x more
        e.__dict__.update(
            index=i, dtype_code=f[0], reserved_0=f[1], shape=f[2:6], numel=f[6],
            row_stride=f[7], nbytes=f[8], data_offset=f[9], payload_size=f[10],
            data_crc32=f[11],
        )  # fmt: skip
        append(e)
    return out


def header_crc(head: bytes | bytearray | memoryview) -> int:
    """CRC-32 of the 128 header bytes with the ``header_crc32`` field taken as zero."""
    view = memoryview(head)
    crc = zlib.crc32(view[:_CRC_AT])
    crc = zlib.crc32(b"\0\0\0\0", crc)
    return zlib.crc32(view[_CRC_AT + 4 : HEADER_SIZE], crc)


# ----------------------------------------------------------------------------- rules


def _p(  # noqa: PLR0917  (the fields of a Problem, in order)
    error: type[TSRError],
    field: str,
    offset: int,
    found: Any,
    expected: Any,
    message: str,
    level: Level = "error",
) -> Problem:
    """A :class:`tsr._model.Problem` of this ``level``."""
    return Problem(error, field, offset, found, expected, message,
                   strict_only=level == "strict", warning=level == "warning")  # fmt: skip


def _at(name: str) -> int:
    return HEADER_LAYOUT.offset_of(name)


def header_problems(h: FileHeader, head: bytes, file_size: int) -> list[Problem]:
    """Every rule the file header breaks (``head``: its 128 bytes), in the C++ importer's
    order, then whether the file can hold the directory it declares. A wrong magic or
    version ends the list (nothing else means anything)."""
    out: list[Problem] = []
    if h.magic != MAGIC:
        out.append(_p(
            BadMagicError, "magic", 0, h.magic, MAGIC,
            f"bad magic {h.magic!r}: expected {MAGIC!r} (TSR-V4.20); not a TSR4 file",
        ))  # fmt: skip
        return out
    version = (h.version_major, h.version_minor)
    if version != VERSION:
        out.append(_p(
            UnsupportedVersionError, "version_minor" if h.version_major == 4 else
            "version_major", _at("version_major"), f"{version[0]}.{version[1]}", "4.20",
            f"unsupported TSR4 version {version[0]}.{version[1]}: only 4.20 exists (the "
            "C++ importer reads exactly 4.20)",
        ))  # fmt: skip
        return out
    fixed = (
        ("header_size", h.header_size, HEADER_SIZE),
        ("entry_size", h.entry_size, ENTRY_SIZE),
        ("dir_offset", h.dir_offset, HEADER_SIZE),
        ("reserved_0", h.reserved_0, 0),
    )
    for name, value, want in fixed:
        if value != want:
            out.append(_p(
                BadFieldError, name, _at(name), value, want,
                f"{name} is {value}: TSR-V4.20 fixes it at {want}",
            ))  # fmt: skip
    if h.tensor_count == 0:
        out.append(_p(
            BadFieldError, "tensor_count", _at("tensor_count"), 0, ">= 1",
            "tensor_count is 0: a TSR4 file holds at least one tensor",
        ))  # fmt: skip
    if h.file_mode not in MODES:
        out.append(_p(
            BadFieldError, "file_mode", _at("file_mode"), h.file_mode, "0 (RAW) or 1 (ZLIB)",
            f"file_mode is {h.file_mode}: expected 0 (RAW) or 1 (ZLIB)",
        ))  # fmt: skip
    if any(h.reserved_1):
        i = next(i for i, b in enumerate(h.reserved_1) if b)
        out.append(_p(
            BadFieldError, f"reserved_1[{i}]", _at("reserved_1") + i, h.reserved_1[i], 0,
            f"reserved_1[{i}] is {h.reserved_1[i]}: the 80 reserved bytes must be 0",
        ))  # fmt: skip
    crc = header_crc(head)
    if crc != h.header_crc32:
        out.append(_p(
            ChecksumError, "header_crc32", _CRC_AT, h.header_crc32, crc,
            f"header CRC-32 mismatch: stored {h.header_crc32:#010x}, the header's bytes "
            f"give {crc:#010x}; the header is damaged",
        ))  # fmt: skip
    dir_end = directory_end(h.tensor_count)
    if dir_end > file_size:
        out.append(_p(
            TruncatedError, "tensor_count", _at("tensor_count"), h.tensor_count,
            f"<= {max(0, (file_size - HEADER_SIZE) // ENTRY_SIZE)} for a {file_size}-byte file",
            f"the directory of {h.tensor_count} entries needs {dir_end} bytes but the file "
            f"has {file_size}: truncated, or a wrong tensor_count",
        ))  # fmt: skip
    elif h.file_mode in MODES and h.data_offset != data_start(h.tensor_count, h.file_mode):
        out.append(_p(
            BadFieldError, "data_offset", _at("data_offset"), h.data_offset,
            data_start(h.tensor_count, h.file_mode),
            f"header data_offset is {h.data_offset}, the C++ writer puts "
            f"{data_start(h.tensor_count, h.file_mode)}; no reader uses it",
            "warning",
        ))  # fmt: skip
    return out


def _entry_field(e: Entry, name: str, index: int | None = None) -> tuple[str, int]:
    label = f"tensor[{e.index}].{name}" + ("" if index is None else f"[{index}]")
    return label, e.offset + ENTRY_LAYOUT.offset_of(name, index or 0)


def entry_problems(e: Entry, mode: int, file_size: int) -> list[Problem]:
    """The rules one entry breaks on its own (shape, sizes, dtype, its block against the
    file), in the C++ importer's order."""
    out: list[Problem] = []
    i = e.index
    if any(e.reserved_0):
        j = next(j for j, b in enumerate(e.reserved_0) if b)
        name, off = _entry_field(e, "reserved_0", j)
        out.append(_p(
            BadFieldError, name, off, e.reserved_0[j], 0,
            f"tensor {i}: reserved_0[{j}] is {e.reserved_0[j]}: must be 0",
        ))  # fmt: skip
    dims_ok = True
    for d, v in enumerate(e.shape):
        if v < 1:
            dims_ok = False
            name, off = _entry_field(e, "shape", d)
            out.append(_p(
                BadFieldError, name, off, v, ">= 1",
                f"tensor {i}: shape[{d}] is {v}: every dim of a TSR4 tensor is at least 1",
            ))  # fmt: skip
    dt = DTYPES.get(e.dtype_code)
    if dt is None:
        name, off = _entry_field(e, "dtype")
        out.append(_p(
            UnsupportedDTypeError, name, off, e.dtype_code, "0 FP32, 1 FP16, 2 INT8, 3 INT32",
            f"tensor {i}: unknown dtype code {e.dtype_code}: expected 0 (FP32), 1 (FP16), "
            "2 (INT8) or 3 (INT32)",
        ))  # fmt: skip
    product = math.prod(e.shape)
    sizes_ok = dims_ok and dt is not None
    if dims_ok and product * (dt.itemsize if dt else 1) > INDEX_MAX:
        sizes_ok = False
        name, off = _entry_field(e, "shape")
        out.append(_p(
            BadFieldError, name, off, e.shape, f"a product <= {INDEX_MAX} bytes",
            f"tensor {i}: shape {list(e.shape)} overflows: {product} elements do not fit "
            "a 64-bit size (C++ computes the product modulo 2**64)",
        ))  # fmt: skip
    elif dims_ok and e.numel != product:
        sizes_ok = False
        name, off = _entry_field(e, "numel")
        out.append(_p(
            BadFieldError, name, off, e.numel, product,
            f"tensor {i}: numel is {e.numel} but shape {list(e.shape)} has {product} elements",
        ))  # fmt: skip
    if sizes_ok and dt is not None and e.nbytes != product * dt.itemsize:
        sizes_ok = False
        name, off = _entry_field(e, "nbytes")
        out.append(_p(
            BadFieldError, name, off, e.nbytes, product * dt.itemsize,
            f"tensor {i}: nbytes is {e.nbytes} but {product} x {dt.name} is "
            f"{product * dt.itemsize} bytes",
        ))  # fmt: skip
    if mode == RAW:
        if e.data_offset % RAW_ALIGN:
            name, off = _entry_field(e, "data_offset")
            out.append(_p(
                BadFieldError, name, off, e.data_offset, f"a multiple of {RAW_ALIGN}",
                f"tensor {i}: RAW data_offset {e.data_offset} is not {RAW_ALIGN}-aligned",
            ))  # fmt: skip
        if e.payload_size != e.nbytes:
            name, off = _entry_field(e, "payload_size")
            out.append(_p(
                BadFieldError, name, off, e.payload_size, e.nbytes,
                f"tensor {i}: RAW payload_size {e.payload_size} differs from nbytes "
                f"{e.nbytes}",
            ))  # fmt: skip
    elif mode == ZLIB and sizes_ok:
        if e.nbytes > _zlib.max_inflated_size(e.payload_size):
            name, off = _entry_field(e, "nbytes")
            out.append(_p(
                CompressionError, name, off, e.nbytes,
                f"<= {_zlib.max_inflated_size(e.payload_size)}",
                f"tensor {i}: nbytes {e.nbytes} is more than its {e.payload_size} zlib bytes "
                f"can inflate to ({_zlib.MAX_RATIO}:1 at most)",
            ))  # fmt: skip
        elif e.nbytes >= ZLIB_CPP_MAX:
            name, off = _entry_field(e, "nbytes")
            out.append(_p(
                BadFieldError, name, off, e.nbytes, f"< {ZLIB_CPP_MAX}",
                f"tensor {i}: a ZLIB tensor of {e.nbytes} bytes: the C++ importer refuses "
                "to inflate 4 GiB or more (this library reads it)",
                "warning",
            ))  # fmt: skip
    if e.end > file_size:
        name, off = _entry_field(e, "data_offset")
        out.append(_p(
            TruncatedError, f"tensor[{i}].block", off, e.end, f"<= {file_size}",
            f"tensor {i}: its block [{e.data_offset}, {e.end}) ends past the end of the "
            f"{file_size}-byte file: truncated, or a wrong data_offset/payload_size",
        ))  # fmt: skip
    if sizes_ok and dt is not None and e.row_stride != e.shape[2] * e.shape[3] * dt.itemsize:
        want = e.shape[2] * e.shape[3] * dt.itemsize
        padded = e.row_stride == round_up(want, 256) or e.row_stride == round_up(want, 128)
        name, off = _entry_field(e, "row_stride")
        out.append(_p(
            BadFieldError, name, off, e.row_stride, want,
            f"tensor {i}: row_stride {e.row_stride}, the C++ writer stores W·C·itemsize = "
            f"{want}" + (" (padded as by earlier V4.20 builds and the framework's Python "
            "writer)" if padded else "") + "; no reader uses it",
            "warning",
        ))  # fmt: skip
    return out


def directory_problems(h: FileHeader, entries: Sequence[Entry], file_size: int) -> list[Problem]:
    """Every rule the entries break: each on its own, then together (the file's end,
    blocks in the header or directory, overlaps, order, gaps)."""
    out: list[Problem] = []
    for e in entries:
        out.extend(entry_problems(e, h.file_mode, file_size))
    out.extend(layout_problems(h, entries, file_size))
    return out


def layout_problems(h: FileHeader, entries: Sequence[Entry], file_size: int) -> list[Problem]:
    """The rules the blocks break together."""
    out: list[Problem] = []
    if not entries:
        return out
    dir_end = directory_end(len(entries))
    last = entries[-1]
    furthest = max(e.end for e in entries)
    if furthest <= file_size and last.end != file_size:
        if furthest < file_size:
            out.append(_p(
                SizeMismatchError, "file", furthest, file_size, furthest,
                f"{file_size - furthest} trailing byte(s) after the last block (which ends "
                f"at {furthest}); the file should be {furthest} bytes",
            ))  # fmt: skip
        else:
            out.append(_p(
                LayoutError, f"tensor[{last.index}].block", last.offset, last.end, file_size,
                f"the last entry's block ends at {last.end}, not at the end of the file "
                f"({file_size}): the C++ importer requires it (entries out of order?)",
            ))  # fmt: skip
    for e in entries:
        if e.data_offset < dir_end:
            where = "header" if e.data_offset < HEADER_SIZE else "directory"
            name, off = _entry_field(e, "data_offset")
            out.append(_p(
                LayoutError, name, off, e.data_offset, f">= {dir_end}",
                f"tensor {e.index}: its block starts at {e.data_offset}, inside the {where} "
                f"(the data starts at {dir_end} or later); C++ reads it anyway",
                "strict",
            ))  # fmt: skip
    order = sorted(entries, key=lambda e: (e.data_offset, e.index))
    in_order = all(a.index < b.index for a, b in itertools.pairwise(order))
    if not in_order:
        out.append(_p(
            LayoutError, "directory", HEADER_SIZE, [e.index for e in order][:16],
            "blocks in directory order",
            "the blocks are not in directory order (C++ reads them anyway)",
            "warning",
        ))  # fmt: skip
    reach = dir_end
    reach_by = -1
    for e in order:
        if e.payload_size and e.data_offset < reach and reach_by >= 0:
            name, off = _entry_field(e, "data_offset")
            out.append(_p(
                LayoutError, f"tensor[{e.index}].block", off, e.data_offset, f">= {reach}",
                f"tensor {e.index}: its block [{e.data_offset}, {e.end}) overlaps the block "
                f"of tensor {reach_by}, which ends at {reach}; C++ reads both anyway",
                "strict",
            ))  # fmt: skip
        elif e.data_offset >= reach:
            want = round_up(reach, RAW_ALIGN) if h.file_mode == RAW else reach
            if e.data_offset > want:
                name, off = _entry_field(e, "data_offset")
                out.append(_p(
                    LayoutError, f"tensor[{e.index}].block", off, e.data_offset, want,
                    f"tensor {e.index}: a gap of {e.data_offset - want} byte(s) before its "
                    f"block (the C++ writer would start it at {want}); C++ reads it anyway",
                    "warning",
                ))  # fmt: skip
        if e.end > reach:
            reach, reach_by = e.end, e.index
    return out


# ----------------------------------------------------------------------------- writing


def _refuse(message: str, **kw: Any) -> BadArgumentError:
    return BadArgumentError(message, **kw)


_SUGGEST = {
    "float64": "float32", "bfloat16": "float32", "int64": "int32", "int16": "int32",
    "uint8": "int8", "uint16": "int32", "uint32": "int32", "uint64": "int32", "bool": "int8",
}  # fmt: skip


def tensor_dtype(dtype: np.dtype[Any]) -> int:
    """The TSR4 code of a NumPy dtype (any byte order), or a :class:`UnsupportedDTypeError`
    naming the fix."""
    code = CODE_OF.get(dtype.name)
    if code is None or dtype.kind not in "fi":
        hint = _SUGGEST.get(dtype.name, "float32")
        raise UnsupportedDTypeError(
            f"dtype {dtype.name} cannot be stored in TSR4, which holds float32, float16, "
            f"int8 and int32: convert first, e.g. array.astype(numpy.{hint})",
            field="dtype",
            found=dtype.name,
            expected="float32, float16, int8, int32",
        )
    return code


def stored_shape(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The 4-D NHWC shape C++ stores for ``shape``: leading 1s for lower ranks. Rank above
    4 and zero-size dims are refused with the fix (C++ would drop dims or turn 0 into 1)."""
    check_shape(
        shape, "TSR4", rank_field="shape", dims_field="shape", names=" (N, H, W, C)",
        rank_note=" (the C++ writer would silently drop the dims after the fourth)",
        zero_note="the C++ writer would store the dim as 1, changing the data; skip empty "
        "arrays",
    )  # fmt: skip
    full = (1,) * (NDIM - len(shape)) + tuple(shape)
    return full[0], full[1], full[2], full[3]


@dataclass(frozen=True)
class Block:
    """One tensor as the writer stores it."""

    code: int
    shape: tuple[int, int, int, int]
    data: npt.NDArray[np.uint8]
    """The uncompressed little-endian bytes (C order), a view where possible."""


def prepare(array: npt.ArrayLike) -> Block:
    """One array as TSR4 stores it: dtype code, 4-D shape, C-ordered little-endian bytes."""
    arr = np.asarray(array)
    code = tensor_dtype(arr.dtype)
    shape = stored_shape(arr.shape)
    le = arr.dtype.newbyteorder("<")
    flat = np.ascontiguousarray(arr, dtype=le).reshape(-1)
    return Block(code, shape, flat.view(np.uint8))


@dataclass(frozen=True)
class Plan:
    """A file's layout before its blocks are written: the header and directory bytes, each
    block's offset, and the total size."""

    head: bytes
    """The 128 header bytes and the directory."""
    offsets: tuple[int, ...]
    payloads: tuple[npt.NDArray[np.uint8] | bytes, ...]
    """What each block stores: the raw bytes (RAW) or the zlib stream (ZLIB)."""
    size: int
    head_for: HeadFor | None = None
    """Set when :attr:`head` is zeros still lacking the RAW blocks' CRC-32s (``plan(...,
    defer_crc=True)``): the head from the CRC-32 of every payload, in order."""

    def parts(self) -> list[bytes | memoryview]:
        """The whole file as buffers to write in order: head, zero gaps, payloads."""
        head = self.head
        if self.head_for is not None:
            head = self.head_for([_zlib.crc32(p) for p in self.payloads])
        out: list[bytes | memoryview] = [head]
        pos = len(self.head)
        for off, p in zip(self.offsets, self.payloads, strict=True):
            if off > pos:
                out.append(bytes(off - pos))
            out.append(p if isinstance(p, bytes) else p.data)
            pos = off + len(p)
        return out


def plan(blocks: Sequence[Block], compression: str | None, *, workers: int | None = None,
         defer_crc: bool = False) -> Plan:  # fmt: skip
    """Lay out ``blocks`` exactly as the C++ writer does (ZLIB: compressed in parallel,
    level 6; the bytes do not depend on ``workers``). ``defer_crc`` leaves the RAW blocks'
    CRC-32s to the writer (:attr:`Plan.head_for`), which computes them while it writes."""
    if compression not in (None, "zlib"):
        raise _refuse(
            f"compression {compression!r}: TSR4 supports None (RAW) and 'zlib'",
            field="compression", found=compression, expected="None or 'zlib'",
        )  # fmt: skip
    if not blocks:
        raise _refuse(
            "no arrays: a TSR4 file holds at least one tensor",
            field="tensor_count", found=0, expected=">= 1",
        )  # fmt: skip
    if len(blocks) > 2**32 - 1:
        raise _refuse("too many arrays for one TSR4 file (tensor_count is a uint32)")
    mode = RAW if compression is None else ZLIB
    count = len(blocks)
    if mode == ZLIB:
        for i, b in enumerate(blocks):
            if b.data.nbytes >= ZLIB_CPP_MAX:
                raise _refuse(
                    f"array {i} has {b.data.nbytes} bytes: the C++ importer cannot inflate a "
                    "ZLIB tensor of 4 GiB or more; save it RAW (compression=None) or split it",
                    field="nbytes", found=b.data.nbytes, expected=f"< {ZLIB_CPP_MAX}",
                )  # fmt: skip
        packed = _zlib.compress_many([b.data for b in blocks], workers=workers)
        payloads: tuple[npt.NDArray[np.uint8] | bytes, ...] = tuple(c.data for c in packed)
        crcs: list[int] | None = [c.crc32 for c in packed]
    else:
        payloads = tuple(b.data for b in blocks)
        crcs = None if defer_crc else [_zlib.crc32(b.data) for b in blocks]
    start = data_start(count, mode)
    offsets: list[int] = []
    pos = start
    for p in payloads:
        offsets.append(pos)
        pos += len(p)
        if mode == RAW:
            pos = round_up(pos, RAW_ALIGN)
    size = offsets[-1] + len(payloads[-1])
    head_for = partial(_head, blocks, mode, tuple(offsets), payloads)
    if crcs is None:
        return Plan(bytes(directory_end(count)), tuple(offsets), payloads, size, head_for)
    return Plan(head_for(crcs), tuple(offsets), payloads, size)


def _head(blocks: Sequence[Block], mode: int, offsets: Sequence[int],
          payloads: Sequence[npt.NDArray[np.uint8] | bytes],
          crcs: Sequence[int]) -> bytes:  # fmt: skip
    """The file header and directory of a planned file, given each payload's CRC-32."""
    parts = [b""]
    for b, off, p, crc in zip(blocks, offsets, payloads, crcs, strict=True):
        itemsize = DTYPES[b.code].itemsize
        parts.append(_ENTRY_STRUCT.pack(
            b.code, b"\0\0\0", *b.shape, b.data.nbytes // itemsize,
            b.shape[2] * b.shape[3] * itemsize, b.data.nbytes, off, len(p), crc,
        ))  # fmt: skip
    header = {
        "magic": MAGIC, "version_major": VERSION[0], "version_minor": VERSION[1],
        "header_size": HEADER_SIZE, "file_mode": mode, "tensor_count": len(blocks),
        "entry_size": ENTRY_SIZE, "dir_offset": HEADER_SIZE,
        "data_offset": data_start(len(blocks), mode), "header_crc32": 0, "reserved_0": 0,
        "reserved_1": bytes(80),
    }  # fmt: skip
    head0 = HEADER_LAYOUT.pack(header)
    header["header_crc32"] = header_crc(head0)
    parts[0] = HEADER_LAYOUT.pack(header)
    return b"".join(parts)


def encoded(plan_: Plan) -> Encoded:
    """A :class:`Plan` as the neutral model's :class:`Encoded` (zero gaps)."""
    blocks: list[tuple[int, npt.NDArray[Any] | bytes | memoryview]] = []
    pos = len(plan_.head)
    for off, p in zip(plan_.offsets, plan_.payloads, strict=True):
        blocks.append((off - pos, p))
        pos = off + len(p)
    return Encoded(plan_.head, tuple(blocks), plan_.head_for)


def encode(arrays: Sequence[npt.ArrayLike], compression: Compression = None) -> Encoded:
    """A TSR4 file holding ``arrays``, laid out byte for byte as the C++ writer does (RAW:
    the CRC-32s left to the writer, see :attr:`Encoded.head_for`)."""
    return encoded(plan([prepare(a) for a in arrays], compression, defer_crc=True))


def to_bytes(arrays: Sequence[npt.ArrayLike], compression: Compression = None) -> bytes:
    """The bytes of the TSR4 file holding ``arrays`` (what ``tsr.save_all`` writes)."""
    return b"".join(plan([prepare(a) for a in arrays], compression).parts())


# ----------------------------------------------------------------------------- the generation

_ITEMSIZE = {code: dt.itemsize for code, dt in DTYPES.items()}
_NAMES = {code: dt.name for code, dt in DTYPES.items()}


_ENTRY_DTYPE = ENTRY_LAYOUT.numpy_dtype(signed64=True)
_ITEM_OF_CODE = np.array([DTYPES[c].itemsize if c in DTYPES else 0 for c in range(256)], np.int64)


def writer_exact(h: FileHeader, directory: bytes | bytearray | memoryview, file_size: int) -> bool:
    """True when every entry of ``directory`` (its ``64·tensor_count`` bytes) is exactly
    what the C++ writer writes for a file of ``file_size`` bytes: the common case, checked
    over the whole directory at once (one NumPy structured view derived from
    :data:`ENTRY`), without building an :class:`Entry` or :class:`Problem`.
    :func:`directory_problems` finds nothing for such a directory (a test checks this on
    mutated ones); any other directory takes that slow path. All arithmetic is ``int64``
    with every step bounded first, so no product or sum can wrap for an entry that passes.
    """
    count = h.tensor_count
    if h.file_mode not in MODES or count == 0 or file_size >= 1 << 62:
        return False
    r = np.frombuffer(directory, _ENTRY_DTYPE, count)
    item = _ITEM_OF_CODE[r["dtype"]]
    shape = r["shape"].astype(np.int64)
    off, size, n = r["data_offset"], r["payload_size"], r["nbytes"]
    if not (
        item.all() and (shape > 0).all() and not r["reserved_0"].any()
        and ((off >= 0) & (off <= file_size) & (size >= 0) & (size <= file_size)).all()
    ):  # fmt: skip
        return False
    hw, wc = shape[:, 0] * shape[:, 1], shape[:, 2] * shape[:, 3]  # each < 2**62
    if not (hw <= INDEX_MAX // wc).all():  # then hw * wc is exact
        return False
    numel = hw * wc
    if not ((r["numel"] == numel) & (numel <= INDEX_MAX // item)).all():
        return False
    if not ((n == numel * item) & (r["row_stride"] == wc * item)).all():
        return False
    end = off + size  # both <= file_size < 2**62
    if h.file_mode == RAW:
        sizes_ok = (size == n).all()
        end = (end + (RAW_ALIGN - 1)) // RAW_ALIGN * RAW_ALIGN
    else:
        sizes_ok = ((n < ZLIB_CPP_MAX)
                    & (n <= _zlib.MAX_RATIO * np.minimum(size, ZLIB_CPP_MAX))).all()  # fmt: skip
    return bool(
        sizes_ok
        and off[0] == data_start(count, h.file_mode)
        and (off[1:] == end[:-1]).all()
        and off[-1] + size[-1] == file_size
    )


def _read_directory(head: bytes, file_size: int, read_at: ReadAt) -> tuple[
    FileHeader | None, bytes | None, list[Problem]
]:  # fmt: skip
    """The header, the directory's bytes (None when the header says nothing more can be
    read) and the header's problems."""
    if len(head) < HEADER_SIZE:
        return None, None, [_p(
            TruncatedError, "header", 0, file_size, HEADER_SIZE,
            f"truncated: a TSR4 file has at least {HEADER_SIZE} bytes, this one {file_size}",
        )]  # fmt: skip
    h = decode_header(head)
    problems = header_problems(h, head, file_size)
    stops = (TruncatedError, BadMagicError, UnsupportedVersionError)
    if any(p.error in stops or p.field in ("entry_size", "dir_offset") for p in problems):
        return h, None, problems
    count = h.tensor_count
    buf = read_at(HEADER_SIZE, ENTRY_SIZE * count)  # header_problems checked it fits
    if len(buf) < ENTRY_SIZE * count:
        problems.append(_p(
            TruncatedError, "directory", HEADER_SIZE, len(buf), ENTRY_SIZE * count,
            "the file shrank while its directory was read",
        ))  # fmt: skip
        return h, None, problems
    return h, buf, problems


def parse(head: bytes, file_size: int, read_at: ReadAt) -> tuple[
    FileHeader | None, list[Entry], list[Problem]
]:  # fmt: skip
    """The header, the entries and every problem of a file (no payload read): the header
    from ``head`` (its first 128 bytes), the directory through ``read_at`` once its size is
    known to fit the file."""
    h, buf, problems = _read_directory(head, file_size, read_at)
    if h is None or buf is None:
        return h, [], problems
    entries = decode_directory(buf, h.tensor_count)
    if not writer_exact(h, buf, file_size):
        problems += directory_problems(h, entries, file_size)
    return h, entries, problems


def tensor_info(e: Entry, compression: Compression) -> TensorInfo:
    """The neutral model's view of one (sound) entry."""
    return TensorInfo(e.index, _NAMES[e.dtype_code], e.shape, e.data_offset, e.payload_size,
                      e.nbytes, compression, e.data_crc32, _ITEMSIZE[e.dtype_code])  # fmt: skip


def tensor_infos(directory: bytes | bytearray | memoryview, count: int,
                 compression: Compression) -> tuple[TensorInfo, ...]:  # fmt: skip
    """:func:`tensor_info` of every entry of a directory that :func:`writer_exact` passed,
    straight from its bytes (one :mod:`struct` pass, no :class:`Entry`): what opening a
    1,000-tensor file costs, so each frozen object gets its whole ``__dict__`` at once (a
    dataclass ``__init__`` costs twice as much; filling ``t.__dict__`` key by key makes
    every later attribute read four times slower)."""
    out: list[TensorInfo] = []
    append = out.append
    names, items = _NAMES, _ITEMSIZE
    view = memoryview(directory)[: ENTRY_SIZE * count]
    rows = _ENTRY_STRUCT.iter_unpack(view)
    for i, (code, _, n, h, w, c, _, _, nbytes, offset, size, crc) in enumerate(rows):
        t = _new(TensorInfo)
        _set(t, "__dict__", {
            "index": i, "dtype": names[code], "shape": (n, h, w, c), "offset": offset,
            "stored_size": size, "nbytes": nbytes, "compression": compression, "crc32": crc,
            "itemsize": items[code],
        })  # fmt: skip
        append(t)
    return tuple(out)


assert [f.name for f in fields(TensorInfo)] == [
    "index", "dtype", "shape", "offset", "stored_size", "nbytes", "compression", "crc32",
    "itemsize",
], "tensor_infos is out of step with TensorInfo"  # fmt: skip


class _V4:
    """The TSR4 generation (see :class:`tsr._model.Generation`)."""

    name: FormatName = "v4"
    magic = MAGIC
    head_size = HEADER_SIZE
    multi_tensor = True
    compressions: tuple[Compression, ...] = (None, "zlib")

    def parse(
        self, head: bytes, file_size: int, read_at: ReadAt, *, reserved_dtypes: bool = False
    ) -> Directory:
        h, buf, problems = _read_directory(head, file_size, read_at)
        if h is None:
            return Directory("v4", None, (), tuple(problems))
        compression = h.compression
        exact = buf is not None and writer_exact(h, buf, file_size)
        if buf is not None and exact and not any(p.severity(False) == "error" for p in problems):
            return Directory("v4", h, tensor_infos(buf, h.tensor_count, compression),
                             tuple(problems))  # fmt: skip
        entries = [] if buf is None else decode_directory(buf, h.tensor_count)
        if not exact:
            problems += directory_problems(h, entries, file_size)
        if any(p.severity(strict=False) == "error" for p in problems):
            bad = {p.field.split(".")[0] for p in problems if p.severity(False) == "error"}
            header_bad = any(p.offset < HEADER_SIZE and p.severity(False) == "error"
                             for p in problems)  # fmt: skip
            sound = [] if header_bad else [e for e in entries if f"tensor[{e.index}]" not in bad]
        else:
            sound = entries
        return Directory("v4", h, tuple(tensor_info(e, compression) for e in sound),
                         tuple(problems))  # fmt: skip

    def encode(self, arrays: Sequence[npt.NDArray[Any]], compression: Compression) -> Encoded:
        return encode(arrays, compression)

    def padding_problems(self, d: Directory, file_size: int, read_at: ReadAt) -> list[Problem]:
        """Non-zero bytes outside every block (the writer zero-fills its padding; C++
        ignores it): a warning of :func:`tsr.validate`, which reads them in steps."""
        if d.header is None or not d.tensors or len(d.tensors) != d.header.tensor_count:
            return []
        spans = sorted((t.offset, min(t.offset + t.stored_size, file_size)) for t in d.tensors)
        pos = directory_end(len(d.tensors))
        nonzero, first = 0, -1
        for start, end in [*spans, (file_size, file_size)]:
            for at in range(pos, start, 1 << 20):
                chunk = read_at(at, min(1 << 20, start - at))
                zeros = chunk.count(0)
                if zeros != len(chunk):
                    nonzero += len(chunk) - zeros
                    first = at if first < 0 else first
            pos = max(pos, end)
        if not nonzero:
            return []
        return [_p(
            LayoutError, "padding", first, nonzero, 0,
            f"{nonzero} non-zero byte(s) outside every block (from byte {first}); the C++ "
            "writer zero-fills its padding and C++ ignores it",
            "warning",
        )]  # fmt: skip

    def cpp_verdicts(
        self, head: bytes, file_size: int, read_at: ReadAt, *, name: str = "<file>"
    ) -> tuple[Any, ...]:
        from . import _v4cpp

        v = _v4cpp.cpp_verdict(file_size, read_at, name=os.path.basename(name))
        return (v.neutral(),)


GENERATION = _V4()
