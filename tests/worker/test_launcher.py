"""The launcher, started exactly as the C++ client starts its script:
``sh -c 'python3 "<launcher>" <id> &'`` with a PATH whose python3 is not the venv's."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import tsr
import tsr.torch

from .worker_helpers import ask, read_status, send, wait_for

torch = pytest.importorskip("torch")

TSR_WORKER = Path(sys.executable).with_name("tsr-worker")
SYSTEM_PATH = "/usr/bin:/bin"


def system_env() -> dict[str, str]:
    """The C++ side's environment: a plain PATH, no virtual environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = SYSTEM_PATH
    return env


def write_launcher(path: Path, *args: str) -> None:
    out = subprocess.run(
        [str(TSR_WORKER), "--write-launcher", str(path), *args],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(path)


def launch_like_cpp(launcher: Path, session_id: str, cwd: Path) -> None:
    """``std::system("python3 \\"<script>\\" <id> &")``: the shell returns at once."""
    cmd = f'python3 "{launcher}" {session_id} &'
    subprocess.run(["sh", "-c", cmd], cwd=cwd, env=system_env(), check=True, timeout=10)


def worker_pids(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker`` (zombies excluded)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            pids.append(int(entry))
    return pids


def kill_all(marker: str) -> None:
    for pid in worker_pids(marker):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def session_id() -> str:
    return f"launch_{uuid.uuid4().hex[:12]}"


def test_launcher_file(tmp_path: Path) -> None:
    launcher = tmp_path / "sub" / "launcher.py"
    write_launcher(launcher, "--workspace", "rel/ws", "--layout", "pytorch_session")
    text = launcher.read_text()
    assert launcher.stat().st_mode & stat.S_IXUSR
    assert text.startswith("#!/usr/bin/env python3\n")
    assert repr(sys.executable) in text
    assert repr(os.path.abspath("rel/ws")) in text  # made absolute at write time
    assert "'--layout', 'pytorch_session'" in text
    compile(text, str(launcher), "exec")


def test_write_launcher_refuses_a_session(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(TSR_WORKER), "some_id", "--write-launcher", str(tmp_path / "l.py")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "takes no session id" in out.stderr


def test_system_python_cannot_import_tsr(tmp_path: Path) -> None:
    """Precondition of the launch tests: the python3 on the C++ side's PATH lacks tsr."""
    python3 = shutil.which("python3", path=SYSTEM_PATH)
    if python3 is None:
        pytest.skip("no python3 on /usr/bin:/bin")
    if Path(python3).resolve() == Path(sys.executable).resolve():
        pytest.skip("the system python3 is this interpreter")
    out = subprocess.run(
        [python3, "-c", "import tsr_worker"], cwd=tmp_path, env=system_env(),
        capture_output=True, check=False, timeout=30,
    )  # fmt: skip
    if out.returncode == 0:
        pytest.skip("the system python3 has tsr_worker installed too")
    assert b"ModuleNotFoundError" in out.stderr


@pytest.mark.parametrize("layout", ["python_session", "pytorch_session"])
def test_launched_like_cpp_serves_the_design_scenario(
    tmp_path: Path, session_id: str, layout: str
) -> None:
    if shutil.which("python3", path=SYSTEM_PATH) is None:
        pytest.skip("no python3 on /usr/bin:/bin")
    ws = tmp_path / "workspace"
    launcher = tmp_path / "launcher.py"
    write_launcher(launcher, "--workspace", str(ws), "--layout", layout)
    d = ws / layout / f"tr_session_{session_id}"
    d.mkdir(parents=True)  # the C++ constructor creates it
    try:
        launch_like_cpp(launcher, session_id, cwd=tmp_path / "..")
        wait_for(lambda: read_status(d) == "running", 30, "running")
        assert len(worker_pids(session_id)) == 1
        (d / "status.txt").write_text("ready")  # what start() writes after 1 s
        tsr.torch.save(d / "a.tsr", torch.full((4, 3), 1.5))
        tsr.torch.save(d / "b.tsr", torch.full((3, 5), 2.0))
        assert ask(d, '{"cmd": "matmul", "params": "a,b"}') == {"cmd": "matmul", "params": "r"}
        r = tsr.torch.load(d / "r.tsr")
        assert r.shape == (4, 5) and bool((r == 9.0).all())
        assert ask(d, '{"cmd": "hello", "params": "world"}')["params"] == "Hello World"
        # the destructor: terminate() writes exit and sleeps 500 ms, then rm -r
        (d / "status.txt").write_text("exit")
        # within the 500 ms the destructor gives (2 s here: CI machines are busy)
        wait_for(lambda: read_status(d) == "terminated", 2, "terminated")
        shutil.rmtree(d)
        wait_for(lambda: worker_pids(session_id) == [], 5, "worker gone")
        assert not d.exists()
    finally:
        kill_all(session_id)


def test_launched_worker_leaves_when_its_cpp_parent_dies(tmp_path: Path, session_id: str) -> None:
    """The C++ program is killed (no destructor runs): its worker must not linger.

    The stand-in leads its own process group, as a program started from a shell does.
    """
    if shutil.which("python3", path=SYSTEM_PATH) is None:
        pytest.skip("no python3 on /usr/bin:/bin")
    ws = tmp_path / "workspace"
    launcher = tmp_path / "launcher.py"
    write_launcher(launcher, "--workspace", str(ws))
    d = ws / "python_session" / f"tr_session_{session_id}"
    d.mkdir(parents=True)
    cpp = f"import os, time\nos.system('python3 \"{launcher}\" {session_id} &')\ntime.sleep(60)\n"
    stand_in = subprocess.Popen(
        [sys.executable, "-c", cpp], env=system_env(), start_new_session=True
    )
    try:
        wait_for(lambda: read_status(d) == "running", 30, "running")
        send(d, '{"cmd": "hi", "params": "there"}')
        wait_for((d / "response.json").exists, 30)
        stand_in.kill()
        stand_in.wait()
        wait_for(lambda: read_status(d) == "terminated", 5, "terminated after the parent died")
        wait_for(lambda: worker_pids(session_id) == [], 5, "worker gone")
    finally:
        stand_in.kill()
        kill_all(session_id)


def test_launcher_with_a_missing_interpreter(tmp_path: Path) -> None:
    launcher = tmp_path / "launcher.py"
    from tsr_worker.cli import write_launcher as write

    write(str(launcher), ["--workspace", str(tmp_path)], python=str(tmp_path / "no_python"))
    out = subprocess.run(
        [sys.executable, str(launcher), "x"], capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert out.returncode == 127 and "cannot run" in out.stderr
