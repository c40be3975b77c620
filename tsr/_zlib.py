"""zlib for the compressed generations (TSR3 and TSR4 ZLIB payloads), shared and bounded.

- :func:`compress` is byte-exact with the C++ writers: ``compress2(..., 6)`` of zlib 1.2.13
  equals :func:`zlib.compress` at level 6 (verified on every ZLIB vector of the framework).
- :func:`inflate` never produces more than the declared size: it inflates in steps of at
  most :data:`OUT_STEP` bytes into a buffer of exactly ``nbytes`` and stops at the bound, so
  a zlib bomb costs at most ``nbytes`` of memory. Before anything is allocated, ``nbytes``
  is checked against what ``len(payload)`` bytes can inflate to at all
  (:func:`max_inflated_size`). Bytes after the end of the zlib stream inside the payload are
  not an error (the C++ importers accept them) but are counted in :attr:`Inflated.trailing`,
  for the validators to report.
- :func:`crc32` is CRC-32 over any contiguous buffer, in chunks, without copies; the inflate
  and compress paths compute it on the uncompressed bytes as they go (cache-hot). It is
  ISA-L's ``crc32`` (python-isal, the extra ``tsr-tensor[fast]``) where that is installed:
  the same function as :func:`zlib.crc32` (the CRC-32 of zlib and gzip; a test checks
  values and continuations against zlib), about 4x faster (SIMD carry-less multiply).
  Without it, :func:`zlib.crc32`. Compression always uses zlib (byte-exact with C++).
  ``bench/bench_zlib_libs.py`` measures the alternatives: zlib-ng's CRC-32 is as fast as
  ISA-L's; libdeflate's is faster on one thread, but its binding (``deflate``) holds the
  GIL, so it cannot run beside a write or on two threads, where ISA-L's is faster. Their
  inflaters are 1.4-1.9x zlib's but not used: on a damaged stream they need not fail
  where, and as, zlib (C++'s) does.
- :func:`compress_many` / :func:`inflate_many` do many independent blocks on a thread pool
  (zlib releases the GIL); their output is the sequential output, byte for byte, and the
  error raised is the first one in block order.

Why 1032: a deflate stream spends at least one bit per literal byte, and at least two bits
(a length code and a distance code, each at least one bit long) per match, which copies at
most 258 bytes. So no bit can yield more than 129 bytes and a payload of ``c`` bytes (zlib
header and trailer included) never inflates past ``1032 * c`` bytes (:data:`MAX_RATIO`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

import tsr_platform

from .errors import CompressionError

LEVEL = 6
"""The compression level every C++ writer uses."""

MAX_RATIO = 1032
"""Deflate's maximum expansion: bytes of output per byte of compressed input."""

CRC_CHUNK = 64 << 20
"""Bytes per CRC call (each call releases the GIL)."""


def _fast_crc32() -> tuple[Callable[[Buffer, int], int], str]:
    """ISA-L's CRC-32 where python-isal is installed, else zlib's (the same values)."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib.crc32, "zlib"
    return isal_zlib.crc32, "isal"


crc32_step, CRC_IMPLEMENTATION = _fast_crc32()
"""``crc32_step(buffer, value)``: one CRC-32 call (as :func:`zlib.crc32`), and which
library gives it (``"isal"`` or ``"zlib"``)."""

IN_STEP = 256 << 10
"""Compressed bytes fed to the inflater per step."""

OUT_STEP = 4 << 20
"""The most uncompressed bytes one inflate step produces."""

PARALLEL_MIN_BYTES = 256 << 10
"""Below this many bytes in all, blocks are done one after another (threads cost more)."""

Buffer = bytes | bytearray | memoryview
Problem = Literal["ratio", "corrupt", "truncated", "too_long", "too_short"]
"""Why a payload does not inflate to its declared size (:attr:`CompressionError.found`)."""


def _bytes_view(data: Buffer | npt.NDArray[Any]) -> memoryview:
    view = data.data if isinstance(data, np.ndarray) else memoryview(data)
    if not view.c_contiguous:
        raise ValueError("zlib helpers need a contiguous buffer")
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


PARALLEL_CRC_MIN = 32 << 20
"""From this many bytes, :func:`crc32` splits the buffer over the CPUs and combines."""


def crc32(data: Buffer | npt.NDArray[Any], value: int = 0) -> int:
    """CRC-32 (as :func:`zlib.crc32`) of a contiguous buffer, continuing from ``value``.

    A big buffer is split into one part per CPU, the parts' CRCs computed on a thread pool
    (zlib releases the GIL) and combined (:func:`crc32_combine`): the same value.
    """
    view = _bytes_view(data)
    n = len(view)
    workers = min(threads(), n // (PARALLEL_CRC_MIN // 2)) if n >= PARALLEL_CRC_MIN else 1
    if workers <= 1:
        return _crc32_steps(view, value)
    step = -(-n // workers)
    parts = [view[i : i + step] for i in range(0, n, step)]
    crcs = map_blocks(_crc32_steps, parts, n, workers)
    for part, crc in zip(parts, crcs, strict=True):
        value = crc32_combine(value, crc, len(part))
    return value


def _crc32_steps(view: memoryview, value: int = 0) -> int:
    for start in range(0, len(view), CRC_CHUNK):
        value = crc32_step(view[start : start + CRC_CHUNK], value)
    return value


def _gf2_times(matrix: list[int], vector: int) -> int:
    out = 0
    i = 0
    while vector:
        if vector & 1:
            out ^= matrix[i]
        vector >>= 1
        i += 1
    return out


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, row) for row in matrix]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of ``A + B`` from ``crc1`` (of A), ``crc2`` (of B) and ``len(B)``: zlib's
    ``crc32_combine``, appending ``len2`` zero bytes to A's CRC by GF(2) matrix powers."""
    if len2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # the operator of one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    while True:
        even = _gf2_square(odd)  # the first square gives one zero byte
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def max_inflated_size(payload_size: int) -> int:
    """The most bytes a zlib payload of ``payload_size`` bytes can inflate to."""
    return MAX_RATIO * payload_size


@dataclass(frozen=True)
class Compressed:
    """One compressed block."""

    data: bytes
    """``zlib.compress(block, 6)``: the payload as the C++ writer stores it."""
    crc32: int
    """CRC-32 of the uncompressed block."""


def compress(data: Buffer | npt.NDArray[Any]) -> Compressed:
    """Compress one block exactly as the C++ writers do (zlib, level 6), with its CRC-32."""
    view = _bytes_view(data)
    return Compressed(zlib.compress(view, LEVEL), crc32(view))


@dataclass(frozen=True)
class Inflated:
    """One inflated block."""

    data: npt.NDArray[Any]
    """The ``nbytes`` uncompressed bytes, as a writable 1-D ``uint8`` array."""
    crc32: int
    """CRC-32 of :attr:`data`."""
    trailing: int
    """Bytes of the payload after the end of its zlib stream (accepted by C++)."""


def _fail(
    problem: Problem,
    message: str,
    nbytes: int,
    what: str,
    *,
    field: str | None = None,
    offset: int | None = None,
) -> CompressionError:
    return CompressionError(
        f"{what}: {message}", field=field or what, offset=offset, found=problem, expected=nbytes
    )


Outcome = Literal["end", "too_long", "corrupt", "truncated"]


@dataclass(frozen=True)
class Scan:
    """How a zlib payload inflates into a buffer of ``limit`` bytes (:func:`scan`)."""

    outcome: Outcome
    """``end``: the stream ended within the limit; ``too_long``: it holds more (inflation
    stopped at the limit); ``corrupt``: not valid zlib; ``truncated``: the payload ends
    before the stream does."""
    produced: int
    """Bytes inflated (at most the limit)."""
    crc32: int
    """CRC-32 of those bytes."""
    trailing: int
    """Payload bytes after the end of the stream (``end`` only)."""
    detail: str = ""


def _inflate_into(view: memoryview, limit: int, target: memoryview | None) -> Scan:
    """Inflate ``view`` in steps, never past ``limit`` bytes, into ``target`` if given."""
    size = len(view)
    inflater = zlib.decompressobj()
    produced = consumed = crc = 0
    pending: Buffer = b""
    try:
        while not inflater.eof:
            if not pending and consumed < size:
                pending = view[consumed : consumed + IN_STEP]
                consumed += len(pending)
            room = limit - produced
            piece = inflater.decompress(pending, min(room + 1, OUT_STEP))
            pending = inflater.unconsumed_tail
            if len(piece) > room:
                piece = piece[:room]
                if target is not None:
                    target[produced:limit] = piece
                return Scan("too_long", limit, crc32_step(piece, crc), 0)
            if target is not None:
                target[produced : produced + len(piece)] = piece
            crc = crc32_step(piece, crc)
            produced += len(piece)
            if not piece and not pending and consumed >= size and not inflater.eof:
                return Scan("truncated", produced, crc, 0)
    except zlib.error as exc:
        return Scan("corrupt", produced, crc, 0, str(exc))
    return Scan("end", produced, crc, len(inflater.unused_data) + (size - consumed))


def scan(payload: Buffer, limit: int) -> Scan:
    """Inflate ``payload`` into nothing, in bounded steps, stopping after ``limit`` bytes:
    what the stream holds, for validators and the model of the C++ importer (whose
    ``uncompress`` has a buffer of ``limit`` bytes). Never raises for a bad stream."""
    return _inflate_into(_bytes_view(payload), limit, None)


def inflate(
    payload: Buffer,
    nbytes: int,
    *,
    what: str = "payload",
    field: str | None = None,
    offset: int | None = None,
) -> Inflated:
    """Inflate one zlib stream that must hold exactly ``nbytes`` bytes.

    Raises :class:`CompressionError` (``found`` says which problem) when ``nbytes`` exceeds
    what the payload can inflate to (``"ratio"``, checked before allocating), the stream is
    not valid zlib (``"corrupt"``), ends before its end (``"truncated"``), holds more than
    ``nbytes`` (``"too_long"``: inflation stops at the bound) or less (``"too_short"``).
    ``what`` names the block in the messages (``"tensor 3"``); ``field`` and ``offset``
    go into the error (``field`` defaults to ``what``).
    """
    view = _bytes_view(payload)
    size = len(view)
    if nbytes < 0 or nbytes > max_inflated_size(size):
        raise _fail(
            "ratio",
            f"declares {nbytes} uncompressed bytes but {size} zlib bytes inflate to at most "
            f"{max_inflated_size(size)} ({MAX_RATIO}:1); the entry's size fields are wrong",
            nbytes,
            what,
            field=field,
            offset=offset,
        )
    out = np.empty(nbytes, np.uint8)  # pages are committed only as they are written
    got = _inflate_into(view, nbytes, out.data)
    if got.outcome == "corrupt":
        raise _fail(
            "corrupt",
            f"not a valid zlib stream ({got.detail})",
            nbytes,
            what,
            field=field,
            offset=offset,
        )
    if got.outcome == "truncated":
        raise _fail(
            "truncated",
            f"the zlib stream ends early: its {size} bytes hold {got.produced} of the "
            f"{nbytes} bytes and no end of stream",
            nbytes,
            what,
            field=field,
            offset=offset,
        )
    if got.outcome == "too_long":
        raise _fail(
            "too_long",
            f"the zlib stream holds more than the declared {nbytes} bytes "
            "(inflation stopped there)",
            nbytes,
            what,
            field=field,
            offset=offset,
        )
    if got.produced != nbytes:
        raise _fail(
            "too_short",
            f"the zlib stream holds {got.produced} bytes, the entry declares {nbytes}",
            nbytes,
            what,
            field=field,
            offset=offset,
        )
    return Inflated(out, got.crc32, got.trailing)


def threads() -> int:
    """Worker threads for the parallel helpers: the CPUs this process may run on."""
    return tsr_platform.cpu_count()


T = TypeVar("T")
R = TypeVar("R")


def map_blocks(
    func: Callable[[T], R], items: Sequence[T], total: int, workers: int | None = None
) -> list[R]:
    """``[func(item) for item in items]`` on a thread pool when there is enough work
    (``total`` bytes in all): for zlib, CRC and I/O calls, which release the GIL. The
    first error in item order is raised."""
    n = min(len(items), workers if workers is not None else threads())
    if n <= 1 or total < PARALLEL_MIN_BYTES:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="tsr-zlib") as pool:
        results: Iterator[R] = pool.map(func, items)
        return list(results)  # re-raises the first failing block's error, in block order


def compress_many(
    blocks: Sequence[Buffer | npt.NDArray[Any]],
    *,
    workers: int | None = None,
) -> list[Compressed]:
    """:func:`compress` of every block, in parallel; the same bytes as one after another."""
    total = sum(_bytes_view(b).nbytes for b in blocks)
    return map_blocks(compress, blocks, total, workers)


def inflate_many(
    jobs: Sequence[tuple[Buffer, int, str]],
    *,
    workers: int | None = None,
) -> list[Inflated]:
    """:func:`inflate` of every ``(payload, nbytes, what)``, in parallel, in order."""
    total = sum(nbytes for _, nbytes, _ in jobs)
    return map_blocks(lambda job: inflate(job[0], job[1], what=job[2]), jobs, total, workers)
