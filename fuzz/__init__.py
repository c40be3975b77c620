"""Coverage-guided fuzz harnesses for the tsr codec and the reference worker.

Run one with ``python -m fuzz <harness> [libFuzzer options] [corpus dirs]`` from the
repository root (see ``fuzz/README.md``). The harness functions (``TestOneInput``) are plain
Python and are also driven directly by the test suite (``tests/robustness``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def bounded_run(
    harness: str, runs: int, dirs: list[str], *, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``python -m fuzz HARNESS -runs=RUNS -seed=1 -timeout=10 DIRS`` from the repository
    root, as the test suite's short coverage-guided runs do (output captured)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "fuzz", harness, f"-runs={runs}", "-seed=1", "-timeout=10",
         *dirs],
        cwd=REPO, env=env, check=False, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def done_runs(log: str) -> int:
    """The execution count of libFuzzer's closing ``Done N runs`` line in ``log`` (-1 if
    none). With ``-runs=N`` it may be ``N + 1``: libFuzzer can count one more input."""
    found = re.findall(r"^Done (\d+) runs in ", log, re.MULTILINE)
    return int(found[-1]) if found else -1
