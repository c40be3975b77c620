#!/usr/bin/env python
"""Benchmark of ``tsr.compare`` (streamed) against the same figures computed by NumPy on
whole arrays (what a hand-written script does: load both files, convert to float64).

Usage::

    python bench/bench_compare.py [--sizes 8M,256M] [--repeat 3] [--dir DIR]

For each size (the FP32 payload of each of the two files) it writes two files (a ``.tsr``
and a ``.npy``, one element different), then times, in alternating rounds, ``tsr.compare``
of the two paths and a direct NumPy computation (``np.load`` both, ``astype(float64)``,
``isclose``, ``abs``, max/mean/MSE), and measures the peak memory each allocates
(``tracemalloc``, which NumPy reports its buffers to). Prints the best time and the peak.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import tsr


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].isalpha() else int(text)


def direct(a_path: Path, b_path: Path) -> tuple[int, float]:
    a = tsr.load(a_path, mmap=False).astype(np.float64)
    b = np.load(b_path).astype(np.float64)
    bad = int(np.count_nonzero(~np.isclose(a, b)))
    d = np.abs(a - b)
    _ = float(d.mean()), float(np.mean(d * d))
    return bad, float(d.max())


def streamed(a_path: Path, b_path: Path) -> tuple[int, float]:
    c = tsr.compare(a_path, b_path)
    return c.mismatches, c.max_abs


def measure(fn: Callable[[Path, Path], Any], a: Path, b: Path) -> tuple[float, int, Any]:
    tracemalloc.start()
    t = time.perf_counter()
    out = fn(a, b)
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return dt, peak, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="8M,256M")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", default=None)
    args = p.parse_args()
    print(f"tsr {tsr.__file__}, numpy {np.__version__}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for size in (parse_size(s) for s in args.sizes.split(",")):
            n = size // 4
            a = np.arange(n, dtype=np.float32)
            b = a.copy()
            b[-1] = -5.0
            a_path, b_path = Path(tmp) / "a.tsr", Path(tmp) / "b.npy"
            tsr.save(a_path, a)
            np.save(b_path, b)
            del a, b
            best: dict[str, tuple[float, int]] = {}
            for _ in range(args.repeat):
                for name, fn in (("tsr.compare", streamed), ("numpy whole", direct)):
                    dt, peak, out = measure(fn, a_path, b_path)
                    assert out[0] == 1, out
                    old = best.get(name, (float("inf"), 0))
                    best[name] = (min(old[0], dt), max(old[1], peak))
            print(f"\n{size / 2**20:.0f} MiB per file ({n} FP32 elements)")
            for name, (dt, peak) in best.items():
                print(f"  {name:12s} best {dt * 1e3:9.1f} ms  {n / dt / 1e6:7.1f} M elem/s  "
                      f"peak {peak / 2**20:8.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
