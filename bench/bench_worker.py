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
    .venv/bin/python bench/bench_worker.py --fuse-only     # only the FUSE table (~1 min)

Prints one table; ``--json PATH`` also writes the numbers. With ``--fuse`` (as root, with
``bindfs``: ``scripts/setup-fuse.sh``) a second table: the session directory on a bindfs
mount that the worker serves while the client works in the backing directory, as a
client on another machine does; the default mode (``auto``, which polls there) against
the upstream-like schedule. Its CPU figures are the worker's and its FUSE daemon's.
"""

from __future__ import annotations

import argparse
import contextlib
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
FUSE_MODES = {"ours": "auto", "upstream-like": "upstream"}
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


def fuse_bench(
    args: argparse.Namespace, worker_args: list[str], n: int
) -> dict[str, dict[str, str]] | str:
    """The FUSE table (see the module docstring), or why it cannot be measured here."""
    if shutil.which("bindfs") is None or os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        return "needs root, /dev/fuse and bindfs (scripts/setup-fuse.sh)"
    rows: dict[str, dict[str, str]] = {}

    def put(row: str, mode: str, value: str) -> None:
        rows.setdefault(row, {})[mode] = value

    def spread(values_s: Sequence[float]) -> str:
        v = [ms(x) for x in values_s]
        return f"{statistics.median(v):.1f} / {pct(v, 0.9):.1f} / {max(v):.1f}"

    a, b = torch.randn(256, 256), torch.randn(256, 256)
    hello = '{"cmd": "hello", "params": "world"}'
    with tempfile.TemporaryDirectory(prefix="bench_fuse_") as tmp:
        mounts: list[Path] = []
        procs: list[subprocess.Popen[bytes]] = []
        daemons: dict[str, int] = {}
        sessions: dict[tuple[str, str], tuple[Session, subprocess.Popen[bytes]]] = {}
        try:
            for mode, wait in FUSE_MODES.items():
                far, mnt = Path(tmp, f"far_{wait}"), Path(tmp, f"mnt_{wait}")
                far.mkdir()
                mnt.mkdir()
                subprocess.run(["bindfs", str(far), str(mnt)], check=True)
                mounts.append(mnt)
                found = subprocess.run(
                    ["pgrep", "-n", "-f", f"bindfs {far} {mnt}"],
                    check=False, capture_output=True, text=True,
                )  # fmt: skip
                if found.stdout.strip():
                    daemons[mode] = int(found.stdout.split()[0])
                for poll in ("tight", "backoff"):
                    d = f"tr_session_{poll}"
                    s = Session(session_dir=str(far / d), poll=poll)
                    cmd = [sys.executable, "-m", "tsr_worker", "--session-dir", str(mnt / d),
                           "--wait", wait, "--client-pid", "0", *worker_args]  # fmt: skip
                    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
                    procs.append(proc)
                    sessions[mode, poll] = (s, proc)
                    s.calculate("matmul", a, b, timeout_ms=60000)  # up, torch loaded
            for (mode, poll), (s, _) in sessions.items():
                count = n if poll == "tight" else max(10, n // 5)
                put(f"hello, {poll} client", mode, spread(timed(count, partial(
                    s.fetch_response, hello))))  # fmt: skip
                put(f"matmul 256x256, {poll} client", mode, spread(timed(
                    max(10, count // 2), partial(s.calculate, "matmul", a, b))))  # fmt: skip
            # CPU in the active window: just after a request, no request coming
            for (mode, poll), (s, proc) in sessions.items():
                if poll != "tight":
                    continue
                s.fetch_response(hello)
                t0, c0 = time.perf_counter(), cpu_ticks(proc.pid)
                d0 = cpu_ticks(daemons[mode]) if mode in daemons else 0
                time.sleep(1.5)
                el = time.perf_counter() - t0
                put("CPU (%) 1.5 s after a request, worker", mode,
                    f"{(cpu_ticks(proc.pid) - c0) / CLK_TCK / el * 100:.1f}")  # fmt: skip
                if mode in daemons:
                    put("CPU (%) 1.5 s after a request, FUSE daemon", mode,
                        f"{(cpu_ticks(daemons[mode]) - d0) / CLK_TCK / el * 100:.1f}")  # fmt: skip
            idle: dict[tuple[str, str], list[float]] = {k: [] for k in sessions}
            cpu: dict[str, list[float]] = {m: [] for m in FUSE_MODES}
            dcpu: dict[str, list[float]] = {m: [] for m in FUSE_MODES}
            for _ in range(args.idle_samples):
                before = {k: cpu_ticks(p.pid) for k, (_, p) in sessions.items()}
                dbefore = {m: cpu_ticks(pid) for m, pid in daemons.items()}
                t0 = time.perf_counter()
                time.sleep(args.idle_s)
                el = time.perf_counter() - t0
                for key, (_, p) in sessions.items():
                    cpu[key[0]].append((cpu_ticks(p.pid) - before[key]) / CLK_TCK / el * 100)
                for m, pid in daemons.items():
                    dcpu[m].append((cpu_ticks(pid) - dbefore[m]) / CLK_TCK / el * 100 / 2)
                for key, (s, _) in sessions.items():
                    idle[key] += timed(1, partial(s.fetch_response, hello))
            for (mode, poll), values in idle.items():
                put(f"hello after idle, {poll} client", mode,
                    " ".join(f"{ms(v):.1f}" for v in values))  # fmt: skip
            for mode in FUSE_MODES:
                put("idle CPU (%), worker", mode, f"{statistics.mean(cpu[mode]):.3f}")
                if dcpu[mode]:
                    put("idle CPU (%), FUSE daemon (per worker)", mode,
                        f"{statistics.mean(dcpu[mode]):.3f}")  # fmt: skip
        finally:
            for s, _ in sessions.values():
                with contextlib.suppress(OSError):
                    Path(s.session_dir, "exit.flag").touch()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            for mnt in mounts:
                subprocess.run(["fusermount", "-u", str(mnt)], check=False)
    return rows


def print_table(
    results: dict[str, dict[str, str]], columns: dict[str, str], ref: dict[str, str]
) -> None:
    rows = list(results)
    width = max(len(r) for r in rows) + 2
    header = f"{'':{width}}" + "".join(f"{title:>24}" for title in columns.values())
    header += f"{'upstream ref.':>16}" if ref else ""
    print(header)
    print("-" * len(header))
    for row in rows:
        r = results[row]
        line = f"{row:{width}}" + "".join(f"{r.get(m, ''):>24}" for m in columns)
        print(line + (f"{ref.get(row, ''):>16}" if ref else ""))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--idle-s", type=float, default=30.0, help="idle time before a probe")
    p.add_argument("--idle-samples", type=int, default=3, help="idle periods to measure")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--threads", type=int, default=0, help="worker torch threads (0: default)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--fuse", action="store_true", help="also the FUSE table")
    p.add_argument("--fuse-only", action="store_true", help="only the FUSE table")
    args = p.parse_args(argv)
    n_tight, n_backoff, n_start = (50, 10, 2) if args.quick else (300, 40, 5)
    worker_args = ["--idle-timeout", "0", "--log-level", "error"]
    if args.threads:
        worker_args += ["--threads", str(args.threads)]

    results: dict[str, dict[str, str]] = {}

    def put(row: str, mode: str, value: str) -> None:
        results.setdefault(row, {})[mode] = value

    if args.fuse or args.fuse_only:
        fuse = fuse_bench(args, worker_args, n_tight // 2)
        print(f"\nbench_worker, FUSE (bindfs, client behind the mount): {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f}, idle {args.idle_s:g} s x "
              f"{args.idle_samples}")  # fmt: skip
        if isinstance(fuse, str):
            print(f"not measured: {fuse}")
        else:
            print("times in ms: median / p90 / worst; idle probes listed one by one\n")
            print_table(fuse, {"ours": "ours (auto: poll)", "upstream-like": "upstream-like"}, {})
            if args.json:
                Path(args.json).with_suffix(".fuse.json").write_text(json.dumps(fuse, indent=1))
        if args.fuse_only:
            return 0

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
