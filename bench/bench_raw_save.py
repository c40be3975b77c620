#!/usr/bin/env python
"""Where the time of a RAW TSR4 save goes: ``tsr.save_all`` against ``np.save``, the bare
write, and the other ways of scheduling the CRC-32 that the format needs.

Usage::

    python bench/bench_raw_save.py [--mib 256] [--rounds 30] [--dir DIR]

Every case writes the same ``--mib`` MiB FP32 array to a new file in ``--dir`` (preallocated
as ``np.save`` and ``tsr`` do), in interleaved rounds (a shuffled order each round; before
each sample an untimed ``os.sync()`` and ``bench_codec.prefault`` of 1.5x the payload; the
garbage collector off while timing; the file unlinked after it); the ratio printed is
the median of the per-round ratios to ``np.save``. ``np.save again`` is ``np.save`` once
more: how far two identical cases drift apart is the resolution of the run.

* ``write bound``: one ``write(2)`` of the bytes, no CRC, no rename (what ``np.save`` does);
* ``CRC, then write``: the CRC-32 pass first, then the write (no overlap);
* ``CRC per 1 MiB, then write it``: each chunk CRC'd just before it is written, one thread
  (the chunk is in cache when written);
* ``CRC thread beside the write``: ``tsr``'s schedule without the rest of the save;
* ``CRC thread trailing, per 4 MiB``: the thread CRCs each chunk just after it is written;
* ``write bound, another core busy``: the bare write while another process (started once,
  woken just before) spins on a CPU without touching memory: what the second core's being
  busy costs the write, apart from the CRC's memory reads;
* ``tsr.save_all``: the real save (temp file, lock, head written last, rename).
"""

from __future__ import annotations

import argparse
import gc
import os
import queue
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import numpy.typing as npt
from bench_codec import prefault  # this script's directory is first on sys.path

import tsr
from tsr import _io, _zlib

MIB = 1 << 20


def _create(path: str, size: int) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    _io._preallocate(fd, size)
    return fd


def _writer(view: memoryview, crc: str, chunk: int) -> Callable[[str], None]:
    """A save of ``view`` to a new path with the CRC scheduled as ``crc`` says."""

    def run(path: str) -> None:
        fd = _create(path, view.nbytes)
        try:
            if crc == "none":
                _io._write_all(fd, view)
            elif crc == "before":
                _zlib.crc32(view)
                _io._write_all(fd, view)
            elif crc == "per-chunk":
                value = 0
                for start in range(0, view.nbytes, chunk):
                    part = view[start : start + chunk]
                    value = _zlib.crc32_step(part, value)
                    _io._write_all(fd, part)
            elif crc == "thread":
                t = threading.Thread(target=_zlib.crc32, args=(view,))
                t.start()
                _io._write_all(fd, view)
                t.join()
            else:  # "trailing": the thread follows the writer chunk by chunk
                done: queue.SimpleQueue[int | None] = queue.SimpleQueue()

                def follow() -> None:
                    value = 0
                    while (start := done.get()) is not None:
                        value = _zlib.crc32_step(view[start : start + chunk], value)

                t = threading.Thread(target=follow)
                t.start()
                for start in range(0, view.nbytes, chunk):
                    _io._write_all(fd, view[start : start + chunk])
                    done.put(start)
                done.put(None)
                t.join()
        finally:
            os.close(fd)

    return run


_SPIN = """
import os, select
while os.read(0, 1) == b"g":  # go: spin until the next byte (stop), then say so
    while not select.select([0], [], [], 0)[0]:
        for _ in range(10_000):
            pass
    os.read(0, 1)
    os.write(1, b"d")
"""


class Spinner:
    """A process, started once, that spins on a CPU (no memory traffic) while told to.

    One byte each way, unbuffered: "g" (go), "s" (stop), "d" (done)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _SPIN], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, bufsize=0)  # fmt: skip
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.tell, self.hear = self.proc.stdin.fileno(), self.proc.stdout.fileno()

    @contextmanager
    def busy(self) -> Iterator[None]:
        """The block runs while the process spins (woken from a blocking read just before)."""
        os.write(self.tell, b"g")
        time.sleep(0.005)  # awake and spinning
        try:
            yield
        finally:
            os.write(self.tell, b"s")
            os.read(self.hear, 1)

    def close(self) -> None:
        os.write(self.tell, b"q")
        self.proc.communicate()  # closes the pipes, waits for it


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--mib", type=int, default=256)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    big: npt.NDArray[Any] = rng.standard_normal(args.mib * MIB // 4, dtype=np.float32)
    big = big.reshape(1, 1, -1, 256)
    view = big.reshape(-1).view(np.uint8).data
    work = tempfile.mkdtemp(prefix="tsr-bench-raw-save-", dir=args.dir)
    out = os.path.join(work, "out.npy")  # np.save would add the suffix
    cases: dict[str, Callable[[str], object]] = {
        "np.save [ref]": lambda path: np.save(path, big),
        "np.save again": lambda path: np.save(path, big),
        "write bound: one write(2), no CRC": _writer(view, "none", 0),
        "CRC, then write": _writer(view, "before", 0),
        "CRC per 1 MiB, then write it": _writer(view, "per-chunk", MIB),
        "CRC thread beside the write": _writer(view, "thread", 0),
        "CRC thread trailing, per 4 MiB": _writer(view, "trailing", 4 * MIB),
        "tsr.save_all (atomic)": lambda path: tsr.save_all(path, [big], format="v4"),
        "write bound, another core busy": _writer(view, "none", 0),
    }
    spinner = Spinner()
    around = {"write bound, another core busy": spinner.busy}
    times: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    shuffle = random.Random(1).shuffle
    try:
        for _ in range(args.rounds):
            shuffle(order)
            for name in order:
                os.sync()
                prefault(view.nbytes * 3 // 2)
                with around.get(name, nullcontext)():
                    gc.disable()
                    t = time.perf_counter()
                    cases[name](out)
                    times[name].append(time.perf_counter() - t)
                    gc.enable()
                os.unlink(out)
    finally:
        spinner.close()
        shutil.rmtree(work, ignore_errors=True)
    ref = times["np.save [ref]"]
    load = os.getloadavg()[0]
    print(f"RAW save of {args.mib} MiB, {args.rounds} interleaved rounds; CRC-32 from "
          f"{_zlib.CRC_IMPLEMENTATION}; load average {load:.1f} at the end")  # fmt: skip
    print(f"  {'case':36} {'median':>10} {'min':>10} {'x np.save':>10}")
    for name, ts in times.items():
        r = statistics.median(a / b for a, b in zip(ts, ref, strict=True))
        print(f"  {name:36} {statistics.median(ts) * 1e3:7.1f} ms {min(ts) * 1e3:7.1f} ms "
              f"{r:10.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
