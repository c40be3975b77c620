"""The benchmark scripts that measure the format's choices still run, on tiny sizes (their
figures are not checked: benchmarks print them, tests do not time anything)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip


def test_bench_zlib_libs_checks_every_library_against_zlib() -> None:
    out = _run("bench_zlib_libs.py", "--rounds", "1", "--ram-mib", "1", "--zlib-tensors", "2",
               "--zlib-mib", "1")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr  # 1: a CRC or an inflate differed
    assert "PROBLEM" not in out.stdout
    rows = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("  zlib ")]
    assert rows == ["zlib", "zlib"]  # a CRC row and a ZLIB row
    zlib_row = next(line for line in out.stdout.splitlines() if line.endswith("True"))
    assert zlib_row.split()[0] == "zlib"  # only zlib's level 6 is C++'s stream


def test_bench_raw_save_runs_every_case(tmp_path: Path) -> None:
    out = _run("bench_raw_save.py", "--mib", "1", "--rounds", "1", "--dir", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    for case in ("np.save [ref]", "write bound: one write(2), no CRC", "tsr.save_all (atomic)",
                 "write bound, another core busy"):  # fmt: skip
        assert case in out.stdout
    assert list(tmp_path.iterdir()) == []  # its work directory is removed
