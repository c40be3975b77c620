"""Users' servers on our loop: round-trip times, and how fast the V3 server clears a stale
answer.

* V1/V2 channel: ``hello`` round trips (request renamed in, response read and deleted) of
  the upstream-style ``tests/worker/upstream_style_server.py`` (a ``TechRenaissanceServer``
  subclass) against ``tsr-worker`` itself: what the compatibility layer costs.
* V3 channel (``tsr-worker <session_dir>``): for a no-tensor call, the time from
  ``request.json`` written to the new ``response.json`` there (the C++ client looks after
  100 ms; the stale one is removed before the request is read, see the tests).

    .venv/bin/python bench/bench_compat.py [--n 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "worker" / "upstream_style_server.py"


def wait(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > end:
            raise TimeoutError("timed out")
        time.sleep(0.0002)


def v1_round_trips(cmd: list[str], d: Path, n: int) -> list[float]:
    """Start ``cmd`` on session directory ``d``; ``n`` hello round trips in ms."""
    env = dict(os.environ, TSR_WORKSPACE=str(d.parents[1]))
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        wait((d / "status.txt").exists)
        out = []
        for i in range(n + 5):
            t0 = time.perf_counter()
            (d / "request.tmp").write_text(f'{{"cmd": "hello", "params": "w{i}"}}')
            os.replace(d / "request.tmp", d / "request.json")
            wait((d / "response.json").exists)
            (d / "response.json").read_text()
            (d / "response.json").unlink()
            if i >= 5:  # warm-up
                out.append((time.perf_counter() - t0) * 1e3)
        (d / "exit.flag").touch()
        proc.wait(30)
        return out
    finally:
        proc.kill()


def v3_answer_times(d: Path, n: int) -> list[float]:
    """Calls of an unknown method: ms from the request written to its own answer there."""
    d.mkdir(parents=True)
    req = '{\n  "method": "m%d",\n  "parameters": {\n\n  }\n}\n'
    (d / "request.json").write_text(req % 0)
    proc = subprocess.Popen([sys.executable, "-m", "tsr_worker", str(d)], stderr=subprocess.DEVNULL)
    response = d / "response.json"

    def answered(i: int) -> bool:
        try:
            return f'"Unknown method: m{i}"' in response.read_text()
        except FileNotFoundError:
            return False

    answered_ms = []
    try:
        wait(lambda: answered(0))
        for i in range(1, n + 1):
            t0 = time.perf_counter()
            (d / "request.json").write_text(req % i)
            wait(lambda: answered(i))  # noqa: B023 (called at once)
            answered_ms.append((time.perf_counter() - t0) * 1e3)
        proc.terminate()
        proc.wait(30)
        return answered_ms
    finally:
        proc.kill()


def summary(name: str, ms: list[float]) -> None:
    q = statistics.quantiles(ms, n=100)
    print(f"{name:44s} median {statistics.median(ms):7.3f} ms   p99 {q[98]:7.3f} ms   n={len(ms)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        ws = base / "ws" / "python_session"
        ours = v1_round_trips(
            [sys.executable, "-m", "tsr_worker", "w", "--workspace", str(base / "ws")],
            ws / "tr_session_w",
            args.n,
        )
        compat = v1_round_trips([sys.executable, str(SCRIPT), "c"], ws / "tr_session_c", args.n)
        summary("V1 hello round trip, tsr-worker", ours)
        summary("V1 hello round trip, TechRenaissanceServer", compat)
        answered = v3_answer_times(base / "ws3" / "python_session_id1", args.n)
        summary("V3 request written -> its own response there", answered)


if __name__ == "__main__":
    main()
