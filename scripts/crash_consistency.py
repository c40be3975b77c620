#!/usr/bin/env python3
"""Crash consistency of ``tsr.save``: SIGKILL the writer at random moments.

Usage (from the repository root)::

    .venv/bin/python scripts/crash_consistency.py [--trials 200] [--size-mib 64]
        [--modes new,replace] [--dir DIR] [--seed N] [--fsync] [--json FILE]

For each mode, ``--trials`` times: a child process builds a tensor of ``--size-mib`` MiB,
reports that it is about to call ``tsr.save`` (target: a new path in mode ``new``, an
existing file holding the old tensor in mode ``replace``), and is killed with SIGKILL. Three
quarters of the kills come after a random delay drawn over the save's measured duration
(a third of those aimed at its last 20 %); the other quarter at a pause injected into the
child right before or right after the rename (``os.replace`` or ``RENAME_EXCHANGE``),
moments a random delay rarely hits. Then the target must hold nothing (``new``) or
the old file (``replace``), or the complete new file, compared byte for byte; never a
partial file. Whatever temp files the kill left (``.<name>.tsr-tmp-<16 hex>``; their
writer's lock died with it) must be
removed by the first ``tsr.save`` into the directory from a new process; the directory
must then hold nothing else. Prints a summary (outcomes, what the kill left behind,
durations); exit status 1 if any trial failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import tsr  # noqa: E402

TARGET = "target.tsr"
TMP_MARK = ".tsr-tmp-"

CLEANER = "import sys, numpy, tsr; tsr.save(sys.argv[1], numpy.zeros(1, numpy.float32))"

CHILD = r"""
import os, sys, time
import tsr, tsr._io
target, mib, fsync = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
fd, point = int(sys.argv[4]), sys.argv[5]
sys.path.insert(0, os.environ["TSR_CC_REPO"])
from scripts.crash_consistency import tensor

def pause(where):
    if where == point:
        os.write(fd, b"P")
        time.sleep(60)  # killed here

real_exchange, real_replace = tsr._io._exchange, os.replace
def exchange(a, b):
    pause("before_rename")
    swapped = real_exchange(a, b)
    if swapped:
        pause("after_rename")  # the old file is now the temp, not yet unlinked
    return swapped
def replace(a, b):
    pause("before_rename")
    real_replace(a, b)
    pause("after_rename")
if point != "none":
    tsr._io._exchange, os.replace = exchange, replace

arr = tensor("new", mib)
os.write(fd, b"R")
tsr.save(target, arr, fsync=fsync)
os.write(fd, b"D")
"""


def tensor(which: str, mib: int) -> npt.NDArray[np.int32]:
    """The old or the new tensor: distinct shapes, sizes and contents."""
    n = mib * (1 << 20) // 4
    if which == "old":
        return np.arange(n, dtype=np.int32)
    n += 1024  # the new file is 4 KiB longer: a mix of the two cannot pass for either
    return (np.arange(n, dtype=np.int32)[::-1] * 7 + 3).reshape(n // 1024, 1024)


@dataclass
class Trial:
    mode: str
    kill_at: str  # "none" (after delay_s) or the injected pause: before/after_rename
    delay_s: float
    outcome: str  # absent / old / new, or PARTIAL:<size> / OTHER:<size>
    left: str  # what the kill left beside the target
    temps_left: int
    completed_before_kill: bool
    cleaned: bool
    stray: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        allowed = {"new": {"absent", "new"}, "replace": {"old", "new"}}[self.mode]
        return self.outcome in allowed and self.cleaned and not self.stray


@dataclass
class Summary:
    size_mib: int
    fsync: bool
    directory: str
    save_seconds: dict[str, float]
    """Median duration of a complete save per mode (calibration, 3 runs each)."""
    trials: list[Trial] = field(default_factory=list)
    total_seconds: float = 0.0

    @property
    def failures(self) -> list[Trial]:
        return [t for t in self.trials if not t.ok]

    def histogram(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for mode in sorted({t.mode for t in self.trials}):
            mine = [t for t in self.trials if t.mode == mode]
            out[mode] = {
                **{f"target={k}": v for k, v in sorted(Counter(t.outcome for t in mine).items())},
                **{f"left={k}": v for k, v in sorted(Counter(t.left for t in mine).items())},
                **{f"kill_at={k}": v for k, v in sorted(Counter(t.kill_at for t in mine).items())},
                "kill_after_save_returned": sum(t.completed_before_kill for t in mine),
                "temps_cleaned_by_next_save": sum(t.temps_left for t in mine if t.cleaned),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        trial_s = [t.seconds for t in self.trials]
        delays = [t.delay_s for t in self.trials]
        return {
            "trials": len(self.trials),
            "failures": len(self.failures),
            "size_mib": self.size_mib,
            "fsync": self.fsync,
            "directory": self.directory,
            "save_seconds": self.save_seconds,
            "kill_delay_seconds": _stats(delays),
            "trial_seconds": _stats(trial_s),
            "total_seconds": round(self.total_seconds, 1),
            "histogram": self.histogram(),
            "failed_trials": [asdict(t) for t in self.failures[:20]],
        }


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "min": round(min(values), 4),
        "median": round(statistics.median(values), 4),
        "max": round(max(values), 4),
    }


class Runner:
    def __init__(self, directory: Path, mib: int, fsync: bool, rng: random.Random) -> None:
        self.dir = directory
        self.target = directory / TARGET
        self.mib = mib
        self.fsync = fsync
        self.rng = rng
        self.old = tsr.to_bytes(tensor("old", mib))
        self.new = tsr.to_bytes(tensor("new", mib))
        self.env = {**os.environ, "TSR_CC_REPO": str(REPO)}
        self.env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])

    def spawn(self, point: str = "none") -> tuple[subprocess.Popen[bytes], int]:
        r, w = os.pipe()
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(self.target), str(self.mib),
             "1" if self.fsync else "0", str(w), point],
            pass_fds=(w,),
            env=self.env,
            cwd=REPO,
        )  # fmt: skip
        os.close(w)
        return proc, r

    @staticmethod
    def wait_for(fd: int, token: bytes, timeout_s: float) -> float | None:
        """Time at which ``token`` arrived on ``fd``, or None (EOF or time-out)."""
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            return None
        got = os.read(fd, 1)
        return time.monotonic() if got == token else None

    def calibrate(self, mode: str, runs: int = 3) -> list[float]:
        """Durations of complete saves in ``mode`` (child side, ready to done)."""
        out = []
        for _ in range(runs):
            self.prepare(mode)
            proc, r = self.spawn()
            try:
                t0 = self.wait_for(r, b"R", 120)
                t1 = self.wait_for(r, b"D", 120)
                if t0 is None or t1 is None:
                    raise RuntimeError("calibration child did not report")
                out.append(t1 - t0)
            finally:
                os.close(r)
                proc.wait()
        self.target.unlink()
        return out

    def prepare(self, mode: str) -> None:
        if mode == "replace":
            tsr.save(self.target, tensor("old", self.mib))
        elif self.target.exists():
            self.target.unlink()

    def classify(self) -> str:
        if not self.target.exists():
            return "absent"
        data = self.target.read_bytes()
        if data == self.old:
            return "old"
        if data == self.new:
            return "new"
        if len(data) < max(len(self.old), len(self.new)):
            return f"PARTIAL:{len(data)}"
        return f"OTHER:{len(data)}"

    def temps(self) -> list[Path]:
        return sorted(p for p in self.dir.iterdir() if p.name.startswith(f".{TARGET}{TMP_MARK}"))

    def describe_temps(self, temps: list[Path]) -> str:
        if not temps:
            return "nothing"
        kinds = []
        for p in temps:
            size = p.stat().st_size
            if size == len(self.new):
                kinds.append("full_temp" if p.read_bytes() == self.new else "odd_temp")
            elif size == len(self.old) and p.read_bytes() == self.old:
                kinds.append("old_file_as_temp")  # swapped out, not yet unlinked
            else:
                kinds.append("partial_temp")
        return "+".join(sorted(kinds))

    def trial(self, mode: str, delay: float, point: str) -> Trial:
        """One kill: ``delay`` seconds after the child starts saving, or (``point`` other
        than ``none``) as soon as the child pauses at that point of the save."""
        start = time.monotonic()
        self.prepare(mode)
        proc, r = self.spawn(point)
        try:
            if self.wait_for(r, b"R", 120) is None:
                raise RuntimeError("child did not start")
            if point == "none":
                time.sleep(delay)
            elif self.wait_for(r, b"P", 120) is None:
                raise RuntimeError(f"child did not reach {point}")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            ready, _, _ = select.select([r], [], [], 0)
            completed = bool(ready) and os.read(r, 1) == b"D"
        finally:
            os.close(r)
        outcome = self.classify()
        temps = self.temps()
        left = self.describe_temps(temps)
        # the first save to the directory in a new process removes the dead writer's temps
        subprocess.run([sys.executable, "-c", CLEANER, str(self.target)], check=True)
        cleaned = not self.temps()
        self.target.unlink()
        stray = [p.name for p in self.dir.iterdir()]
        for p in self.dir.iterdir():
            p.unlink()
        return Trial(mode, point, round(delay, 4), outcome, left, len(temps), completed,
                     cleaned, stray, time.monotonic() - start)  # fmt: skip


def run(
    *,
    trials: int,
    size_mib: int,
    modes: list[str],
    directory: Path | None,
    seed: int,
    fsync: bool,
    progress: bool = True,
    calibration_runs: int = 3,
) -> Summary:
    base = Path(tempfile.mkdtemp(prefix="tsr-crash-", dir=directory))
    rng = random.Random(seed)
    start = time.monotonic()
    try:
        runner = Runner(base, size_mib, fsync, rng)
        save_s: dict[str, float] = {}
        for mode in modes:
            cal = runner.calibrate(mode, calibration_runs)
            save_s[mode] = statistics.median(cal)
        summary = Summary(size_mib, fsync, str(base), {m: round(v, 4) for m, v in save_s.items()})
        plan = [(m, i) for i in range(trials) for m in modes]
        for n, (mode, i) in enumerate(plan, 1):
            t_save = save_s[mode]
            point, delay = "none", 0.0
            if i % 8 == 3:  # the two moments a random delay rarely hits
                point = "before_rename"
            elif i % 8 == 7:
                point = "after_rename"
            elif i % 4 == 1:  # aim at the end of the save
                delay = rng.uniform(0.8 * t_save, 1.0 * t_save)
            else:
                delay = rng.uniform(0.0, t_save)
            t = runner.trial(mode, delay, point)
            summary.trials.append(t)
            if progress and (n % 25 == 0 or not t.ok):
                bad = len(summary.failures)
                print(f"  {n}/{len(plan)} trials, {bad} failed", file=sys.stderr, flush=True)
        summary.total_seconds = time.monotonic() - start
        return summary
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200, help="trials per mode (default 200)")
    ap.add_argument("--size-mib", type=int, default=64, help="tensor size (default 64 MiB)")
    ap.add_argument("--modes", default="new,replace", help="new, replace or both")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: $TMPDIR)")
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--fsync", action="store_true", help="save with fsync=True")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= {"new", "replace"} or args.trials < 1:
        ap.error("--modes takes new and/or replace; --trials at least 1")
    summary = run(
        trials=args.trials,
        size_mib=args.size_mib,
        modes=modes,
        directory=args.dir,
        seed=args.seed,
        fsync=args.fsync,
    )
    out = summary.to_dict()
    out["sha256"] = {
        "old": hashlib.sha256(tsr.to_bytes(tensor("old", args.size_mib))).hexdigest(),
        "new": hashlib.sha256(tsr.to_bytes(tensor("new", args.size_mib))).hexdigest(),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    verdict = "FAIL" if summary.failures else "OK"
    print(
        f"{verdict}: {len(summary.trials)} trials ({', '.join(modes)}), "
        f"{len(summary.failures)} failed, {out['total_seconds']} s",
        file=sys.stderr,
    )
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
