"""Reading, validating and writing TSR4 files (the layout and rules are in :mod:`tsr.v4`).

Reading never allocates more than the file can back: the directory's size is checked
against the file before it is read; every block is checked against the file before it is
touched; RAW tensors are zero-copy views of one read-only memory map, their CRC-32 checked
on load unless ``verify=False``; ZLIB tensors are inflated in bounded steps, never past
their declared ``nbytes``, which is itself bounded by what their ``payload_size`` bytes can
inflate to. Many ZLIB tensors are read and inflated in parallel (zlib releases the GIL).
"""

from __future__ import annotations

import mmap as _mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _v4cpp, _zlib, v4
from ._io import PathLike, Source, _open_fd, _read_into, _write_all, atomic_write
from .errors import (
    BadMagicError,
    ChecksumError,
    CompressionError,
    LayoutError,
    TruncatedError,
    UnsupportedVersionError,
)
from .v4 import Entry, FileHeader, Problem

_ITEMSIZE = {code: dt.itemsize for code, dt in v4.DTYPES.items()}
_NUMPY = {code: dt.numpy for code, dt in v4.DTYPES.items()}


def _entries_ok(h: FileHeader, entries: Sequence[Entry], size: int) -> bool:
    """True when every entry is exactly what the C++ writer writes (the common case,
    checked without building :class:`Problem` objects)."""
    raw = h.file_mode == v4.RAW
    pos = v4.data_start(len(entries), h.file_mode)
    for e in entries:
        item = _ITEMSIZE.get(e.dtype_code)
        s0, s1, s2, s3 = e.shape
        n = e.nbytes
        if not (
            item
            and e.reserved_0 == b"\0\0\0"
            and s0 > 0 and s1 > 0 and s2 > 0 and s3 > 0
            and e.numel == s0 * s1 * s2 * s3
            and n == e.numel * item
            and e.row_stride == s2 * s3 * item
            and e.data_offset == pos
            and n <= v4.INDEX_MAX
            and (n == e.payload_size if raw else n <= 1032 * e.payload_size and n < 1 << 32)
        ):  # fmt: skip
            return False
        pos = e.data_offset + e.payload_size
        if raw:
            pos = -(-pos // v4.RAW_ALIGN) * v4.RAW_ALIGN
    return entries[-1].end == size


def _raise_first(problems: Sequence[Problem], strict: bool) -> None:
    for p in problems:
        if p.fatal(strict):
            raise p.exception()


def read_directory(
    fd: int, size: int, *, strict: bool
) -> tuple[FileHeader, list[Entry], list[Problem]]:
    """Header, entries and the non-fatal problems of an open file; raises the first fatal
    problem. Reads 128 bytes, then the directory once its size is known to fit the file."""
    if size < v4.HEADER_SIZE:
        raise TruncatedError(
            f"truncated: a TSR4 file has at least {v4.HEADER_SIZE} bytes, this one {size}",
            field="header", offset=0, found=size, expected=v4.HEADER_SIZE,
        )  # fmt: skip
    head = os.pread(fd, v4.HEADER_SIZE, 0)
    h = v4.decode_header(head)
    problems = v4.header_problems(h, head, size)
    _raise_first(problems, strict)
    count = h.tensor_count
    buf = os.pread(fd, v4.ENTRY_SIZE * count, v4.HEADER_SIZE)
    if len(buf) < v4.ENTRY_SIZE * count:
        raise TruncatedError(
            "the file shrank while its directory was read", field="directory",
            offset=v4.HEADER_SIZE, found=len(buf), expected=v4.ENTRY_SIZE * count,
        )  # fmt: skip
    entries = v4.decode_directory(buf, count)
    if not _entries_ok(h, entries, size):
        more = v4.directory_problems(h, entries, size)
        _raise_first(more, strict)
        problems += more
    return h, entries, problems


class File:
    """An open TSR4 file: its header and directory, and each tensor on demand.

    Use as a context manager (``with tsr.v4.File(path) as f: f[3]``); ``len(f)`` tensors,
    ``f.entries[i]`` describes tensor ``i`` without reading it. RAW tensors are read-only
    views of one memory map of the file (kept alive by the arrays); ZLIB tensors are
    inflated into owned arrays.
    """

    def __init__(self, source: Source, *, strict: bool = True, verify: bool = True) -> None:
        self._opened = _open_fd(source)
        self.fd, self.size = self._opened.__enter__()
        try:
            self.header, self.entries, self.problems = read_directory(
                self.fd, self.size, strict=strict
            )
        except BaseException:
            self._opened.__exit__(None, None, None)
            raise
        self.strict = strict
        self.verify = verify
        self._map: _mmap.mmap | None = None

    def __enter__(self) -> File:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (arrays already returned stay valid)."""
        if self.fd >= 0:
            self._opened.__exit__(None, None, None)
            self.fd = -1
            self._map = None

    def __len__(self) -> int:
        return len(self.entries)

    def _mapped(self) -> _mmap.mmap:
        if self._map is None:
            self._map = _mmap.mmap(self.fd, self.size, access=_mmap.ACCESS_READ)
        return self._map

    def __getitem__(self, index: int) -> npt.NDArray[Any]:
        """Tensor ``index`` (negative counts from the end), with its 4-D NHWC shape."""
        if self.fd < 0:
            raise ValueError("the file is closed")
        e = self.entries[index]
        if self.header.file_mode == v4.RAW:
            return self.read_raw(e, mmap=True)
        return self.read_zlib(e)

    def read_raw(self, e: Entry, *, mmap: bool) -> npt.NDArray[Any]:
        dt = _NUMPY[e.dtype_code]
        if mmap:
            arr = np.frombuffer(self._mapped(), dt, e.numel, e.data_offset)
        else:
            arr = np.empty(e.numel, dt)
            _read_into(self.fd, arr.view(np.uint8).data, e.data_offset)
        if self.verify:
            _check_crc(e, _zlib.crc32(arr))
        return arr.reshape(e.shape)

    def read_zlib(self, e: Entry) -> npt.NDArray[Any]:
        payload = os.pread(self.fd, e.payload_size, e.data_offset)
        if len(payload) != e.payload_size:
            raise TruncatedError(
                f"tensor {e.index}: the file shrank while its block was read",
                field=f"tensor[{e.index}].block", offset=e.data_offset,
                found=len(payload), expected=e.payload_size,
            )  # fmt: skip
        got = _zlib.inflate(
            payload, e.nbytes, what=f"tensor {e.index}", field=f"tensor[{e.index}].block",
            offset=e.data_offset,
        )  # fmt: skip
        _check_crc(e, got.crc32)
        if got.trailing and self.strict:
            raise CompressionError(
                f"tensor {e.index}: {got.trailing} byte(s) after the end of its zlib stream, "
                "inside its payload_size (C++ ignores them; strict=False reads the tensor)",
                field=f"tensor[{e.index}].payload_size", offset=e.data_offset,
                found=got.trailing, expected=0,
            )  # fmt: skip
        return got.data.view(_NUMPY[e.dtype_code]).reshape(e.shape)

    def read_all(self, *, mmap: bool = True, workers: int | None = None) -> list[npt.NDArray[Any]]:
        """Every tensor, in directory order (ZLIB tensors and CRCs in parallel)."""
        if self.header.file_mode == v4.RAW:
            total = sum(e.nbytes for e in self.entries) if self.verify else 0
            return _zlib.map_blocks(
                lambda e: self.read_raw(e, mmap=mmap), self.entries, total, workers
            )
        total = sum(e.nbytes for e in self.entries)
        return _zlib.map_blocks(self.read_zlib, self.entries, total, workers)


def _check_crc(e: Entry, crc: int) -> None:
    if crc != e.data_crc32:
        raise ChecksumError(
            f"tensor {e.index}: data CRC-32 mismatch: the entry stores {e.data_crc32:#010x}, "
            f"the data gives {crc:#010x}; the data (or the entry) is damaged",
            field=f"tensor[{e.index}].data_crc32",
            offset=e.offset + v4.ENTRY_LAYOUT.offset_of("data_crc32"),
            found=crc,
            expected=e.data_crc32,
        )


def load_all(
    source: Source,
    *,
    mmap: bool = True,
    strict: bool = True,
    verify: bool = True,
    workers: int | None = None,
) -> list[npt.NDArray[Any]]:
    """Every tensor of a TSR4 file, in directory order, each with its 4-D NHWC shape.

    RAW tensors are read-only views of a memory map (``mmap=False``: owned copies); ZLIB
    tensors owned arrays. CRC-32s are verified as C++ does; ``verify=False`` skips them for
    RAW tensors only (a ZLIB tensor's CRC costs nothing extra and is always checked).
    ``strict=False`` accepts what C++ accepts that a strict reader refuses (overlapping
    blocks, blocks in the header, junk after a zlib stream). Raises a :class:`TSRError`
    subclass for any bad file.
    """
    with File(source, strict=strict, verify=verify) as f:
        return f.read_all(mmap=mmap, workers=workers)


# ----------------------------------------------------------------------------- validate


@dataclass(frozen=True)
class Report:
    """What :func:`validate` found in a TSR4 file."""

    path: str | None
    file_size: int
    problems: tuple[Problem, ...]
    cpp: _v4cpp.CppVerdict
    header: FileHeader | None = None
    entries: tuple[Entry, ...] = field(default=())

    def ok(self, strict: bool = True) -> bool:
        """True when a reader with this ``strict`` reads every tensor."""
        return not any(p.fatal(strict) for p in self.problems)


def validate_fd(
    fd: int, size: int, *, path: str | None = None, memory_limit: int | None = None
) -> Report:
    """Every problem of an open file (data included: CRCs, streams, gap bytes), and the
    C++ importer's verdict. Reads the file once in bounded pieces; never raises for a bad
    file."""

    def pread(offset: int, n: int) -> bytes:
        return os.pread(fd, n, offset)

    limit = _v4cpp.DEFAULT_MEMORY_LIMIT if memory_limit is None else memory_limit
    name = os.path.basename(path) if path else "F"
    cpp = _v4cpp.cpp_verdict(size, pread, name=name, memory_limit=limit)
    if size < v4.HEADER_SIZE:
        p = Problem(
            TruncatedError, "header", 0, size, v4.HEADER_SIZE,
            f"truncated: a TSR4 file has at least {v4.HEADER_SIZE} bytes, this one {size}",
        )  # fmt: skip
        return Report(path, size, (p,), cpp)
    head = pread(0, v4.HEADER_SIZE)
    h = v4.decode_header(head)
    problems = v4.header_problems(h, head, size)
    stops = (TruncatedError, BadMagicError, UnsupportedVersionError)
    if any(p.error in stops or p.field in ("entry_size", "dir_offset") for p in problems):
        return Report(path, size, tuple(problems), cpp, h)
    entries = v4.decode_directory(pread(v4.HEADER_SIZE, v4.ENTRY_SIZE * h.tensor_count),
                                  h.tensor_count)  # fmt: skip
    structural = v4.directory_problems(h, entries, size)
    problems += structural
    broken = {p.field.split(".")[0] for p in structural if p.level == "error"}
    if h.file_mode in v4.MODES:
        for e in entries:
            if f"tensor[{e.index}]" not in broken:
                problems += _data_problems(h, e, pread)
        if entries:
            problems += _gap_problems(h, entries, size, pread)
    return Report(path, size, tuple(problems), cpp, h, tuple(entries))


def _data_problems(h: FileHeader, e: Entry, pread: Any) -> list[Problem]:
    label = f"tensor[{e.index}]"
    crc_at = e.offset + v4.ENTRY_LAYOUT.offset_of("data_crc32")
    if h.file_mode == v4.RAW:
        crc = _v4cpp._crc_at(pread, e.data_offset, e.payload_size)
        trailing = 0
    else:
        got = _zlib.scan(pread(e.data_offset, e.payload_size), e.nbytes)
        if got.outcome != "end" or got.produced != e.nbytes:
            problem = {
                "corrupt": f"not a valid zlib stream ({got.detail})",
                "truncated": "the zlib stream ends early",
                "too_long": f"the zlib stream holds more than the declared {e.nbytes} bytes",
                "end": f"the zlib stream holds {got.produced} bytes, the entry declares {e.nbytes}",
            }[got.outcome]
            return [Problem(
                CompressionError, f"{label}.block", e.data_offset, got.outcome, e.nbytes,
                f"tensor {e.index}: {problem}",
            )]  # fmt: skip
        crc, trailing = got.crc32, got.trailing
    out = []
    if crc != e.data_crc32:
        out.append(Problem(
            ChecksumError, f"{label}.data_crc32", crc_at, crc, e.data_crc32,
            f"tensor {e.index}: data CRC-32 mismatch: the entry stores {e.data_crc32:#010x}, "
            f"the data gives {crc:#010x}",
        ))  # fmt: skip
    if trailing:
        out.append(Problem(
            CompressionError, f"{label}.payload_size", e.data_offset, trailing, 0,
            f"tensor {e.index}: {trailing} byte(s) after the end of its zlib stream, inside "
            "its payload_size (C++ ignores them)",
            "strict",
        ))  # fmt: skip
    return out


def _gap_problems(h: FileHeader, entries: Sequence[Entry], size: int, pread: Any) -> list[Problem]:
    """Non-zero bytes outside every block (RAW alignment padding must be zero)."""
    spans = sorted((e.data_offset, min(e.end, size)) for e in entries if e.data_offset < size)
    pos = v4.directory_end(len(entries))
    nonzero = 0
    first = -1
    for start, end in [*spans, (size, size)]:
        for at in range(pos, start, 1 << 20):
            chunk = pread(at, min(1 << 20, start - at))
            if chunk.count(0) != len(chunk):
                nonzero += len(chunk) - chunk.count(0)
                first = at if first < 0 else first
        pos = max(pos, end)
    if not nonzero:
        return []
    return [Problem(
        LayoutError, "padding", first, nonzero, 0,
        f"{nonzero} non-zero byte(s) outside every block (from byte {first}); the C++ writer "
        "zero-fills its padding and C++ ignores it",
        "warning",
    )]  # fmt: skip


# ----------------------------------------------------------------------------- write


def save_all(
    path: PathLike,
    arrays: Sequence[npt.ArrayLike],
    *,
    compression: str | None = None,
    fsync: bool = False,
    workers: int | None = None,
) -> None:
    """Write ``arrays`` to ``path`` as one TSR4 file, byte for byte as the C++ writer
    would, atomically (see :func:`tsr._io.atomic_write`)."""
    layout = v4.plan([v4.prepare(a) for a in arrays], compression, workers=workers)

    def write(fd: int) -> None:
        _writev_all(fd, layout.parts())

    atomic_write(path, write, fsync=fsync)


def to_bytes(arrays: Sequence[npt.ArrayLike], *, compression: str | None = None) -> bytes:
    """The bytes of the TSR4 file :func:`save_all` writes."""
    return v4.encode(v4.plan([v4.prepare(a) for a in arrays], compression))


_IOV_MAX = 1024


def _writev_all(fd: int, parts: list[bytes | memoryview]) -> None:
    """Write ``parts`` in order with as few calls as possible."""
    i = 0
    while i < len(parts):
        batch = parts[i : i + _IOV_MAX]
        total = sum(len(p) for p in batch)
        if total > 1 << 30:
            _write_all(fd, parts[i])
            i += 1
            continue
        done = os.writev(fd, batch)
        if done == total:
            i += len(batch)
            continue
        for p in batch:  # a short write: finish part by part
            if done >= len(p):
                done -= len(p)
                i += 1
                continue
            _write_all(fd, memoryview(p)[done:])
            i += 1
            break
