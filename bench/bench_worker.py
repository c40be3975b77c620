"""Round trips, idle latency, idle CPU and start-up of the reference worker, against the
same worker polling like upstream.

Workers compared (both ``python -m tsr_worker``, so the only difference is how they wait):

* ours: ``--wait inotify``, event-driven;
* upstream-like: ``--wait upstream``, the upstream loop's 32 ms -> 1024 ms adaptive sleep.

Clients (``tsr_worker.Session``): ``tight`` checks for the reply every 0.1 ms, so the
worker's own latency shows; ``backoff`` polls like the C++ client (32 ms, doubling every 8
misses), which is what a C++ program sees.

    .venv/bin/python bench/bench_worker.py                 # the full run (~2.5 min)
    .venv/bin/python bench/bench_worker.py --idle-s 2 --idle-samples 1 --quick

Prints one table; ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from tsr_worker import Session

MODES = {"ours": "inotify", "upstream-like": "upstream"}
REFERENCE = {  # the upstream worker, measured on the project's reference machine
    "start-up to running": "1200",
    "hello, tight client": "32.7",
    "hello after idle, tight client": "693",
    "matmul 256x256, tight client": "33.9",
    "idle CPU (%)": "0.03-0.13",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def ms(seconds: float) -> float:
    return seconds * 1000


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def summary(values_s: Sequence[float]) -> str:
    v = [ms(x) for x in values_s]
    if len(v) == 1:
        return f"{v[0]:.2f}"
    return f"{statistics.median(v):.2f} / {pct(v, 0.9):.2f}"


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wakeups(pid: int) -> int:
    """Voluntary context switches of all the process's threads."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def timed(n: int, fn: Callable[[], object]) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def start_up(workspace: Path, wait: str, worker_args: list[str], runs: int) -> dict[str, float]:
    """Median times from spawn to status running, to the first hello answered, and to the
    first matmul answered (torch imported)."""
    to_running, to_hello, to_matmul = [], [], []
    a, b = torch.ones(4, 3), torch.ones(3, 5)
    for i in range(runs):
        d = workspace / "startup" / f"tr_session_{wait}_{i}"
        d.mkdir(parents=True)
        s = Session(session_dir=str(d), poll="tight", worker_args=worker_args)
        cmd = [sys.executable, "-m", "tsr_worker", "--session-dir", str(d), "--wait", wait,
               *worker_args]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        status = d / "status.txt"
        while not (status.exists() and status.read_text() == "running"):
            time.sleep(0.0002)
        to_running.append(time.perf_counter() - start)
        s.send_request('{"cmd": "hello", "params": "x"}')
        s.wait_for_response(60000)
        to_hello.append(time.perf_counter() - start)
        s.calculate("matmul", a, b, timeout_ms=60000)
        to_matmul.append(time.perf_counter() - start)
        (d / "exit.flag").touch()
        proc.wait(30)
        shutil.rmtree(d)
    return {
        "running": statistics.median(to_running),
        "hello": statistics.median(to_hello),
        "matmul": statistics.median(to_matmul),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--idle-s", type=float, default=30.0, help="idle time before a probe")
    p.add_argument("--idle-samples", type=int, default=3, help="idle periods to measure")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--threads", type=int, default=0, help="worker torch threads (0: default)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    n_tight, n_backoff, n_start = (50, 10, 2) if args.quick else (300, 40, 5)
    worker_args = ["--idle-timeout", "0", "--log-level", "error"]
    if args.threads:
        worker_args += ["--threads", str(args.threads)]

    results: dict[str, dict[str, str]] = {}

    def put(row: str, mode: str, value: str) -> None:
        results.setdefault(row, {})[mode] = value

    a, b = torch.randn(256, 256), torch.randn(256, 256)
    with tempfile.TemporaryDirectory(prefix="bench_worker_") as tmp:
        ws = Path(tmp)
        for mode, wait in MODES.items():
            st = start_up(ws, wait, worker_args, n_start)
            put("start-up to running", mode, f"{ms(st['running']):.0f}")
            put("start-up to first hello answered", mode, f"{ms(st['hello']):.0f}")
            put("start-up to first matmul answered", mode, f"{ms(st['matmul']):.0f}")

        sessions: dict[tuple[str, str], Session] = {}
        try:
            for mode, wait in MODES.items():
                for poll in ("tight", "backoff"):
                    s = Session(
                        f"{wait}_{poll}", workspace=str(ws), poll=poll,
                        worker_args=[*worker_args, "--wait", wait],
                    )  # fmt: skip
                    sessions[mode, poll] = s
                    s.start()
                    s.calculate("matmul", a, b, timeout_ms=60000)  # torch loaded, warm

            hello = '{"cmd": "hello", "params": "world"}'
            for (mode, poll), s in sessions.items():
                n = n_tight if poll == "tight" else n_backoff
                t = timed(n, partial(s.fetch_response, hello))
                put(f"hello, {poll} client", mode, summary(t))
                t = timed(n, partial(s.calculate, "matmul", a, b))
                put(f"matmul 256x256, {poll} client", mode, summary(t))

            # Idle: every worker idles at once; then each is probed once, so each probe
            # finds its worker idle for the whole period. CPU and wake-ups are counted
            # over the idle period.
            idle: dict[tuple[str, str], list[float]] = {k: [] for k in sessions}
            cpu: dict[str, list[float]] = {m: [] for m in MODES}
            wake: dict[str, list[float]] = {m: [] for m in MODES}
            for _ in range(args.idle_samples):
                before = {}
                for key, s in sessions.items():
                    assert s.process is not None
                    before[key] = (cpu_ticks(s.process.pid), wakeups(s.process.pid))
                start = time.perf_counter()
                time.sleep(args.idle_s)
                elapsed = time.perf_counter() - start
                for key, s in sessions.items():
                    assert s.process is not None
                    ticks, woke = cpu_ticks(s.process.pid), wakeups(s.process.pid)
                    cpu[key[0]].append((ticks - before[key][0]) / CLK_TCK / elapsed * 100)
                    wake[key[0]].append((woke - before[key][1]) / elapsed)
                for key, s in sessions.items():
                    idle[key] += timed(1, partial(s.fetch_response, hello))
            for (mode, poll), values in idle.items():
                row = f"hello after idle, {poll} client"
                put(row, mode, " ".join(f"{ms(v):.1f}" for v in values))
            for mode in MODES:
                put("idle CPU (%)", mode, f"{statistics.mean(cpu[mode]):.3f}")
                put("idle wake-ups per s", mode, f"{statistics.mean(wake[mode]):.2f}")
        finally:
            for s in sessions.values():
                s.close()

    torch.set_num_threads(args.threads or torch.get_num_threads())
    compute = timed(n_tight, lambda: torch.mm(a, b))
    put("matmul 256x256 computation alone (in process)", "ours", summary(compute))

    rows = list(results)
    width = max(len(r) for r in rows) + 2
    print(f"\nbench_worker: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"torch {torch.__version__} ({args.threads or torch.get_num_threads()} threads), "
          f"idle {args.idle_s:g} s x {args.idle_samples}")  # fmt: skip
    print("times in ms; a / b = median / p90; idle probes listed one by one\n")
    header = f"{'':{width}}{'ours (inotify)':>20}{'upstream-like (poll)':>24}{'upstream ref.':>16}"
    print(header)
    print("-" * len(header))
    for row in rows:
        r = results[row]
        ref = REFERENCE.get(row, "")
        line = f"{row:{width}}{r.get('ours', ''):>20}{r.get('upstream-like', ''):>24}{ref:>16}"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
