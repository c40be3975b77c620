#!/usr/bin/env python
"""Benchmark of the tsr codec against NumPy, safetensors, torch and raw I/O.

Usage::

    python bench/bench_codec.py [--sizes 4K,4M,256M,1G] [--repeat N] [--dir DIR] [--quick]

For each size (an FP32 payload of that many bytes) it times, in the same run and in
interleaved rounds, ``tsr.save`` (to a new path, over an existing file, and over an existing
file with a plain ``os.replace`` instead of ``RENAME_EXCHANGE``), ``tsr.load`` (memory map
and ``mmap=False``), ``tsr.read_header``, ``tsr.from_bytes`` and the parse of the 64 header
bytes, against ``np.save``/``np.load``, safetensors, ``torch.save``/``torch.load`` and the
raw bounds (one ``write`` of the buffer, one ``readinto`` of an ``np.empty`` array). The peak
RSS growth of each save and load is measured in a fresh subprocess per case. It prints one
table per size, then the issue's targets with their verdicts.

Method (also printed with the results):

* Every sample starts after an untimed ``os.sync()``, so no writeback is pending. A save to
  a new path starts with the target absent; a save "over an existing file" starts with a
  file of the same size written and synced (clean, on disk) at the target. Save outputs are
  unlinked after each sample.
* Load sources are written and synced once per size; loads read a warm page cache (nothing
  is dropped).
* Cases run in rounds, each case once per round, in a fresh (seeded) shuffled order every
  round so that drift and neighbour effects fall on every case alike; below 64 MiB a first
  warm-up round is discarded. Microsecond-scale calls are timed in batches (per-call
  time = batch time / calls).
* From 64 MiB, 1.5x the payload of memory is touched and freed right before each save and
  non-mmap load sample (see :func:`prefault`): on a VM that hands free memory back to its
  host, the cost of a big allocation otherwise depends on what ran before it.
* The CPU share other processes used during each size's rounds is printed with its table:
  figures taken on a busy machine are noisier (the min then tells more than the median).
* Median and min are over the rounds; a ratio is the median over rounds of the case's time
  over its reference's time in the same round (paired, so drift cancels out).

Files go to a temporary directory (under /tmp by default, or under ``--dir``) that is
removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

import tsr
import tsr._io
import tsr._schema
import tsr.header

Array = npt.NDArray[Any]
SaveOp = Callable[[str, Array], None]
LoadOp = Callable[[str, int], object]

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
DEFAULT_SIZES = "4K,4M,256M,1G"
QUICK_SIZES = "4K,4M"
MEM_MIN_BYTES = 1 * MIB  # below this, RSS growth is interpreter noise, not payload
BIG_BYTES = 64 * MIB  # from here: prefault, no warm-up round, no crowded-directory case
CROWD_FILES = 10_000  # files in the directory of the "crowded directory" save cases
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_SAFETENSORS = importlib.util.find_spec("safetensors") is not None


# ----------------------------------------------------------------------------- operations
# Shared by the timing loop and the peak-memory driver, so both measure the same call.


def op_tsr_save(path: str, arr: Array) -> None:
    tsr.save(path, arr)


def op_np_save(path: str, arr: Array) -> None:
    np.save(path, arr)  # path ends in .npy: NumPy adds no suffix


def op_st_save(path: str, arr: Array) -> None:
    from safetensors.numpy import save_file  # optional dependency

    save_file({"x": arr}, path)


def op_torch_save(path: str, arr: Array) -> None:
    import torch  # optional dependency

    torch.save(torch.from_numpy(arr), path)  # a tensor sharing the array's memory


def op_raw_write(path: str, arr: Array) -> None:
    """The bound for a save: create the file and ``write`` the buffer once."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view = arr.reshape(-1).view(np.uint8).data
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def op_tsr_load(path: str, count: int) -> object:
    return tsr.load(path)


def op_tsr_load_copy(path: str, count: int) -> object:
    return tsr.load(path, mmap=False)


def op_np_load(path: str, count: int) -> object:
    return np.load(path)


def op_np_load_mmap(path: str, count: int) -> object:
    return np.load(path, mmap_mode="r")


def op_st_load(path: str, count: int) -> object:
    from safetensors.numpy import load_file  # optional dependency

    return load_file(path)


def op_torch_load(path: str, count: int) -> object:
    import torch  # optional dependency

    return torch.load(path)


def op_raw_readinto(path: str, count: int) -> object:
    """The bound for a load: ``readinto`` an ``np.empty`` array of the payload's size."""
    out = np.empty(count, np.float32)
    view = out.view(np.uint8).data
    with open(path, "rb", buffering=0) as f:
        pos = 0
        while pos < len(view):
            n = f.readinto(view[pos:])
            if not n:
                raise EOFError(path)
            pos += n
    return out


# format -> (file suffix, save op used to write load sources and warm-up files)
FORMATS: dict[str, tuple[str, SaveOp]] = {
    "tsr": (".tsr", op_tsr_save),
    "npy": (".npy", op_np_save),
    "safetensors": (".safetensors", op_st_save),
    "pt": (".pt", op_torch_save),
    "raw": (".raw", op_raw_write),
}

# memory-driver save cases: key -> (format, op, over an existing file?)
MEM_SAVES: dict[str, tuple[str, SaveOp, bool]] = {
    "tsr_save_new": ("tsr", op_tsr_save, False),
    "tsr_save_over": ("tsr", op_tsr_save, True),
    "np_save_new": ("npy", op_np_save, False),
    "np_save_over": ("npy", op_np_save, True),
    "st_save_new": ("safetensors", op_st_save, False),
    "torch_save_new": ("pt", op_torch_save, False),
    "raw_write_new": ("raw", op_raw_write, False),
}
# memory-driver load cases: key -> (format, op)
MEM_LOADS: dict[str, tuple[str, LoadOp]] = {
    "tsr_load_mmap": ("tsr", op_tsr_load),
    "tsr_load_copy": ("tsr", op_tsr_load_copy),
    "np_load": ("npy", op_np_load),
    "np_load_mmap": ("npy", op_np_load_mmap),
    "st_load": ("safetensors", op_st_load),
    "torch_load": ("pt", op_torch_load),
    "raw_readinto": ("raw", op_raw_readinto),
}


def available(fmt: str) -> bool:
    if fmt == "pt":
        return HAVE_TORCH
    if fmt == "safetensors":
        return HAVE_SAFETENSORS
    return True


def _never_exchange(a: str, b: str) -> bool:
    return False


@contextlib.contextmanager
def plain_replace() -> Iterator[None]:
    """Make ``tsr.save`` replace an existing file with ``os.replace`` (no RENAME_EXCHANGE)."""
    orig = tsr._io._exchange
    tsr._io._exchange = _never_exchange
    try:
        yield
    finally:
        tsr._io._exchange = orig


# ----------------------------------------------------------------------------- peak memory


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_hwm() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS; Linux >= 4.0."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def driver(spec: dict[str, Any]) -> None:
    """Run one case in this (fresh) process and print its peak RSS growth as JSON.

    A warm-up call on a tiny input first takes lazy imports and first-call allocations
    out of the figure; then the peak RSS is reset to the current RSS, the case runs, and
    the growth is the new peak minus that.
    """
    key: str = spec["case"]
    path: str = spec["path"]
    count: int = spec["count"]
    warm_dir: str = spec["warm_dir"]
    keep: object = None
    if key in MEM_SAVES:
        fmt, save_op, _ = MEM_SAVES[key]
        arr = np.arange(count, dtype=np.float32).reshape(tuple(spec["shape"]))
        warm = os.path.join(warm_dir, f"driver-{os.getpid()}{FORMATS[fmt][0]}")
        save_op(warm, np.arange(1024, dtype=np.float32))
        os.unlink(warm)
        gc.collect()
        reset = _reset_hwm()
        hwm0 = _status_kib("VmHWM")
        save_op(path, arr)
        hwm1 = _status_kib("VmHWM")
    else:
        fmt, load_op = MEM_LOADS[key]
        keep = load_op(os.path.join(warm_dir, "warm" + FORMATS[fmt][0]), 1024)
        del keep
        gc.collect()
        reset = _reset_hwm()
        hwm0 = _status_kib("VmHWM")
        keep = load_op(path, count)
        hwm1 = _status_kib("VmHWM")
        del keep
    print(json.dumps({"growth": (hwm1 - hwm0) * KIB, "reset": reset}))


def run_driver(spec: dict[str, Any]) -> tuple[int, bool]:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--driver", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory driver {spec['case']} failed:\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return int(out["growth"]), bool(out["reset"])


# ----------------------------------------------------------------------------- timing


@dataclass
class Case:
    key: str
    label: str
    group: str  # "save", "load" or "header"
    run: Callable[[], object]
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    inner: int = 1  # calls per sample
    prefault: int = 0  # bytes of memory to touch and free before each sample
    ref: str | None = None  # key of the reference case for the ratio
    mem: str | None = None  # memory-driver case key
    samples: list[float] = field(default_factory=list)  # µs per call
    peak: int | None = None  # bytes of peak RSS growth
    peak_exact: bool = True

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    def ratio(self, ref: Case) -> float:
        """Median over rounds of this case's time / the reference's in the same round.

        Paired by round, so that slow drift (a neighbour's burst of work lasting seconds)
        cancels out; the two cases ran a few cases apart in each round.
        """
        return statistics.median(a / b for a, b in zip(self.samples, ref.samples, strict=True))


def prefault(nbytes: int) -> None:
    """Touch and free ``nbytes`` of anonymous memory, so that the next allocations (page
    cache of a save, the array of a load) get pages the hypervisor has backed.

    On a VM with free page reporting (virtio-balloon), free memory idle for ~2 s is handed
    back to the host and the next first touch of each page takes a host fault: an
    allocation-heavy call then costs up to several times more depending on what ran
    before it. Prefaulting before every such sample gives every case the same state.
    """
    if nbytes:
        scratch = np.ones(nbytes, np.uint8)
        del scratch


def sample(case: Case) -> float:
    """One sample of ``case``: setup, sync, prefault, the timed calls, teardown; µs per
    call."""
    if case.setup is not None:
        case.setup()
    os.sync()
    prefault(case.prefault)
    keep: list[object] = []
    append = keep.append
    run = case.run
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for _ in range(case.inner):
            append(run())
        t1 = time.perf_counter_ns()
    finally:
        gc.enable()
        del keep  # frees loaded arrays and unmaps maps outside the timed region
        if case.teardown is not None:
            case.teardown()
    return (t1 - t0) / case.inner / 1e3


def _noop() -> None:
    pass


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass
class SizeRun:
    nbytes: int
    root: str
    warm_dir: str
    crowd_dir: str
    shape: tuple[int, ...] = ()
    count: int = 0
    src: dict[str, str] = field(default_factory=dict)
    out_dir: str = ""
    arr: Array | None = None
    file_bytes: bytes = b""
    cases: list[Case] = field(default_factory=list)
    others: float | None = None  # CPU share used by other processes while timing
    prefault: bool = True

    def prepare(self) -> None:
        self.count = self.nbytes // 4
        self.shape = (self.count // 1024, 1024) if self.count % 1024 == 0 else (self.count,)
        self.arr = np.arange(self.count, dtype=np.float32).reshape(self.shape)
        src_dir = os.path.join(self.root, "src")
        self.out_dir = os.path.join(self.root, "out")  # saves go to a directory of their own
        os.makedirs(src_dir)
        os.makedirs(self.out_dir)
        for fmt, (suffix, save_op) in FORMATS.items():
            if available(fmt):
                self.src[fmt] = os.path.join(src_dir, "data" + suffix)
                save_op(self.src[fmt], self.arr)
        os.sync()
        check = tsr.load(self.src["tsr"], mmap=False)
        if not np.array_equal(check, self.arr):
            raise RuntimeError("tsr round trip mismatch")
        del check
        with open(self.src["tsr"], "rb") as f:
            self.file_bytes = f.read()
        self.cases = self._cases()

    def release(self) -> None:
        """Drop the arrays, the buffer and the case closures that hold them; keep figures."""
        self.arr = None
        self.file_bytes = b""
        for case in self.cases:
            case.run, case.setup, case.teardown = _noop, None, None
        shutil.rmtree(self.root, ignore_errors=True)

    def _out(self, suffix: str) -> str:
        return os.path.join(self.out_dir, "out" + suffix)

    def _cases(self) -> list[Case]:
        arr = self.arr
        assert arr is not None
        n = self.count
        big = self.nbytes >= BIG_BYTES
        fast_inner = 100 if big else 200
        warm = self.nbytes * 3 // 2 if big and self.prefault else 0
        cases: list[Case] = []

        def save_case(
            key: str,
            label: str,
            fmt: str,
            op: SaveOp,
            *,
            over: bool,
            ref: str | None,
            replace: bool = False,
            mem: str | None = None,
            directory: str | None = None,
        ) -> Case:
            out = os.path.join(directory or self.out_dir, "out" + FORMATS[fmt][0])
            patch: list[contextlib.ExitStack] = []

            def setup() -> None:
                _unlink(out)
                if over:
                    FORMATS[fmt][1](out, arr)  # the old file, same size; synced by sample()
                if replace:
                    stack = contextlib.ExitStack()
                    stack.enter_context(plain_replace())
                    patch.append(stack)

            def teardown() -> None:
                while patch:
                    patch.pop().close()
                _unlink(out)

            return Case(key, label, "save", lambda: op(out, arr), setup, teardown, ref=ref,
                        mem=mem, prefault=warm)  # fmt: skip

        cases.append(save_case("tsr_save_new", "tsr.save, new path", "tsr", op_tsr_save,
                               over=False, ref="np_save_new", mem="tsr_save_new"))  # fmt: skip
        cases.append(save_case("np_save_new", "np.save, new path  [ref]", "npy", op_np_save,
                               over=False, ref=None, mem="np_save_new"))  # fmt: skip
        if not big:  # a fixed cost per save: invisible next to a big payload
            crowd = f"dir of {CROWD_FILES:,} files"
            cases.append(save_case("tsr_save_crowd", f"tsr.save, new path, {crowd}", "tsr",
                                   op_tsr_save, over=False, ref="np_save_crowd",
                                   directory=self.crowd_dir))  # fmt: skip
            cases.append(save_case("np_save_crowd", f"np.save, new path, {crowd}  [ref]",
                                   "npy", op_np_save, over=False, ref=None,
                                   directory=self.crowd_dir))  # fmt: skip
        cases.append(save_case("tsr_save_over", "tsr.save over existing (RENAME_EXCHANGE)",
                               "tsr", op_tsr_save, over=True, ref="np_save_over",
                               mem="tsr_save_over"))  # fmt: skip
        if hasattr(tsr._io, "_exchange"):
            cases.append(save_case("tsr_save_over_replace",
                                   "tsr.save over existing, os.replace variant", "tsr",
                                   op_tsr_save, over=True, ref="np_save_over",
                                   replace=True))  # fmt: skip
        cases.append(save_case("np_save_over", "np.save over existing (truncates)  [ref]",
                               "npy", op_np_save, over=True, ref=None,
                               mem="np_save_over"))  # fmt: skip
        if HAVE_SAFETENSORS:
            cases.append(save_case("st_save_new", "safetensors save_file, new path",
                                   "safetensors", op_st_save, over=False, ref="np_save_new",
                                   mem="st_save_new"))  # fmt: skip
        if HAVE_TORCH:
            cases.append(save_case("torch_save_new", "torch.save, new path", "pt",
                                   op_torch_save, over=False, ref="np_save_new",
                                   mem="torch_save_new"))  # fmt: skip
        cases.append(save_case("raw_write_new", "raw: one write() to a new file", "raw",
                               op_raw_write, over=False, ref="np_save_new",
                               mem="raw_write_new"))  # fmt: skip

        def load_case(key: str, label: str, fmt: str, op: LoadOp, *, ref: str | None,
                      inner: int = 1) -> Case:  # fmt: skip
            path = self.src[fmt]
            return Case(key, label, "load", lambda: op(path, n), inner=inner, ref=ref, mem=key,
                        prefault=warm if inner == 1 else 0)  # fmt: skip

        cases.append(load_case("tsr_load_mmap", "tsr.load (mmap, default)", "tsr", op_tsr_load,
                               ref="np_load_mmap", inner=fast_inner))  # fmt: skip
        cases.append(load_case("np_load_mmap", 'np.load(mmap_mode="r")  [ref]', "npy",
                               op_np_load_mmap, ref=None, inner=fast_inner))  # fmt: skip
        cases.append(load_case("tsr_load_copy", "tsr.load(mmap=False)", "tsr", op_tsr_load_copy,
                               ref="np_load"))  # fmt: skip
        cases.append(load_case("np_load", "np.load  [ref]", "npy", op_np_load, ref=None))
        if HAVE_SAFETENSORS:
            cases.append(load_case("st_load", "safetensors load_file", "safetensors",
                                   op_st_load, ref="np_load"))  # fmt: skip
        if HAVE_TORCH:
            cases.append(load_case("torch_load", "torch.load", "pt", op_torch_load,
                                   ref="np_load"))  # fmt: skip
        cases.append(load_case("raw_readinto", "raw: readinto np.empty", "raw", op_raw_readinto,
                               ref="np_load"))  # fmt: skip

        tsr_path = self.src["tsr"]
        buf = self.file_bytes
        head = buf[: tsr.HEADER_SIZE]
        decode_raw = tsr.header.decode_raw
        check = tsr.header.check
        parse = tsr._schema.HEADER.parse

        def decode_check() -> object:
            h = decode_raw(head)
            check(h, None, strict=True, reserved_dtypes=False)
            return h

        cases += [
            Case("read_header", "tsr.read_header", "header", lambda: tsr.read_header(tsr_path),
                 inner=fast_inner),
            Case("from_bytes", "tsr.from_bytes (whole file in memory)", "header",
                 lambda: tsr.from_bytes(buf), inner=fast_inner),
            Case("parse", "64 B: decode_raw + check", "header", decode_check, inner=2000),
            Case("decode_raw", "64 B: decode_raw alone", "header", lambda: decode_raw(head),
                 inner=2000, ref="parse"),
            Case("construct", "64 B: construct HEADER.parse (interpreted)", "header",
                 lambda: parse(head), inner=200, ref="parse"),
        ]  # fmt: skip
        return cases

    def measure_memory(self) -> None:
        for case in self.cases:
            if case.mem is None:
                continue
            spec: dict[str, Any] = {
                "case": case.mem,
                "count": self.count,
                "shape": list(self.shape),
                "warm_dir": self.warm_dir,
            }
            if case.mem in MEM_SAVES:
                fmt, _, over = MEM_SAVES[case.mem]
                out = self._out(FORMATS[fmt][0])
                _unlink(out)
                if over:
                    assert self.arr is not None
                    FORMATS[fmt][1](out, self.arr)
                os.sync()
                spec["path"] = out
                try:
                    case.peak, case.peak_exact = run_driver(spec)
                finally:
                    _unlink(out)
            else:
                spec["path"] = self.src[MEM_LOADS[case.mem][0]]
                case.peak, case.peak_exact = run_driver(spec)


def default_rounds(nbytes: int) -> int:
    if nbytes <= 64 * KIB:
        return 30
    if nbytes <= 16 * MIB:
        return 15
    return 5


def run_rounds(cases: list[Case], rounds: int, label: str, *, warm_up: bool) -> None:
    for r in range(-1 if warm_up else 0, rounds):  # round -1 warms up and is discarded
        # a fresh (seeded) order every round: each case follows different neighbours, so
        # what one leaves behind (freed page cache, warm kernel paths) favours none
        order = random.Random(r).sample(cases, len(cases))
        status = "warm-up" if r < 0 else f"round {r + 1}/{rounds}"
        print(f"  {label}: {status}", file=sys.stderr, flush=True)
        for case in order:
            t = sample(case)
            if r >= 0:
                case.samples.append(t)


# ----------------------------------------------------------------------------- contention


@dataclass(frozen=True)
class CpuClock:
    """CPU seconds used by the whole machine and by this process (with its children)."""

    wall: float
    busy: float
    own: float

    @staticmethod
    def now() -> CpuClock:
        busy = 0.0
        with contextlib.suppress(OSError, ValueError), open("/proc/stat") as f:
            # user nice system idle iowait irq softirq steal (guest time is inside user)
            v = [int(x) for x in f.readline().split()[1:9]]
            busy = (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return CpuClock(time.perf_counter(), busy, own)

    def others_share(self, later: CpuClock) -> float | None:
        """Share of all CPUs that other processes (and the kernel) used in between."""
        span = (later.wall - self.wall) * (os.cpu_count() or 1)
        if not self.busy or span <= 0:
            return None
        return max(0.0, (later.busy - self.busy) - (later.own - self.own)) / span


def fmt_share(share: float | None) -> str:
    return "?" if share is None else f"{share:.0%}"


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


# ----------------------------------------------------------------------------- output


def size_label(nbytes: int) -> str:
    for unit, name in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if nbytes >= unit and nbytes % unit == 0:
            return f"{nbytes // unit} {name}"
    return f"{nbytes} B"


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": KIB, "M": MIB, "G": GIB}.get(text[-1:], 1)
    value = int(text[:-1] if mult != 1 else text) * mult
    if value <= 0 or value % 4:
        raise argparse.ArgumentTypeError(f"size {text!r}: need a positive multiple of 4 bytes")
    return value


def fmt_us(us: float) -> str:
    if us < 10:
        return f"{us:.2f}"
    if us < 1000:
        return f"{us:.1f}"
    return f"{us:,.0f}"


def fmt_bytes(n: int) -> str:
    if abs(n) >= MIB:
        return f"{n / MIB:+.1f} MiB"
    return f"{n / KIB:+.0f} KiB"


def print_table(sr: SizeRun, rounds: int) -> None:
    by_key = {c.key: c for c in sr.cases}
    print()
    print(
        f"== {size_label(sr.nbytes)}: FP32 {sr.shape}, file {sr.nbytes + 64:,} B, "
        f"{rounds} rounds; other processes used {fmt_share(sr.others)} of the CPUs =="
    )
    print(
        f"{'operation':<46} {'median µs':>11} {'min µs':>11} {'×ref':>6}  "
        "peak RSS growth (× payload)"
    )
    titles = {"save": "save", "load": "load", "header": "header (payload not read)"}
    group = ""
    for c in sr.cases:
        if c.group != group:
            group = c.group
            print(f"{titles[group]}:")
        ratio = ""
        if c.ref is not None and c.ref in by_key:
            ratio = f"{c.ratio(by_key[c.ref]):.2f}"
        mem = ""
        if c.peak is not None:
            mem = fmt_bytes(c.peak)
            if sr.nbytes >= MIB:
                mem += f" ({c.peak / sr.nbytes:.2f}×)"
            if not c.peak_exact:
                mem += " (lower bound)"
        print(f"  {c.label:<44} {fmt_us(c.median):>11} {fmt_us(c.min):>11} {ratio:>6}  {mem}")


def verdict(ok: bool) -> str:
    return "MET " if ok else "MISS"


def print_targets(runs: list[SizeRun]) -> None:
    print()
    print("== targets (medians; ratios: median of per-round ratios, [ratio of the mins]) ==")

    def get(sr: SizeRun, key: str) -> Case | None:
        return next((c for c in sr.cases if c.key == key), None)

    def per_size(key: str, limit_us: float, label: str) -> None:
        parts = []
        ok = True
        for sr in runs:
            c = get(sr, key)
            if c is None:
                continue
            ok &= c.median <= limit_us
            parts.append(f"{size_label(sr.nbytes)} {fmt_us(c.median)} [{fmt_us(c.min)}]")
        print(f"  {verdict(ok)} {label} <= {limit_us:g} µs: " + ", ".join(parts))

    per_size("tsr_load_mmap", 50, "tsr.load (mmap)")
    per_size("read_header", 15, "tsr.read_header")
    per_size("parse", 3, "parse 64 B (decode_raw + check)")

    def ratio_target(key: str, ref: str, label: str, no_copy: bool, target: bool = True) -> None:
        parts = []
        ok = True
        for sr in runs:
            c, r = get(sr, key), get(sr, ref)
            if c is None or r is None:
                continue
            ratio = c.ratio(r)
            ok &= ratio <= 1.0
            text = f"{size_label(sr.nbytes)} {ratio:.2f}× [{c.min / r.min:.2f}×]"
            if c.peak is not None and sr.nbytes >= MIB:
                share = c.peak / sr.nbytes
                mem_ok = share < 0.05 if no_copy else share < 1.05
                ok &= mem_ok
                text += f" mem {share:.2f}×{'' if mem_ok else '!'}"
            parts.append(text)
        print(f"  {verdict(ok) if target else 'info'} {label}: " + ", ".join(parts))

    ratio_target("tsr_load_copy", "np_load", "tsr.load(mmap=False) <= 1.0× np.load, "
                 "peak one payload", no_copy=False)  # fmt: skip
    ratio_target("tsr_save_new", "np_save_new", "tsr.save new path <= 1.0× np.save new path, "
                 "no copy", no_copy=True)  # fmt: skip
    ratio_target("tsr_save_over", "np_save_over", "tsr.save over existing <= 1.0× np.save over "
                 "existing, no copy", no_copy=True)  # fmt: skip
    ratio_target("tsr_save_over", "np_save_new", "(not a target) tsr.save over existing vs "
                 "np.save to a new path", no_copy=True, target=False)  # fmt: skip
    print("  (memory: save 'no copy' = peak growth < 0.05× payload; load 'one payload' = "
          "< 1.05×; checked at sizes >= 1 MiB)")  # fmt: skip


def mount_of(path: str) -> str:
    real = os.path.realpath(path)
    best = ("", "?", "?")
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            _dev, mnt, fstype, opts, *_ = line.split()
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best[0]):
                best = (mnt, fstype, opts)
    return f"{best[1]} ({best[2]}) at {best[0]}"


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def print_environment(workdir: str) -> None:
    thp = "?"
    with contextlib.suppress(OSError), open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
        thp = f.read().strip()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"tsr {tsr.__version__} ({os.path.dirname(tsr.__file__ or '?')}), "
        f"torch {version_of('torch')}, safetensors {version_of('safetensors')}"
    )
    print(
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, THP {thp}, "
        f"load average {loadavg()}"
    )
    print(f"files in {workdir}: {mount_of(workdir)}")
    print(page_reporting())


def page_reporting() -> str:
    """Whether this (virtual) machine hands free memory back to its host."""
    base = "/sys/module/page_reporting/parameters"
    try:
        with open(f"{base}/reported_kib") as f:
            reported = int(f.read())
    except (OSError, ValueError):
        return "free page reporting: not seen"
    return f"free page reporting: on ({reported / (1 << 20):.0f} GiB handed back since boot)"


def print_method(prefault_on: bool) -> None:
    print()
    print(
        "Method: each sample starts after an untimed os.sync() (no pending writeback).\n"
        "'new path' saves start with the target absent; 'over existing' saves start with a\n"
        "same-size file written and synced (clean, on disk) at the target; outputs are\n"
        "unlinked after each sample. Loads read sources written and synced once per size,\n"
        "from a warm page cache (nothing dropped). Cases run in rounds, shuffled afresh\n"
        "every round; below 64 MiB a first warm-up round is discarded (the smaller sizes, run\n"
        "first, warm up the code paths for the big ones). µs-scale calls are timed in batches\n"
        "(per-call time). Median/min over rounds; ×ref = median over rounds of (time / the\n"
        "reference's time in the same round). Peak RSS growth: one fresh subprocess per\n"
        "case, warm-up call on a 4 KiB input, VmHWM reset via /proc/self/clear_refs,\n"
        "growth = VmHWM after the call - VmHWM before."
    )
    if prefault_on:
        print(
            "Prefault: at sizes >= 64 MiB, 1.5x the payload of memory is touched and freed\n"
            "(untimed) right before each save and non-mmap load sample, so every case allocates\n"
            "from memory the hypervisor has backed (see prefault() in this script)."
        )


# ----------------------------------------------------------------------------- main


def check_resources(workdir: str, sizes: list[int]) -> None:
    biggest = max(sizes)
    need_disk = 8 * biggest + 256 * MIB  # 5 load sources + old, new and temp save files
    free = shutil.disk_usage(workdir).free
    if free < need_disk:
        raise SystemExit(
            f"not enough disk in {workdir}: {free / GIB:.1f} GiB free, "
            f"{need_disk / GIB:.1f} GiB needed for {size_label(biggest)}"
        )
    avail = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * KIB
    if avail and avail < 6 * biggest:
        print(
            f"warning: {avail / GIB:.1f} GiB available memory; {size_label(biggest)} needs "
            f"about {6 * biggest / GIB:.0f} GiB (page cache + arrays); figures may suffer",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", help=f"payload sizes (default {DEFAULT_SIZES})")
    parser.add_argument("--repeat", type=int, help="rounds per size (default: 30 to 5 by size)")
    parser.add_argument("--dir", help="parent of the scratch directory (default: /tmp)")
    parser.add_argument(
        "--quick", action="store_true", help=f"sizes {QUICK_SIZES}, 5 rounds (about 15 s)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocesses")
    parser.add_argument(
        "--no-prefault",
        action="store_true",
        help="do not touch 1.5x the payload of memory before each big save/load sample",
    )
    parser.add_argument("--driver", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.driver:
        driver(json.loads(args.driver))
        return 0

    sizes = [parse_size(s) for s in (args.sizes or (QUICK_SIZES if args.quick else
                                                    DEFAULT_SIZES)).split(",")]  # fmt: skip
    repeat: int | None = args.repeat if args.repeat else (5 if args.quick else None)
    if repeat is not None and repeat < 1:
        parser.error("--repeat must be >= 1")
    parent = args.dir or tempfile.gettempdir()
    os.makedirs(parent, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="tsr-bench-", dir=parent)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below
    started = time.perf_counter()
    runs: list[SizeRun] = []
    try:
        check_resources(workdir, sizes)
        print_environment(workdir)
        warm_dir = os.path.join(workdir, "warm")
        os.makedirs(warm_dir)
        tiny = np.arange(1024, dtype=np.float32)
        for fmt, (suffix, save_op) in FORMATS.items():
            if available(fmt):  # also imports torch and safetensors before any timing
                save_op(os.path.join(warm_dir, "warm" + suffix), tiny)
        for fmt, load_op in MEM_LOADS.values():
            if available(fmt):
                load_op(os.path.join(warm_dir, "warm" + FORMATS[fmt][0]), tiny.size)
        crowd_dir = os.path.join(workdir, "crowd")
        os.makedirs(crowd_dir)
        for k in range(CROWD_FILES):
            with open(os.path.join(crowd_dir, f"ckpt-{k:06d}.tsr"), "wb"):
                pass
        start = CpuClock.now()
        for i, nbytes in enumerate(sizes):
            label = size_label(nbytes)
            print(f"{label}: writing sources", file=sys.stderr, flush=True)
            sr = SizeRun(nbytes, os.path.join(workdir, f"s{i}"), warm_dir, crowd_dir)
            sr.prefault = not args.no_prefault
            sr.prepare()
            rounds = repeat or default_rounds(nbytes)
            before = CpuClock.now()
            run_rounds(sr.cases, rounds, label, warm_up=nbytes < BIG_BYTES)
            sr.others = before.others_share(CpuClock.now())
            if not args.no_memory and nbytes >= MEM_MIN_BYTES:
                print(f"  {label}: peak memory (subprocesses)", file=sys.stderr, flush=True)
                sr.measure_memory()
            print_table(sr, rounds)
            sys.stdout.flush()
            sr.release()
            runs.append(sr)
        print_targets(runs)
        print_method(not args.no_prefault)
        print(
            f"\ntotal wall time {time.perf_counter() - started:.0f} s; other processes used "
            f"{fmt_share(start.others_share(CpuClock.now()))} of the CPUs meanwhile; "
            f"load average {loadavg()}"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
