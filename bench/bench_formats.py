#!/usr/bin/env python
"""Benchmark of TSR4 (TSR-V4.20) reading and writing against an upstream-like reader/writer
and the raw bounds.

Usage::

    python bench/bench_formats.py [--raw-mib 256] [--zlib-tensors 10] [--zlib-mib 8]
                                  [--list-tensors 1000] [--repeat 5] [--dir DIR]
                                  [--cases raw,zlib,list]

Cases, timed in the same run in interleaved rounds (a fresh shuffled order every round;
ratios are medians of per-round ratios, so drift on a shared machine cancels out):

* RAW load of one ``--raw-mib`` MiB FP32 tensor: ``tsr`` (memory map, CRC-32 verified as
  C++ does), the upstream-like reader written from the brief (read the payload into
  ``bytes``, ``zlib.crc32``, ``np.frombuffer``), and the bound: one ``readinto`` of an
  ``np.empty`` array plus one CRC pass. Target: tsr <= 1.3x the bound. Peak RSS growth of
  each is measured in a fresh subprocess (target: one payload).
* RAW save of the same tensor: ``tsr`` against ``np.save`` of the same bytes (target <=
  1.0x), the upstream-like writer (CRC, header, ``f.write``) and the write bound (one
  ``write(2)`` of the bytes to a new preallocated file, no CRC: what ``np.save`` does).
* ZLIB load and save of ``--zlib-tensors`` tensors of ``--zlib-mib`` MiB each: ``tsr``
  (tensors on a thread pool: zlib releases the GIL), ``tsr`` with one worker, and the
  upstream-like code (``zlib.compress(..., 6)`` / ``zlib.decompress`` one tensor after
  another). Target: >= 1.8x faster than one-after-another on 2 cores; every output is
  checked byte-identical to the sequential one.
* Opening a ``--list-tensors``-tensor file and listing it (``len`` and every tensor's info).
  Target <= 2 ms. The same listing as dicts (``to_dict``), and with the garbage collector
  on, are printed beside it.

Loads read a warm page cache; saves go to new paths (unlinked after each sample). Samples
are taken as ``bench_codec.py`` takes them: each after an untimed ``os.sync()`` and, for the
big cases, after touching and freeing 1.5x their bytes (``bench_codec.prefault``: on a VM
with free page reporting a save otherwise pays host faults for whatever the previous case
freed), with the garbage collector off during the timed call (as :mod:`timeit`), and its
result freed after the clock stops. The machine's load (other processes' CPU share and the
load average) is printed with the results: on a shared machine the min tells more than the
median.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from bench_codec import prefault  # this script's directory is first on sys.path

import tsr
from tsr import _io, _zlib, v4
from tsr._model import Compression

Array = npt.NDArray[Any]
MIB = 1 << 20

# ----------------------------------------------------------------------------- the code measured


def tsr_load_all(path: str) -> list[Array]:
    return tsr.load_all(path)


def tsr_save_all(path: str, arrays: list[Array], compression: Compression) -> None:
    tsr.save_all(path, arrays, format="v4", compression=compression)


def tsr_list(path: str) -> list[Any]:
    """Open and list: ``len`` and every tensor's info (dtype, shape, offset, sizes, CRC)."""
    with tsr.open(path) as f:
        return [len(f)] + [
            (t.dtype, t.shape, t.offset, t.stored_size, t.nbytes, t.compression, t.crc32)
            for t in f.tensors
        ]


def tsr_list_dicts(path: str) -> list[Any]:
    """The same listing as JSON-ready dicts (``TensorInfo.to_dict``, as ``tsr info --json``)."""
    with tsr.open(path) as f:
        return [t.to_dict() for t in f.tensors]


@contextlib.contextmanager
def one_worker() -> Iterator[None]:
    """tsr with its thread pool limited to one worker (the one-after-another baseline)."""
    real = _zlib.threads
    _zlib.threads = lambda: 1
    try:
        yield
    finally:
        _zlib.threads = real


def sequential(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with one_worker():
            return fn()

    return run


# ----------------------------------------------------------------------------- upstream-like

_HEADER = struct.Struct("<4sHHIIIIQQII80s")
_ENTRY = struct.Struct("<B3s4iqQQQQI")
_NP = {0: "<f4", 1: "<f2", 2: "i1", 3: "<i4"}
_CODE = {"float32": 0, "float16": 1, "int8": 2, "int32": 3}


def upstream_load_all(path: str) -> list[Array]:
    """The framework's Python reader, as the brief describes it: every payload read into
    ``bytes``, ``zlib.crc32``, ``np.frombuffer``, one tensor after another."""
    with open(path, "rb") as f:
        head = _HEADER.unpack(f.read(128))
        count, mode = head[5], head[4]
        entries = [_ENTRY.unpack(f.read(64)) for _ in range(count)]
        out = []
        for e in entries:
            shape, nbytes, offset, payload_size, crc = e[2:6], e[8], e[9], e[10], e[11]
            f.seek(offset)
            data = f.read(payload_size)
            if mode == 1:
                data = zlib.decompress(data)
            if len(data) != nbytes or zlib.crc32(data) != crc:
                raise ValueError("bad tensor")
            out.append(np.frombuffer(data, _NP[e[0]]).reshape(shape))
    return out


def upstream_save_all(path: str, arrays: list[Array], compression: Compression) -> None:
    """The upstream writer's work (CRC, ``zlib.compress(..., 6)``, one tensor after
    another; its padded row_stride aside), written in place."""
    mode = 0 if compression is None else 1
    n = len(arrays)
    start = v4.data_start(n, mode)
    blobs, entries = [], []
    pos = start
    for a in arrays:
        raw = a.tobytes()
        crc = zlib.crc32(raw)
        blob = raw if mode == 0 else zlib.compress(raw, 6)
        shape = (1,) * (4 - a.ndim) + a.shape
        entries.append(_ENTRY.pack(_CODE[a.dtype.name], b"\0" * 3, *shape, a.size,
                                   shape[2] * shape[3] * a.itemsize, a.nbytes, pos,
                                   len(blob), crc))  # fmt: skip
        blobs.append((pos, blob))
        pos += len(blob)
        if mode == 0:
            pos = v4.round_up(pos, 256)
    head = bytearray(_HEADER.pack(b"TSR4", 4, 20, 128, mode, n, 64, 128, start, 0, 0, bytes(80)))
    struct.pack_into("<I", head, 40, zlib.crc32(head))
    with open(path, "wb") as f:
        f.write(head)
        f.write(b"".join(entries))
        for off, blob in blobs:
            f.seek(off)
            f.write(blob)


# ----------------------------------------------------------------------------- bounds


def bound_read_crc(path: str, nbytes: int) -> Array:
    """One read into fresh memory and one CRC pass: the least a checked load can do."""
    out = np.empty(nbytes, np.uint8)
    view = out.data
    with open(path, "rb", buffering=0) as f:
        done = 0
        while done < nbytes:
            got = f.readinto(view[done:])
            if not got:
                raise EOFError(path)
            done += got
    zlib.crc32(view)
    return out


def bound_write(path: str, array: Array) -> None:
    """One ``write(2)`` of the array's bytes to a new file, preallocated as ``tsr`` and
    ``np.save`` do, with no CRC and no rename: the least a save can do."""
    view = array.reshape(-1).view(np.uint8).data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        _io._preallocate(fd, view.nbytes)
        _io._write_all(fd, view)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- timing


@dataclass
class Case:
    name: str
    run: Callable[[], object]
    setup: Callable[[], None] = lambda: None
    teardown: Callable[[], None] = lambda: None
    times: list[float] = field(default_factory=list)


def sample(case: Case, warm: int) -> None:
    """One timed call of ``case``, as ``bench_codec.py`` times: after an untimed
    ``os.sync()`` and :func:`bench_codec.prefault` of ``warm`` bytes, with the garbage
    collector off (as :mod:`timeit` does), and what the call returns freed after the clock
    stops."""
    case.setup()
    os.sync()
    prefault(warm)
    gc.disable()
    try:
        t = time.perf_counter()
        result = case.run()
        case.times.append(time.perf_counter() - t)
    finally:
        gc.enable()
    del result
    case.teardown()


def rounds(cases: list[Case], repeat: int, seed: int, warm: int = 0) -> None:
    rng = random.Random(seed)
    for _ in range(repeat):
        order = cases[:]
        rng.shuffle(order)
        for c in order:
            sample(c, warm)


def ratio(a: Case, b: Case) -> float:
    return statistics.median(x / y for x, y in zip(a.times, b.times, strict=True))


def cpu_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:9.2f} ms" if seconds < 10 else f"{seconds:9.2f} s "


def table(title: str, cases: list[Case], ref: Case | None) -> list[str]:
    lines = [f"\n{title}", f"  {'case':44} {'median':>12} {'min':>12} {'x ref':>8}"]
    for c in cases:
        r = f"{ratio(c, ref):8.2f}" if ref is not None else ""
        lines.append(f"  {c.name:44} {_fmt(statistics.median(c.times))} {_fmt(min(c.times))} {r}")
    return lines


# ----------------------------------------------------------------------------- peak memory


def peak_rss_growth(op: str, path: str) -> int:
    """Peak RSS growth (bytes) of one load in a fresh interpreter."""
    code = (
        "import sys, json\n"
        "sys.path.insert(0, sys.argv[3])\n"
        "import bench_formats as b\n"
        "def hwm():\n"
        "    for l in open('/proc/self/status'):\n"
        "        if l.startswith('VmHWM:'): return int(l.split()[1]) * 1024\n"
        "before = hwm()\n"
        "out = {'tsr': b.tsr_load_all, 'upstream': b.upstream_load_all}[sys.argv[1]](sys.argv[2])\n"
        "print(hwm() - before)\n"
    )  # fmt: skip
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-c", code, op, path, here], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return int(proc.stdout.strip())


# ----------------------------------------------------------------------------- the cases


def _rm(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def bench_raw(args: argparse.Namespace, work: str, verdicts: list[str]) -> list[str]:
    rng = np.random.default_rng(0)
    big = rng.standard_normal(args.raw_mib * MIB // 4, dtype=np.float32).reshape(1, 1, -1, 256)
    raw_path = os.path.join(work, "raw.tsr")
    tsr_save_all(raw_path, [big], None)
    payload = big.nbytes
    out = os.path.join(work, "out")
    load_cases = [
        Case("read+CRC bound [ref]", lambda: bound_read_crc(raw_path, payload)),
        Case("tsr load (mmap, CRC verified)", lambda: tsr_load_all(raw_path)),
        Case("upstream-like load (bytes, crc32)", lambda: upstream_load_all(raw_path)),
    ]
    save_cases = [
        Case("np.save same bytes [ref]", lambda: np.save(out + ".npy", big),
             teardown=lambda: _rm(out + ".npy")),
        Case("write bound: one write(2), no CRC", lambda: bound_write(out, big),
             teardown=lambda: _rm(out)),
        Case("tsr save RAW (atomic)", lambda: tsr_save_all(out, [big], None),
             teardown=lambda: _rm(out)),
        Case("upstream-like save RAW (in place)", lambda: upstream_save_all(out, [big], None),
             teardown=lambda: _rm(out)),
    ]  # fmt: skip
    rounds(load_cases + save_cases, args.repeat, 1, warm=payload * 3 // 2)
    lines = table(f"RAW, one FP32 tensor of {args.raw_mib} MiB: load", load_cases, load_cases[0])
    lines += table("RAW: save", save_cases, save_cases[0])
    r_load = ratio(load_cases[1], load_cases[0])
    r_bound = ratio(save_cases[1], save_cases[0])
    r_save = ratio(save_cases[2], save_cases[0])
    mem_tsr = peak_rss_growth("tsr", raw_path)
    mem_up = peak_rss_growth("upstream", raw_path)
    lines.append(
        f"  peak RSS growth of one load: tsr {mem_tsr / MIB:.0f} MiB, upstream-like "
        f"{mem_up / MIB:.0f} MiB (payload {payload / MIB:.0f} MiB)"
    )
    verdicts.append(
        f"RAW load with CRC <= 1.3x read+CRC bound: {r_load:.2f}x {_met(r_load <= 1.3)}"
    )
    verdicts.append(
        f"RAW load peak memory one payload: {mem_tsr / payload:.2f} payloads "
        f"{_met(mem_tsr <= 1.1 * payload)}"
    )
    verdicts.append(
        f"RAW save <= 1.0x np.save: {r_save:.2f}x {_met(r_save <= 1.0)} (the write bound, "
        f"one write(2) of the same bytes with no CRC: {r_bound:.2f}x)"
    )
    return lines


def zlib_set(count: int, mib: int) -> list[Array]:
    """The ZLIB case's tensors: ``count`` FP32 tensors of ``mib`` MiB, normal values rounded
    to eighths (they compress to about a quarter at level 6), each shifted from the last."""
    base = np.random.default_rng(1).standard_normal(mib * MIB // 4, dtype=np.float32)
    return [
        (np.round(np.roll(base, i * 7) * 8) / 8).astype(np.float32).reshape(1, 1, -1, 64)
        for i in range(count)
    ]


def bench_zlib(args: argparse.Namespace, work: str, verdicts: list[str]) -> list[str]:
    tensors = zlib_set(args.zlib_tensors, args.zlib_mib)
    zpath = os.path.join(work, "zlib.tsr")
    out = os.path.join(work, "out")
    with one_worker():
        tsr_save_all(zpath, tensors, "zlib")
    one_after_another = _read(zpath)
    tsr_save_all(out, tensors, "zlib")
    identical = _read(out) == one_after_another
    upstream_save_all(out, tensors, "zlib")
    up_same = _read(out) == one_after_another
    _rm(out)
    squeeze = len(one_after_another) / sum(t.nbytes for t in tensors)
    zload = [
        Case("one-after-another (upstream-like) [ref]", lambda: upstream_load_all(zpath)),
        Case("tsr, one worker", sequential(lambda: tsr_load_all(zpath))),
        Case("tsr, parallel", lambda: tsr_load_all(zpath)),
    ]
    zsave = [
        Case("one-after-another (upstream-like) [ref]",
             lambda: upstream_save_all(out, tensors, "zlib"), teardown=lambda: _rm(out)),
        Case("tsr, one worker", sequential(lambda: tsr_save_all(out, tensors, "zlib")),
             teardown=lambda: _rm(out)),
        Case("tsr, parallel", lambda: tsr_save_all(out, tensors, "zlib"),
             teardown=lambda: _rm(out)),
    ]  # fmt: skip
    rounds(zload + zsave, args.repeat, 2, warm=sum(t.nbytes for t in tensors) * 3 // 2)
    title = (
        f"ZLIB, {args.zlib_tensors} FP32 tensors of {args.zlib_mib} MiB (compressed to "
        f"{squeeze:.2f} of their size): load"
    )
    lines = table(title, zload, zload[0])
    lines += table("ZLIB: save", zsave, zsave[0])
    lines.append(
        f"  parallel save byte-identical to one worker: {identical}; to the upstream-like "
        f"writer (with C++'s row_stride): {up_same}"
    )
    s_load = 1 / ratio(zload[2], zload[0])
    s_save = 1 / ratio(zsave[2], zsave[0])
    verdicts.append(
        f"multi-tensor ZLIB load >= 1.8x faster than one-after-another: {s_load:.2f}x "
        f"{_met(s_load >= 1.8)}"
    )
    verdicts.append(
        f"multi-tensor ZLIB save >= 1.8x faster, byte-identical: {s_save:.2f}x, "
        f"identical={identical} {_met(s_save >= 1.8 and identical)}"
    )
    return lines


def bench_list(args: argparse.Namespace, work: str, verdicts: list[str]) -> list[str]:
    small = [np.full((1, 1, 1, 16), i, np.float32) for i in range(args.list_tensors)]
    lpath = os.path.join(work, "many.tsr")
    tsr_save_all(lpath, small, None)
    assert len(tsr_list(lpath)) == args.list_tensors + 1
    calls = 50
    figures = []
    for fn, collect in ((tsr_list, False), (tsr_list_dicts, False), (tsr_list, True)):
        per_call: list[float] = []
        for _ in range(max(args.repeat, 5)):
            if not collect:
                gc.disable()  # as timeit (and sample) time
            try:
                t = time.perf_counter()
                for _ in range(calls):
                    fn(lpath)
                per_call.append((time.perf_counter() - t) / calls)
            finally:
                gc.enable()
        figures.append((statistics.median(per_call), min(per_call)))
    (med, best), (dmed, dbest), (gmed, gbest) = figures
    verdicts.append(
        f"open and list {args.list_tensors} tensors <= 2 ms: median {med * 1e3:.2f} ms, "
        f"min {best * 1e3:.2f} ms {_met(med <= 2e-3)}"
    )
    return [
        f"\nopen + list a {args.list_tensors}-tensor file (tsr.open, len, every TensorInfo's "
        f"fields): median {med * 1e3:.3f} ms, min {best * 1e3:.3f} ms",
        f"  the same as dicts (TensorInfo.to_dict each): median {dmed * 1e3:.3f} ms, "
        f"min {dbest * 1e3:.3f} ms",
        f"  the same with the garbage collector on: median {gmed * 1e3:.3f} ms, "
        f"min {gbest * 1e3:.3f} ms",
    ]


def _met(ok: bool) -> str:
    return "MET" if ok else "MISSED"


# ----------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--raw-mib", type=int, default=256)
    p.add_argument("--zlib-tensors", type=int, default=10)
    p.add_argument("--zlib-mib", type=int, default=8)
    p.add_argument("--list-tensors", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--dir", default=None)
    p.add_argument(
        "--cases",
        default="raw,zlib,list",
        help="which parts to run, comma-separated (default: all)",
    )
    args = p.parse_args(argv)
    cases = set(args.cases.split(","))
    work = tempfile.mkdtemp(prefix="tsr-bench-formats-", dir=args.dir)
    busy0, load0 = cpu_busy(), os.getloadavg()
    lines: list[str] = [
        f"tsr {tsr.__version__} from {os.path.dirname(tsr.__file__)}; Python "
        f"{sys.version.split()[0]}; NumPy {np.__version__}; zlib {zlib.ZLIB_RUNTIME_VERSION}; "
        f"tsr's CRC-32 from {_zlib.CRC_IMPLEMENTATION}; {_zlib.threads()} CPUs for this process",
        f"command: python bench/bench_formats.py {' '.join(argv)}".rstrip(),
    ]
    verdicts: list[str] = []
    try:
        for name, part in (("raw", bench_raw), ("zlib", bench_zlib), ("list", bench_list)):
            if name in cases:
                lines += part(args, work, verdicts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    busy1, load1 = cpu_busy(), os.getloadavg()
    share = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    lines.append(
        f"\nmachine: all CPUs {share:.0%} busy during the run (this benchmark included); "
        f"load average {load0[0]:.1f} at start, {load1[0]:.1f} at end, on {os.cpu_count()} CPUs"
    )
    lines.append("\ntargets:")
    lines += [f"  {v}" for v in verdicts]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
