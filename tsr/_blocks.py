"""Reading and writing the tensor blocks of any generation, from :class:`TensorInfo` alone.

- RAW blocks are memory-mapped (zero-copy: the bytes on disk are the array; read-only, or
  private copy-on-write) or copied into one owned array (in parallel parts when big, as
  v1's reader does).
- ZLIB blocks are read (their ``stored_size`` is checked against the file before) and
  inflated with :mod:`tsr._zlib` into the array's own memory, never past ``nbytes``.
- The stored CRC-32 is verified on every load, as the framework does; ``verify=False``
  skips it for RAW maps only (a map is then not read at all until used; ZLIB blocks are
  always checked, their CRC costs little next to inflating).

The parse step of each generation has already checked that every block lies inside the
file, so nothing here allocates more than the file can back.
"""

from __future__ import annotations

import mmap as _mmap
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

import tsr_platform

from . import _io, _zlib
from ._model import Encoded, Problem, ReadAt, TensorInfo
from .errors import ChecksumError, CompressionError, SizeMismatchError, TruncatedError, TSRError

ReadMode = Literal["r", "c", "copy"]
_CRC_STEP = 16 << 20


def le_bytes(array: npt.NDArray[Any]) -> memoryview:
    """The array's elements in C order, little-endian, as flat bytes (a view if they
    already are that in memory, else one converted copy)."""
    arr = np.asarray(array)
    le = arr.dtype.newbyteorder("<") if arr.dtype.byteorder in "<>=" else arr.dtype
    if not (arr.flags.c_contiguous and arr.dtype == le):
        arr = np.ascontiguousarray(arr, dtype=le)
    return arr.reshape(-1).view(np.uint8).data


def crc_error(info: TensorInfo, got: int) -> ChecksumError:
    """The error for a CRC mismatch of tensor ``info``."""
    note = "" if info.crc32 else " (the stored CRC is 0: the C++ RAW reader skips the check)"
    return ChecksumError(
        f"tensor {info.index}: CRC-32 mismatch: stored {info.crc32:#010x}, data has "
        f"{got:#010x}; the file is corrupt{note}",
        field="crc32",
        offset=info.offset,
        found=got,
        expected=info.crc32,
    )


def _trailing(info: TensorInfo, unused: int) -> Problem:
    return Problem(
        SizeMismatchError, "payload", info.offset + info.stored_size - unused, 0, unused,
        f"tensor {info.index}: {unused} byte(s) after the end of its zlib stream, inside "
        "its stored size",
        strict_only=True,
    )  # fmt: skip


def read_block(
    fd: int,
    info: TensorInfo,
    mode: ReadMode,
    *,
    verify: bool = True,
    strict: bool = True,
    dtype: np.dtype[Any] | None = None,
) -> npt.NDArray[Any]:
    """Tensor ``info`` of the open file ``fd`` as an array of its shape.

    ``mode``: ``"r"`` read-only map, ``"c"`` private copy-on-write map, ``"copy"`` an owned
    array (ZLIB blocks are always owned). ``dtype`` overrides the element type (the torch
    front end reads BF16 as int16 bits).
    """
    dt = info.numpy_dtype if dtype is None else dtype
    if info.compression == "zlib":
        return _inflated(_read_stream(lambda o, n: tsr_platform.pread(fd, n, o), info), info,
                         strict=strict, dtype=dt)  # fmt: skip
    if info.nbytes == 0:
        out = np.empty(info.shape, dt)
        out.flags.writeable = mode != "r"
        return out
    if mode == "copy":
        out = np.empty(info.shape, dt)
        view = out.reshape(-1).view(np.uint8).data
        _io._read_into(fd, view, info.offset)
        if verify and info.crc32 is not None:
            _check_crc(info, view)
        return out
    start = info.offset - info.offset % _mmap.ALLOCATIONGRANULARITY
    access = _mmap.ACCESS_READ if mode == "r" else _mmap.ACCESS_COPY
    mm = _mmap.mmap(fd, info.offset + info.nbytes - start, offset=start, access=access)
    flat = np.frombuffer(mm, np.uint8, info.nbytes, info.offset - start)
    if verify and info.crc32 is not None:
        _check_crc(info, flat.data)
    return flat.view(dt).reshape(info.shape)


def block_from_buffer(
    view: memoryview,
    info: TensorInfo,
    *,
    verify: bool = True,
    strict: bool = True,
    dtype: np.dtype[Any] | None = None,
) -> npt.NDArray[Any]:
    """Tensor ``info`` of a whole file held in ``view`` (flat bytes; parse checked that
    the block lies inside it): RAW blocks are a view of ``view`` (no copy, writable when it
    is), ZLIB blocks inflated into an owned array; the CRC-32 checked as by
    :func:`read_block`."""
    dt = info.numpy_dtype if dtype is None else dtype
    if info.compression == "zlib":
        stream = view[info.offset : info.offset + info.stored_size]
        return _inflated(stream, info, strict=strict, dtype=dt)
    if info.nbytes == 0:
        out = np.empty(info.shape, dt)
        out.flags.writeable = not view.readonly
        return out
    flat = np.frombuffer(view, np.uint8, info.nbytes, info.offset)
    if verify and info.crc32 is not None:
        _check_crc(info, flat.data)
    return flat.view(dt).reshape(info.shape)


def _inflated(stream: bytes | memoryview, info: TensorInfo, *, strict: bool,
              dtype: np.dtype[Any]) -> npt.NDArray[Any]:  # fmt: skip
    """The array a ZLIB block's ``stream`` holds, its CRC and (strict) its end checked."""
    inflated = _inflate(stream, info)
    if info.crc32 is not None and inflated.crc32 != info.crc32:
        raise crc_error(info, inflated.crc32)
    if inflated.trailing and strict:
        raise _trailing(info, inflated.trailing).exception()
    return inflated.data.view(dtype).reshape(info.shape)


def _read_stream(read_at: ReadAt, info: TensorInfo) -> bytes:
    """Tensor ``info``'s ZLIB block (its size checked against the file by parse)."""
    stream = read_at(info.offset, info.stored_size)
    if len(stream) != info.stored_size:
        raise TruncatedError(
            f"tensor {info.index}: the file ended while reading its block; was it "
            "truncated while being read?",
            field="payload", offset=info.offset, found=len(stream), expected=info.stored_size,
        )  # fmt: skip
    return stream


def _inflate(stream: bytes | memoryview, info: TensorInfo) -> _zlib.Inflated:
    """Inflate tensor ``info``'s ZLIB ``stream``, never past ``nbytes``."""
    try:
        return _zlib.inflate(stream, info.nbytes, what=f"tensor {info.index}")
    except CompressionError as exc:  # name the field and where the block is
        exc.field, exc.offset = "payload", info.offset
        raise


def _check_crc(info: TensorInfo, view: memoryview) -> None:
    crc = _zlib.crc32(view)  # a big block on every CPU
    if crc != info.crc32:
        raise crc_error(info, crc)


def check_block(read_at: ReadAt, info: TensorInfo) -> list[Problem]:
    """The problems of tensor ``info``'s data (CRC, stream, sizes), read through
    ``read_at`` (a file's or a buffer's) in bounded memory (RAW: in steps; ZLIB: inflated
    into a buffer of ``nbytes``, which parse bounded by what the stream can inflate to)."""
    try:
        if info.compression == "zlib":
            inflated = _inflate(_read_stream(read_at, info), info)
            crc = inflated.crc32
            found = [_trailing(info, inflated.trailing)] if inflated.trailing else []
        else:
            crc, found = 0, []
            for pos in range(0, info.nbytes, _CRC_STEP):
                n = min(_CRC_STEP, info.nbytes - pos)
                chunk = read_at(info.offset + pos, n)
                if len(chunk) != n:
                    raise TruncatedError(
                        "the file ended while reading it", field="payload",
                        offset=info.offset + pos, found=len(chunk), expected=n,
                    )  # fmt: skip
                crc = _zlib.crc32_step(chunk, crc)
        if info.crc32 is not None and crc != info.crc32:
            raise crc_error(info, crc)
    except TSRError as exc:
        return [Problem(type(exc), exc.field or "payload", exc.offset or info.offset,
                        exc.found, exc.expected, exc.message)]  # fmt: skip
    return found


def _parts(enc: Encoded, head: bytes) -> Iterator[bytes | memoryview]:
    yield head
    for pad, block in enc.blocks:
        if pad:
            yield bytes(pad)
        if isinstance(block, np.ndarray):
            yield from _io._payload_chunks(block)
        else:
            yield block


OVERLAP_MIN = 4 << 20
"""Blocks from this many bytes in all have their CRC-32s computed on a thread while they
are written (zlib and the write both release the GIL); smaller ones first."""


def _block_bytes(enc: Encoded) -> list[memoryview]:
    """Each block's bytes as written (C order, little-endian)."""
    return [le_bytes(b) if isinstance(b, np.ndarray) else memoryview(b) for _, b in enc.blocks]


def write_encoded(
    path: _io.PathLike | bytes, enc: Encoded, *, fsync: bool, follow_symlinks: bool = True
) -> None:
    """Write ``enc`` to ``path`` atomically (:func:`tsr._io.atomic_write`). A head that
    holds the blocks' CRC-32s (``enc.head_for``) is written last, over zeros, once the
    CRC-32s that a thread computed while the blocks were written are known."""
    head_for = enc.head_for
    views = _block_bytes(enc) if head_for is not None else []
    overlap = head_for is not None and sum(v.nbytes for v in views) >= OVERLAP_MIN

    def write(fd: int) -> None:
        if enc.size >= _io._PREALLOCATE_BYTES:
            _io._preallocate(fd, enc.size)
        if head_for is None:
            head = enc.head
        elif not overlap:
            head = head_for([_zlib.crc32(v) for v in views])
        else:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tsr-crc") as pool:
                crcs = pool.submit(lambda: [_zlib._crc32_steps(v) for v in views])
                for part in _parts(enc, enc.head):
                    _io._write_all(fd, part)
                head = head_for(crcs.result())
            os.lseek(fd, 0, os.SEEK_SET)
            _io._write_all(fd, head)
            return
        for part in _parts(enc, head):
            _io._write_all(fd, part)

    _io.atomic_write(path, write, fsync=fsync, follow_symlinks=follow_symlinks)


def to_bytes(enc: Encoded) -> bytes:
    """The whole file ``enc`` in memory."""
    head = enc.head
    if enc.head_for is not None:
        head = enc.head_for([_zlib.crc32(v) for v in _block_bytes(enc)])
    return b"".join(_parts(enc, head))
