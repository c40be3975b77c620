"""What the renaissance V3.x C++ importer does with a TSR3 file, on both of its paths.

``CpuDevice::import_tensor(file, using_mmap)`` runs the same header checks on both paths
(the brief's §5), then either maps a RAW file (``using_mmap=true``, the default: path
``mmap``) or reads it into a zeroed buffer (``using_mmap=false``, what PythonSession uses:
path ``read``); ZLIB files are inflated the same way on both. The model follows its code
step by step with its arithmetic: the dims product skips zeros and wraps in int64,
``numel * elem`` wraps in size_t, ``data_offset + payload_size`` wraps in uint64, the
CRC-32 covers ``(uInt)raw_data_size`` bytes, and the shape is rebuilt from the last
``ndim`` dims only. Allocations are modelled against ``memory_limit`` (the 1 GiB
address-space limit under which ``vectors3/malformed/index.json`` was recorded; with more
memory the zeroed buffer is allocated and the importer fails or goes on later).

Accepted files can still be unsafe; ``hazard`` says how (a heap overrun by the read or
``uncompress``, a tensor whose bytes extend past the end of the file, a shape whose
element count wrapped around). The check names are those of ``index.json``.
"""

from __future__ import annotations

import math
import mmap as _mmap
import zlib
from dataclasses import dataclass

from . import v3
from ._model import ReadAt
from .validate import CppVerdict

ALLOC_LIMIT = 1 << 30
PTRDIFF_MAX = 2**63 - 1
_U64 = 1 << 64
_U32 = 1 << 32
_STEP = 4 << 20


@dataclass(frozen=True)
class _Tensor:
    """The header and the tensor the importer builds from it (its int64/size_t sizes)."""

    h: v3.Header
    shape: tuple[int, ...]
    numel: int
    nbytes: int


def _i64(value: int) -> int:
    value %= _U64
    return value - _U64 if value >= 1 << 63 else value


def _reject(path: str, check: str, message: str, error_type: str = "ValueError",
            allocates: int = 0) -> CppVerdict:  # fmt: skip
    return CppVerdict(False, check, message, path=path, error_type=error_type,
                      allocates=allocates)  # fmt: skip


def verdicts(
    head: bytes, file_size: int, read_at: ReadAt, *, name: str = "<file>",
    memory_limit: int = ALLOC_LIMIT,
) -> tuple[CppVerdict, CppVerdict]:  # fmt: skip
    """(the ``mmap`` path's verdict, the ``read`` path's) for a file whose first bytes are
    ``head`` (at least 128 of them unless the file is shorter)."""
    if file_size < v3.HEADER_SIZE or len(head) < v3.HEADER_SIZE:
        msg = f"File too small to be a valid TSR file: {name} (size={file_size}, need at least 128)"
        return _reject("mmap", "file_too_small", msg), _reject("read", "file_too_small", msg)
    h = v3.decode(head)
    common = _header_checks(h, file_size, name)
    if common is not None:
        check, msg = common
        return _reject("mmap", check, msg), _reject("read", check, msg)
    dt = v3.DTYPES[h.dtype_code]
    shape = h.shape
    numel = 1
    for d in shape:
        numel = _i64(numel * d)
    t = _Tensor(h, shape, numel, (numel * dt.itemsize) % _U64)
    if h.file_mode == v3.ZLIB:
        z = _zlib_path(t, read_at, memory_limit)
        return _rename(z, "mmap"), _rename(z, "read")
    return _raw_mmap(t, file_size, read_at), _raw_read(t, file_size, read_at, memory_limit)


def _rename(v: CppVerdict, path: str) -> CppVerdict:
    return CppVerdict(v.accepts, v.check, v.message, v.shape, v.different_tensor, path,
                      v.error_type, v.allocates, v.hazard)  # fmt: skip


def _header_checks(h: v3.Header, file_size: int, name: str) -> tuple[str, str] | None:
    """``validate_tsr_header`` and the truncation check: (check, message) or None."""
    if h.magic != v3.MAGIC:
        return "magic", "Invalid TSR magic number (expected 'TSR3')"
    if h.version != v3.VERSION:
        return "version", (
            f"Unsupported TSR version: {h.version} (this implementation supports version 3)"
        )
    if h.header_size != v3.HEADER_SIZE:
        return "header_size", f"Invalid TSR header size: {h.header_size} (expected 128)"
    if h.file_mode not in (v3.RAW, v3.ZLIB):
        return "file_mode", f"Invalid TSR file mode: {h.file_mode} (expected 0=RAW or 1=ZLIB)"
    if h.dtype_code not in v3.DTYPES:
        return "dtype", (
            f"Invalid TSR dtype: {h.dtype_code} (expected 1=FP32, 2=BF16, 3=INT32, 4=INT8)"
        )
    if h.ndim > v3.MAX_NDIM:
        return "ndim", f"Invalid TSR ndim: {h.ndim} (expected 0-4)"
    if h.file_mode == v3.RAW and h.data_offset != v3.RAW_DATA_OFFSET:
        return "raw_data_offset", (
            f"Invalid data_offset for RAW mode: {h.data_offset} (expected 256)"
        )
    if h.file_mode == v3.ZLIB and h.data_offset != v3.HEADER_SIZE:
        return "zlib_data_offset", (
            f"Invalid data_offset for ZLIB mode: {h.data_offset} (expected 128)"
        )
    product = 1
    for i, d in enumerate(h.dims):
        if d > 0:
            product = _i64(product * d)
        elif d < 0:
            return "negative_dim", f"Negative dimension in TSR file: dims[{i}]={d}"
    if product != _i64(h.numel):
        return "numel", (
            f"TSR numel mismatch: dims product={product}, header.numel={_i64(h.numel)}"
        )
    itemsize = v3.DTYPES[h.dtype_code].itemsize
    expected = (h.numel * itemsize) % _U64
    if expected != h.raw_data_size:
        return "raw_data_size", (
            f"TSR raw_data_size mismatch: expected={expected} ({h.numel} * {itemsize}), "
            f"got={h.raw_data_size}"
        )
    required = (h.data_offset + h.payload_size) % _U64
    if file_size < required:
        return "truncated", (
            f"TSR file truncated: {name} (file_size={file_size}, required={required})"
        )
    return None


def _crc_of_file(read_at: ReadAt, start: int, n: int) -> int:
    crc = 0
    pos = 0
    while pos < n:
        chunk = read_at(start + pos, min(_STEP, n - pos))
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        pos += len(chunk)
    if pos < n:  # past the end of the file: the rest of the mapped page reads as zeros
        crc = zlib.crc32(bytes(n - pos), crc)
    return crc


def _accept(path: str, t: _Tensor, hazards: list[str], allocates: int) -> CppVerdict:
    h, shape, numel, nbytes = t.h, t.shape, t.numel, t.nbytes
    exact = math.prod(shape)
    itemsize = v3.DTYPES[h.dtype_code].itemsize
    if exact != numel:
        hazards.append(
            f"the shape {list(shape)} has {exact} elements but its element count wraps "
            f"to {numel} in int64: a shape larger than its buffer"
        )
    elif exact * itemsize != nbytes:
        hazards.append(
            f"{exact} elements of {itemsize} bytes wrap to {nbytes} bytes in size_t: a "
            "shape larger than its buffer"
        )
    different = exact != h.numel or nbytes != h.raw_data_size
    label = "[" + ",".join(map(str, shape)) + "]"
    message = f"accepted: {v3.DTYPES[h.dtype_code].name} {label} numel={numel} ({nbytes} bytes)"
    if different and not hazards:
        message += f"; the header declares {h.numel} elements in {h.raw_data_size} bytes"
    return CppVerdict(True, None, message, shape, different, path, None, allocates,
                      "; ".join(hazards) or None)  # fmt: skip


def _raw_mmap(t: _Tensor, file_size: int, read_at: ReadAt) -> CppVerdict:
    h, nbytes = t.h, t.nbytes
    available = max(0, file_size - v3.RAW_DATA_OFFSET)
    if h.crc32 != 0:
        n = h.raw_data_size % _U32
        mapped = -(-file_size // _mmap.PAGESIZE) * _mmap.PAGESIZE
        if v3.RAW_DATA_OFFSET + n > mapped:
            return _reject(
                "mmap", "crash",
                f"the CRC check reads {n} bytes from offset 256 of a {file_size}-byte "
                "mapping: SIGBUS past the mapped pages",
                "SIGBUS",
            )  # fmt: skip
        got = _crc_of_file(read_at, v3.RAW_DATA_OFFSET, n)
        if got != h.crc32:
            return _reject(
                "mmap", "raw_crc_mmap",
                f"CRC32 mismatch in RAW mode: file may be corrupted (expected={h.crc32}, "
                f"got={got})",
            )  # fmt: skip
    hazards = []
    if nbytes > available:
        hazards.append(
            f"the tensor's {nbytes} bytes extend {nbytes - available} bytes past the end "
            "of the file (reading them faults or returns the page's zero tail)"
        )
    return _accept("mmap", t, hazards, 0)


def _allocate(path: str, nbytes: int, limit: int, before: int = 0) -> CppVerdict | None:
    if nbytes == 0:
        return _reject(path, "alloc_zero", "Cannot allocate 0 bytes", allocates=before)
    if nbytes > limit:
        return _reject(path, "alloc_failed", f"CPU allocation failed: {nbytes} bytes",
                       "MemoryError", before)  # fmt: skip
    return None


def _overrun(written: int, nbytes: int, what: str) -> list[str]:
    if written <= nbytes:
        return []
    return [f"{what} writes {written} bytes into a {nbytes}-byte buffer: a heap overrun of "
            f"{written - nbytes} bytes"]  # fmt: skip


def _raw_read(t: _Tensor, file_size: int, read_at: ReadAt, limit: int) -> CppVerdict:
    h, nbytes = t.h, t.nbytes
    failed = _allocate("read", nbytes, limit)
    if failed is not None:
        return failed
    if file_size - v3.RAW_DATA_OFFSET < h.raw_data_size:
        return _reject("read", "raw_short_read", "Failed to read complete data from TSR file",
                       allocates=nbytes)  # fmt: skip
    if h.crc32 != 0:
        got = _crc_of_file(read_at, v3.RAW_DATA_OFFSET, h.raw_data_size % _U32)
        if got != h.crc32:
            return _reject("read", "raw_crc_read", "CRC32 mismatch: file may be corrupted",
                           allocates=nbytes)  # fmt: skip
    hazards = _overrun(h.raw_data_size, nbytes, "the read")
    return _accept("read", t, hazards, nbytes)


def _uncompress(read_at: ReadAt, offset: int, size: int, dest: int) -> tuple[int, int, int]:
    """zlib's ``uncompress(dest_len=dest)`` on the stream: (return code, bytes out, CRC of
    the first ``dest mod 2**32`` of them), inflating in bounded steps and keeping nothing.

    As ``uncompress2``: 0 at the stream's end (trailing input ignored); -5 when the buffer
    is full and the stream goes on; -3 for a corrupt stream or one that ends early."""
    d = zlib.decompressobj()
    total = crc = pos = 0
    crc_len = dest % _U32
    try:
        while pos < size:
            data: bytes = read_at(offset + pos, min(_STEP, size - pos))
            if not data:
                break
            pos += len(data)
            while True:
                room = dest - total
                cap = min(room, _STEP) if room else 1  # max_length 0 would mean unbounded
                got = d.decompress(data, cap)
                if len(got) > room:
                    return -5, total, crc
                if total < crc_len:
                    crc = zlib.crc32(got[: crc_len - total], crc)
                total += len(got)
                if d.eof:
                    return 0, total, crc
                data = d.unconsumed_tail
                if not data and len(got) < cap:
                    break  # this input is used up
    except zlib.error:
        return -3, total, crc
    return (-5 if total == dest else -3), total, crc


_ZLIB_TEXT = {-3: "compressed data corrupted", -5: "output buffer too small", -4: "out of memory"}


def _zlib_path(t: _Tensor, read_at: ReadAt, limit: int) -> CppVerdict:
    h, nbytes = t.h, t.nbytes
    if h.payload_size > PTRDIFF_MAX:
        return _reject("zlib", "other", "cannot create std::vector larger than max_size()",
                       "std::length_error")  # fmt: skip
    if h.payload_size > limit:
        return _reject("zlib", "other", "std::bad_alloc", "std::bad_alloc")
    failed = _allocate("zlib", nbytes, limit, h.payload_size)
    if failed is not None:
        return failed
    allocated = h.payload_size + nbytes
    if h.payload_size == 0 or h.raw_data_size == 0:
        return _reject(
            "zlib", "zlib_params",
            f"Invalid decompression parameters: src_size={h.payload_size}, "
            f"dst_size={h.raw_data_size}",
            allocates=allocated,
        )  # fmt: skip
    code, out, crc = _uncompress(read_at, v3.HEADER_SIZE, h.payload_size, h.raw_data_size)
    if code:
        return _reject("zlib", "zlib_inflate",
                       f"zlib decompression failed: {_ZLIB_TEXT[code]} (code={code})",
                       allocates=allocated)  # fmt: skip
    if out != h.raw_data_size:
        return _reject("zlib", "zlib_size",
                       f"Decompressed size mismatch: expected={h.raw_data_size}, actual={out}",
                       allocates=allocated)  # fmt: skip
    if crc != h.crc32:
        return _reject(
            "zlib", "zlib_crc",
            f"CRC32 mismatch: file corrupted or decompression error (expected={h.crc32}, "
            f"got={crc})",
            allocates=allocated,
        )  # fmt: skip
    hazards = _overrun(h.raw_data_size, nbytes, "uncompress")
    return _accept("zlib", t, hazards, allocated)
