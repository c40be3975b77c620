"""The kit's V3 PythonSession model (``cpp/python_session_v3.hpp``, fork + execlp, TSR3
RAW, 100 ms sleeps and polls, SIGTERM on ``stop()``) against our V3 server: the worker
through its launcher at the default server path, and a user's ``RenaissanceServer``.

The client's time-out is raised from 10 s to 60 s (``--wait-tries 600``), and its wait
also waits for ``request.json`` to be consumed (``--settle 1``): on a loaded machine
starting Python and importing torch can take longer than 10 s, and the server can be
scheduled later than the 100 ms the client sleeps; neither is what is tested here (the
stale answer's removal on arrival is tested in ``tests/worker/test_compat_v3.py``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tsr_worker import cli

from .kitlib import CPP_DIR, CXXFLAGS, BuildError, find_cxx

pytestmark = pytest.mark.interop

USER_SERVER = Path(__file__).resolve().parents[1] / "worker" / "v3_style_server.py"


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cxx = find_cxx()
    if cxx is None:
        pytest.skip("no C++ compiler found ($CXX, c++, g++, clang++): C++ interop kit not built")
    exe = tmp_path_factory.mktemp("v3kit") / "v3_session_driver"
    cmd = [*cxx, *CXXFLAGS, "-o", str(exe), str(CPP_DIR / "v3_session_driver.cpp")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if out.returncode != 0:
        pytest.fail(str(BuildError(out.stdout + out.stderr)))
    return exe


def run(driver: Path, python: str, server: Path, workspace: Path, scenario: str) -> list[str]:
    workspace.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [str(driver), "--python", python, "--server", str(server), "--workspace", str(workspace),
         "--scenario", scenario, "--wait-tries", "600", "--settle", "1"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    lines = out.stdout.splitlines()
    failed = [line for line in lines if line.startswith("CHECK") and not line.endswith(" ok")]
    assert out.returncode == 0 and not failed and lines[-1] == "DONE ok", out.stdout + out.stderr
    assert list(workspace.iterdir()) == []  # stop() removed the session directory
    return lines


def checks(lines: list[str]) -> set[str]:
    return {line.split()[1] for line in lines if line.startswith("CHECK")}


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our launcher where the V3 client looks for its default server script."""
    path = tmp_path_factory.mktemp("psroot") / "python" / "tests" / "test_python_server.py"
    assert cli.main(["--write-launcher", str(path)], exit_process=False) == 0
    return path


def system_python3() -> str:
    python3 = shutil.which("python3", path="/usr/bin:/bin")
    return python3 or sys.executable


def test_protocol_two_calls_one_session(driver: Path, launcher: Path, tmp_path: Path) -> None:
    lines = run(driver, system_python3(), launcher, tmp_path / "workspace", "protocol")
    expected = {
        "unknown_frobnicate", "unknown_other", "one_process_for_the_session",
        "calculate_before_start", "start_twice", "stop_without_sigkill",
    }  # fmt: skip
    assert expected <= checks(lines)
    (stop,) = [line for line in lines if line.startswith("STOP ")]
    seconds, killed, status = stop.split()[1:]
    assert float(seconds) < 5.0 and killed == "0" and status == "0"  # SIGTERM sufficed


def test_builtin_commands(driver: Path, launcher: Path, tmp_path: Path) -> None:
    lines = run(driver, system_python3(), launcher, tmp_path / "workspace", "builtin")
    expected = {
        "add_first", "add_second_is_its_own", "add_int32", "matmul_design",
        "print_tensor_text", "unknown_method_fails", "add_after_failure",
    }  # fmt: skip
    assert expected <= checks(lines)


def test_user_server(driver: Path, tmp_path: Path) -> None:
    lines = run(driver, sys.executable, USER_SERVER, tmp_path / "workspace", "user")
    expected = {
        "echo_bf16_bit_exact", "echo_int8_bit_exact", "echo_fp32_nan_scalar_bit_exact",
        "two_outputs_returns_output_0", "echo_after_three_inputs",
    }  # fmt: skip
    assert expected <= checks(lines)
