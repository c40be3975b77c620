#!/usr/bin/env python
"""Which library should do the CRC-32, the inflate and the deflate: zlib against ISA-L
(``isal``), zlib-ng (``zlib-ng``) and libdeflate (``deflate``), measured in one run.

Usage::

    python bench/bench_zlib_libs.py [--rounds 7] [--ram-mib 256] [--zlib-tensors 10]
                                    [--zlib-mib 8]

Every library that is installed is measured (``pip install tsr-tensor[bench]`` installs
them all); one that is not is listed as such. Each figure is the median of ``--rounds``
samples, the libraries' samples interleaved in a fresh shuffled order each round.

* **CRC-32**: GB/s over a 1 MiB buffer (in cache) and a ``--ram-mib`` MiB one (from
  memory), on one thread; and over two halves of the big one on two threads, which is
  faster than one thread only when the call releases the GIL. Every value is checked equal
  to :func:`zlib.crc32`'s.
* **Inflate**: GB/s of output, inflating the ZLIB set of ``bench_formats.py``
  (``--zlib-tensors`` FP32 tensors of ``--zlib-mib`` MiB, compressed by zlib at level 6 as
  C++ writes them), one stream after another; every output is checked equal to the
  tensor's bytes.
* **Deflate**: MB/s compressing the same tensors, and whether the stream is byte-identical
  to zlib's at level 6 (what C++ writes). ISA-L has no level 6; its highest, 3, is shown.

The RAW save with each CRC beside the write is in ``bench_raw_save.py``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bench_formats import zlib_set  # this script's directory is first on sys.path

MIB = 1 << 20
Crc = Callable[[Any, int], int]


@dataclass
class Lib:
    """One library's entry points, and the level its ``compress`` uses."""

    name: str
    crc32: Crc
    inflate: Callable[[bytes, int], bytes | bytearray]
    compress: Callable[[bytes], bytes | bytearray]
    level: int


def libraries() -> tuple[list[Lib], list[str]]:
    """The installed libraries, and the names of those that are not."""
    libs = [Lib("zlib", zlib.crc32, lambda d, n: zlib.decompress(d),
                lambda d: zlib.compress(d, 6), 6)]  # fmt: skip
    missing = []
    try:
        from isal import isal_zlib

        libs.append(Lib("isal (ISA-L)", isal_zlib.crc32, lambda d, n: isal_zlib.decompress(d),
                        lambda d: isal_zlib.compress(d, 3), 3))  # fmt: skip
    except ImportError:
        missing.append("isal")
    try:
        from zlib_ng import zlib_ng

        libs.append(Lib("zlib-ng", zlib_ng.crc32, lambda d, n: zlib_ng.decompress(d),
                        lambda d: zlib_ng.compress(d, 6), 6))  # fmt: skip
    except ImportError:
        missing.append("zlib-ng")
    try:
        import deflate

        libs.append(Lib("libdeflate (deflate)", deflate.crc32, deflate.zlib_decompress,
                        lambda d: deflate.zlib_compress(d, 6), 6))  # fmt: skip
    except ImportError:
        missing.append("deflate")
    return libs, missing


@dataclass
class Timer:
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, seconds: float) -> None:
        self.samples.setdefault(key, []).append(seconds)

    def median(self, key: str) -> float:
        return statistics.median(self.samples[key])


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _two_threads(crc: Crc, view: memoryview) -> None:
    half = len(view) // 2
    t = threading.Thread(target=crc, args=(view[:half], 0))
    t.start()
    crc(view[half:], 0)
    t.join()


@dataclass
class Data:
    """What every library works on: the CRC buffers and the ZLIB set."""

    small: memoryview
    big: memoryview
    raw: list[bytes]
    streams: list[bytes]


def sample(lib: Lib, timer: Timer, data: Data) -> None:
    """One sample of each of ``lib``'s measures."""
    crc, inflate, compress = lib.crc32, lib.inflate, lib.compress
    small, big, raw = data.small, data.big, data.raw
    reps = 64
    timer.add(f"{lib.name} crc small", _timed(lambda: [crc(small, 0) for _ in range(reps)]) / reps)
    timer.add(f"{lib.name} crc big", _timed(lambda: crc(big, 0)))
    timer.add(f"{lib.name} crc big 2t", _timed(lambda: _two_threads(crc, big)))
    pairs = list(zip(data.streams, raw, strict=True))
    timer.add(f"{lib.name} inflate", _timed(lambda: [inflate(s, len(r)) for s, r in pairs]))
    timer.add(f"{lib.name} deflate", _timed(lambda: [compress(r) for r in raw]))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--ram-mib", type=int, default=256)
    p.add_argument("--zlib-tensors", type=int, default=10)
    p.add_argument("--zlib-mib", type=int, default=8)
    args = p.parse_args(argv)
    libs, missing = libraries()
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, MIB, dtype=np.uint8).data
    big = rng.integers(0, 256, args.ram_mib * MIB, dtype=np.uint8).data
    raw = [t.tobytes() for t in zlib_set(args.zlib_tensors, args.zlib_mib)]
    streams = [zlib.compress(r, 6) for r in raw]
    want = {"small": zlib.crc32(small), "big": zlib.crc32(big)}

    problems: list[str] = []
    for lib in libs:  # correctness first, untimed
        for key, buf in (("small", small), ("big", big)):
            if lib.crc32(buf, 0) != want[key]:
                problems.append(f"{lib.name}: CRC-32 differs from zlib's")
        if any(lib.inflate(s, len(r)) != r for s, r in zip(streams, raw, strict=True)):
            problems.append(f"{lib.name}: inflate output differs")

    data = Data(small, big, raw, streams)
    timer = Timer()
    order = list(libs)
    shuffle = random.Random(3).shuffle
    for _ in range(args.rounds):
        shuffle(order)
        for lib in order:
            sample(lib, timer, data)
    identical = {
        lib.name: all(lib.compress(r) == s for r, s in zip(raw, streams, strict=True))
        for lib in libs
    }

    gb = 1e9
    total = sum(len(r) for r in raw)
    print(f"{len(libs)} libraries, {args.rounds} rounds (medians); not installed: "
          f"{', '.join(missing) or 'none'}")  # fmt: skip
    print(f"\nCRC-32, GB/s      {'1 MiB':>8} {f'{args.ram_mib} MiB':>8} {'2 threads':>10}  "
          "(2 threads > 1 thread: the call releases the GIL)")  # fmt: skip
    for lib in libs:
        n = lib.name
        print(f"  {n:20} {MIB / timer.median(f'{n} crc small') / gb:6.2f} "
              f"{len(big) / timer.median(f'{n} crc big') / gb:8.2f} "
              f"{len(big) / timer.median(f'{n} crc big 2t') / gb:10.2f}")  # fmt: skip
    print(f"\nZLIB, {args.zlib_tensors} tensors of {args.zlib_mib} MiB (zlib level 6: "
          f"{sum(map(len, streams)) / total:.2f} of their size), one after another")  # fmt: skip
    print(f"  {'library':20} {'inflate GB/s':>12} {'deflate MB/s':>12}  level  same bytes as C++")
    for lib in libs:
        n = lib.name
        print(f"  {n:20} {total / timer.median(f'{n} inflate') / gb:12.2f} "
              f"{total / timer.median(f'{n} deflate') / 1e6:12.1f}  {lib.level:5}  "
              f"{identical[n]}")  # fmt: skip
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
