"""TSR3: the single-tensor format of renaissance V3.x (magic ``TSR3``, version 3).

A 128-byte little-endian header (:data:`HEADER`, the one declaration of its layout), then
either RAW data (128 zero bytes, the data at offset 256) or one zlib stream (level 6) at
offset 128. A CRC-32 covers the uncompressed data; there is no header CRC. The normative
description is ``spec/tsr-v3.md``; the C++ importer's behaviour is modelled by
:mod:`tsr.v3_cpp`.

This module holds the format's rules (:func:`parse`: every broken rule as a
:class:`tsr._model.Problem`, so the reader and the validator agree) and its writer
(:func:`encode`, byte-identical with ``CpuDevice::export_tensor``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import construct as cs
import numpy as np
import numpy.typing as npt

from . import _zlib, dtypes
from ._layout import Layout
from ._model import (
    Compression,
    Directory,
    Encoded,
    FormatName,
    Problem,
    ReadAt,
    TensorInfo,
    check_shape,
    is_bf16,
    one_tensor,
)
from .errors import (
    BadArgumentError,
    BadFieldError,
    BadMagicError,
    SizeMismatchError,
    TruncatedError,
    UnsupportedDTypeError,
    UnsupportedVersionError,
)

MAGIC = b"TSR3"
VERSION = 3
MAX_NDIM = 4
RAW, ZLIB = 0, 1
ZLIB_LEVEL = _zlib.LEVEL

HEADER = cs.Struct(
    "magic" / cs.Const(MAGIC) * "file signature, the ASCII bytes `TSR3`",
    "header_size" / cs.Int32ul * "size of the header in bytes; 128",
    "version" / cs.Int32ul * "format version; 3",
    "file_mode" / cs.Int32ul * "0 RAW, 1 ZLIB",
    "dtype" / cs.Int8ul * "element type code: 1 FP32, 2 BF16, 3 INT32, 4 INT8",
    "ndim" / cs.Int8ul * "number of dimensions, 0 to 4",
    "reserved_1" / cs.Array(2, cs.Int8ul) * "reserved; 0",
    "dims" / cs.Array(MAX_NDIM, cs.Int32sl) * "the shape, right-aligned; unused leading slots 0",
    "numel" / cs.Int64ul * "number of elements (1 for a scalar)",
    "data_offset" / cs.Int64ul * "where the data starts: 256 RAW, 128 ZLIB",
    "payload_size" / cs.Int64ul * "bytes stored: raw_data_size (RAW), the zlib stream's length",
    "raw_data_size" / cs.Int64ul * "uncompressed bytes: numel × element size",
    "crc32" / cs.Int32ul * "CRC-32 (zlib) of the uncompressed data",
    "reserved_2" / cs.Int32ul * "reserved; 0",
    "padding" / cs.Bytes(52) * "zero",
)
"""The 128-byte TSR3 header (``TSRHeaderV3``, packed)."""

LAYOUT = Layout("TSR3 header", HEADER)
HEADER_SIZE: int = LAYOUT.size
RAW_DATA_OFFSET = 2 * HEADER_SIZE
DATA_OFFSET = {RAW: RAW_DATA_OFFSET, ZLIB: HEADER_SIZE}
assert HEADER_SIZE == 128

DTYPES: dict[int, dtypes.DType] = {1: dtypes.FP32, 2: dtypes.BF16, 3: dtypes.INT32, 4: dtypes.INT8}
"""TSR3's dtype codes (``tr::DType``; 0 is INVALID)."""
_CODE_OF = {d.name: c for c, d in DTYPES.items()}
MODES = {RAW: None, ZLIB: "zlib"}
_MODE_OF: dict[Compression, int] = {None: RAW, "zlib": ZLIB}


@dataclass(frozen=True)
class Header:
    """A decoded TSR3 header: the raw fields in file order (no rule checked)."""

    magic: bytes
    header_size: int
    version: int
    file_mode: int
    dtype_code: int
    ndim: int
    reserved_1: tuple[int, int]
    dims: tuple[int, int, int, int]
    """As stored: right-aligned, unused leading slots 0 (a scalar is all 0)."""
    numel: int
    data_offset: int
    payload_size: int
    raw_data_size: int
    crc32: int
    reserved_2: int
    padding: bytes

    format = "v3"

    @property
    def dtype(self) -> dtypes.DType:
        """The element type (``.name``: FP32, BF16, INT32, INT8); raises
        :class:`UnsupportedDTypeError` for another code."""
        dt = DTYPES.get(self.dtype_code)
        if dt is None:
            raise UnsupportedDTypeError(
                f"dtype code {self.dtype_code}: TSR3 has 1 (FP32), 2 (BF16), 3 (INT32), 4 (INT8)",
                field="dtype", offset=LAYOUT.offset_of("dtype"), found=self.dtype_code,
                expected="1 to 4",
            )  # fmt: skip
        return dt

    @property
    def shape(self) -> tuple[int, ...]:
        """The last ``ndim`` dims, as the importer rebuilds the shape (``()``: scalar)."""
        n = min(self.ndim, MAX_NDIM)
        return self.dims[MAX_NDIM - n :] if n else ()

    @property
    def compression(self) -> Compression:
        """``None`` (RAW) or ``"zlib"``."""
        return "zlib" if self.file_mode == ZLIB else None

    def to_bytes(self) -> bytes:
        """The 128 header bytes."""
        return LAYOUT.pack({**self._raw(), "dtype": self.dtype_code})

    def _raw(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "dtype_code"}


def decode(head: bytes | bytearray | memoryview) -> Header:
    """The header in the first 128 bytes of ``head`` (the caller guarantees them)."""
    raw = LAYOUT.unpack(head)
    raw["dtype_code"] = raw.pop("dtype")
    return Header(**raw)


def _problem(error: type[Any], field: str, found: Any, expected: Any, message: str,
             **flags: bool) -> Problem:  # fmt: skip
    if field.startswith("dims["):
        offset = LAYOUT.offset_of("dims", int(field[5]))
    elif field in LAYOUT.by_name:
        offset = LAYOUT.offset_of(field)
    else:
        offset = {"gap": HEADER_SIZE, "file": 0}.get(field, -1)
    return Problem(error, field, offset, found, expected, message, **flags)


def problems(h: Header, file_size: int, gap: bytes | None) -> list[Problem]:
    """Every rule ``h`` (in a file of ``file_size`` bytes) breaks, in the importer's order
    first; ``gap`` is bytes 128..255 of a RAW file (None if not read)."""
    out: list[Problem] = []
    add = out.append
    if h.magic != MAGIC:
        add(_problem(BadMagicError, "magic", h.magic, MAGIC,
                     f"bad magic {h.magic!r}: expected {MAGIC!r}; not a TSR3 file"))  # fmt: skip
        return out
    if h.version != VERSION:
        add(_problem(UnsupportedVersionError, "version", h.version, VERSION,
                     f"unsupported TSR3 version {h.version}: expected {VERSION}"))  # fmt: skip
        return out
    if h.header_size != HEADER_SIZE:
        add(_problem(BadFieldError, "header_size", h.header_size, HEADER_SIZE,
                     f"header_size {h.header_size}: expected {HEADER_SIZE}"))  # fmt: skip
    if h.file_mode not in MODES:
        add(_problem(BadFieldError, "file_mode", h.file_mode, "0 or 1",
                     f"file_mode {h.file_mode}: expected 0 (RAW) or 1 (ZLIB)"))  # fmt: skip
        return out
    dt = DTYPES.get(h.dtype_code)
    if dt is None:
        add(_problem(UnsupportedDTypeError, "dtype", h.dtype_code, "1 to 4",
                     f"dtype code {h.dtype_code}: expected 1 (FP32), 2 (BF16), 3 (INT32) "
                     "or 4 (INT8)"))  # fmt: skip
    if h.ndim > MAX_NDIM:
        add(_problem(BadFieldError, "ndim", h.ndim, "0 to 4",
                     f"ndim {h.ndim} is out of range: expected 0 to {MAX_NDIM}"))  # fmt: skip
    offset = DATA_OFFSET[h.file_mode]
    if h.data_offset != offset:
        mode = "RAW" if h.file_mode == RAW else "ZLIB"
        add(
            _problem(
                BadFieldError,
                "data_offset",
                h.data_offset,
                offset,
                f"data_offset {h.data_offset}: a {mode} file's data starts at {offset}",
            )
        )
    negative = [i for i, d in enumerate(h.dims) if d < 0]
    for i in negative:
        add(_problem(BadFieldError, f"dims[{i}]", h.dims[i], ">= 1",
                     f"dims[{i}] is negative: {h.dims[i]}"))  # fmt: skip
    if h.ndim > MAX_NDIM or negative:
        return out
    shape = h.shape
    count = math.prod(shape)
    for i, d in enumerate(h.dims[: MAX_NDIM - h.ndim]):
        if d:
            add(_problem(BadFieldError, f"dims[{i}]", d, 0,
                         f"dims[{i}] is {d} but ndim {h.ndim} leaves it unused, so it must be 0 "
                         "(the C++ importer counts it in numel but not in the shape)",
                         strict_only=d == 1 and count == h.numel))  # fmt: skip
    for i, d in enumerate(shape):
        if d == 0:
            j = MAX_NDIM - h.ndim + i
            add(_problem(BadFieldError, f"dims[{j}]", 0, ">= 1",
                         f"dims[{j}] is 0: TSR3 cannot hold an empty tensor"))  # fmt: skip
    if count != h.numel:
        add(
            _problem(
                BadFieldError,
                "numel",
                h.numel,
                count,
                f"numel {h.numel} disagrees with the shape {shape} ({count} elements)",
            )
        )
        return out
    if dt is None:
        return out
    nbytes = count * dt.itemsize
    if h.raw_data_size != nbytes:
        add(
            _problem(
                BadFieldError,
                "raw_data_size",
                h.raw_data_size,
                nbytes,
                f"raw_data_size {h.raw_data_size}: {count} x {dt.name} is {nbytes} bytes",
            )
        )
        return out
    if h.file_mode == RAW:
        _raw_size_problems(h, file_size, nbytes, add)
    else:
        _zlib_size_problems(h, file_size, nbytes, add)
    for name in ("reserved_1", "reserved_2"):
        value = getattr(h, name)
        if any(value) if isinstance(value, tuple) else value:
            add(_problem(BadFieldError, name, value, 0, f"{name} is {value}: expected 0",
                         strict_only=True))  # fmt: skip
    if any(h.padding):
        add(_problem(BadFieldError, "padding", h.padding.hex(), "52 zero bytes",
                     "header padding (bytes 76..127) is not zero", strict_only=True))  # fmt: skip
    if h.file_mode == RAW and gap is not None and any(gap):
        add(_problem(BadFieldError, "gap", gap.hex(), "128 zero bytes",
                     "bytes 128..255 of a RAW file are not zero", strict_only=True))  # fmt: skip
    return out


def _raw_size_problems(h: Header, file_size: int, nbytes: int, add: Any) -> None:
    end = RAW_DATA_OFFSET + nbytes
    if file_size < end:
        add(
            _problem(
                TruncatedError,
                "raw_data_size",
                file_size,
                end,
                f"truncated: {nbytes} data bytes from offset {RAW_DATA_OFFSET} need a file "
                f"of {end} bytes, this one has {file_size}; was it fully written?",
            )
        )
        return
    if h.payload_size != nbytes:
        # harmless only if the C++ truncation check (wrapping uint64) still passes
        passes = (RAW_DATA_OFFSET + h.payload_size) % 2**64 <= file_size
        add(_problem(BadFieldError, "payload_size", h.payload_size, nbytes,
                     f"payload_size {h.payload_size}: a RAW file stores raw_data_size "
                     f"({nbytes}) bytes", strict_only=passes))  # fmt: skip
    if file_size > end:
        add(_problem(SizeMismatchError, "file", file_size, end,
                     f"{file_size - end} trailing byte(s) after the data: the file should be "
                     f"{end} bytes", strict_only=True))  # fmt: skip


def _zlib_size_problems(h: Header, file_size: int, nbytes: int, add: Any) -> None:
    end = HEADER_SIZE + h.payload_size
    if h.payload_size == 0:
        add(_problem(BadFieldError, "payload_size", 0, ">= 1",
                     "payload_size 0: a ZLIB file holds a zlib stream"))  # fmt: skip
        return
    if file_size < end:
        add(_problem(TruncatedError, "payload_size", file_size, end,
                     f"truncated: the {h.payload_size}-byte zlib stream at {HEADER_SIZE} needs "
                     f"a file of {end} bytes, this one has {file_size}"))  # fmt: skip
        return
    bound = _zlib.max_inflated_size(h.payload_size)
    if nbytes > bound:
        add(_problem(BadFieldError, "raw_data_size", nbytes, f"<= {bound}",
                     f"raw_data_size {nbytes}: {h.payload_size} zlib bytes inflate to at most "
                     f"{bound}; the header is wrong or hostile"))  # fmt: skip
        return
    if file_size > end:
        add(_problem(SizeMismatchError, "file", file_size, end,
                     f"{file_size - end} trailing byte(s) after the zlib stream: the file "
                     f"should be {end} bytes", strict_only=True))  # fmt: skip


class _V3:
    """The TSR3 generation (see :class:`tsr._model.Generation`)."""

    name: FormatName = "v3"
    magic = MAGIC
    head_size = RAW_DATA_OFFSET  # the header and a RAW file's zero gap
    multi_tensor = False
    compressions: tuple[Compression, ...] = (None, "zlib")

    def parse(
        self, head: bytes, file_size: int, read_at: ReadAt, *, reserved_dtypes: bool = False
    ) -> Directory:
        if len(head) < HEADER_SIZE:
            p = _problem(TruncatedError, "file", file_size, HEADER_SIZE,
                         f"truncated header: a TSR3 file has at least {HEADER_SIZE} bytes, "
                         f"this one {file_size}")  # fmt: skip
            return Directory("v3", None, (), (p,))
        h = decode(head)
        gap = head[HEADER_SIZE:RAW_DATA_OFFSET] if len(head) >= RAW_DATA_OFFSET else None
        found = tuple(problems(h, file_size, gap))
        if any(p.severity(strict=False) == "error" for p in found):
            return Directory("v3", h, (), found)
        dt = DTYPES[h.dtype_code]
        raw = h.file_mode == RAW
        info = TensorInfo(
            index=0,
            dtype=dt.name,
            shape=h.shape,
            offset=h.data_offset,
            stored_size=h.raw_data_size if raw else h.payload_size,
            nbytes=h.raw_data_size,
            compression=MODES[h.file_mode],  # type: ignore[arg-type]
            crc32=h.crc32,
            itemsize=dt.itemsize,
        )
        return Directory("v3", h, (info,), found)

    def encode(self, arrays: Sequence[npt.NDArray[Any]], compression: Compression) -> Encoded:
        return encode(one_tensor(arrays, "TSR3"), compression)

    def cpp_verdicts(
        self, head: bytes, file_size: int, read_at: ReadAt, *, name: str = "<file>"
    ) -> tuple[Any, ...]:
        from . import v3_cpp

        return v3_cpp.verdicts(head, file_size, read_at, name=name)


GENERATION = _V3()


def dims_of(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The stored dims of ``shape``: right-aligned, unused leading slots 0 (as C++)."""
    check_shape(shape, "TSR3", rank_field="ndim", dims_field="dims",
                zero_note="the framework cannot allocate one")  # fmt: skip
    padded = (0,) * (MAX_NDIM - len(shape)) + tuple(shape)
    return padded  # type: ignore[return-value]


_NATIVE = {np.dtype("<f4"): dtypes.FP32, np.dtype("<i4"): dtypes.INT32, np.dtype("i1"): dtypes.INT8}


def dtype_of(dtype: np.dtype[Any]) -> dtypes.DType:
    """The TSR3 type of a NumPy dtype, or :class:`UnsupportedDTypeError` with the fix."""
    le = dtype.newbyteorder("<") if dtype.byteorder in "<>=" else dtype
    dt = _NATIVE.get(le)
    if dt is not None:
        return dt
    if is_bf16(dtype):
        return dtypes.BF16
    fix = "array.astype(numpy.float32)" if dtype.kind in "fc" else "array.astype(numpy.int32)"
    raise UnsupportedDTypeError(
        f"cannot store dtype {dtype.name} as TSR3: it holds float32, bfloat16 (ml_dtypes "
        f"or torch), int32 and int8; convert first, e.g. {fix}",
        field="dtype", found=dtype.name, expected="float32, bfloat16, int32 or int8",
    )  # fmt: skip


def header_for(shape: tuple[int, ...], dt: dtypes.DType, mode: int, payload_size: int,
               crc: int) -> bytes:  # fmt: skip
    """The 128 header bytes C++ writes for a tensor (RAW: plus nothing; see :func:`encode`)."""
    numel = math.prod(shape)
    return LAYOUT.pack({
        "magic": MAGIC, "header_size": HEADER_SIZE, "version": VERSION, "file_mode": mode,
        "dtype": _CODE_OF[dt.name], "ndim": len(shape), "reserved_1": (0, 0),
        "dims": dims_of(shape), "numel": numel, "data_offset": DATA_OFFSET[mode],
        "payload_size": payload_size, "raw_data_size": numel * dt.itemsize, "crc32": crc,
        "reserved_2": 0, "padding": bytes(52),
    })  # fmt: skip


def encode(array: npt.NDArray[Any], compression: Compression) -> Encoded:
    """The file ``CpuDevice::export_tensor`` writes for ``array`` (RAW or ZLIB level 6)."""
    if compression not in _MODE_OF:
        raise BadArgumentError(
            f"compression {compression!r}: TSR3 stores None (RAW) or 'zlib'",
            field="compression", found=compression, expected="None or 'zlib'",
        )  # fmt: skip
    dt = dtype_of(array.dtype)
    shape = tuple(int(d) for d in array.shape)
    dims_of(shape)
    from ._blocks import le_bytes

    data = le_bytes(array)
    if compression is None:  # the CRC-32 left to the writer (Encoded.head_for)

        def head_for(crcs: Sequence[int]) -> bytes:
            return header_for(shape, dt, RAW, len(data), crcs[0]) + bytes(HEADER_SIZE)

        return Encoded(bytes(2 * HEADER_SIZE), ((0, data),), head_for)
    z = _zlib.compress(data)
    return Encoded(header_for(shape, dt, ZLIB, len(z.data), z.crc32), ((0, z.data),))
