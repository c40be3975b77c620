"""``tsr_worker.compat.TechRenaissanceServer``: an upstream-style user script
(``upstream_style_server.py``, unchanged but for its import) launched as the C++ client
launches it, ``python3 "<script>" <id> &`` through the shell, and driven with the
client's file protocol."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tsr_worker import compat

import tsr

from .test_launcher import SYSTEM_PATH, kill_all, system_env, worker_pids, write_launcher
from .worker_helpers import ask, read_status, send, take_response, wait_for

torch = pytest.importorskip("torch")

if TYPE_CHECKING:
    from torch import Tensor

SCRIPT = Path(__file__).with_name("upstream_style_server.py")
VENV_BIN = str(Path(sys.executable).parent)


def venv_env(**extra: str) -> dict[str, str]:
    """The C++ side's environment with this venv's ``python3`` first on PATH."""
    env = system_env()
    env["PATH"] = f"{VENV_BIN}:{SYSTEM_PATH}"
    env.update(extra)
    return env


def launch(script: Path, session_id: str, cwd: Path, env: dict[str, str]) -> None:
    """``std::system("python3 \\"<script>\\" <id> &")``."""
    cmd = f'python3 "{script}" {session_id} &'
    subprocess.run(["sh", "-c", cmd], cwd=cwd, env=env, check=True, timeout=10)


@pytest.fixture
def session_id() -> str:
    return f"compat_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def served(tmp_path: Path, session_id: str) -> Iterator[Path]:
    """The upstream-style script launched like C++, workspace from ``TSR_WORKSPACE``;
    yields its session directory (the client made it and wrote ``ready``)."""
    ws = tmp_path / "ws"
    d = ws / "python_session" / f"tr_session_{session_id}"
    d.mkdir(parents=True)
    try:
        launch(SCRIPT, session_id, tmp_path, venv_env(TSR_WORKSPACE=str(ws)))
        wait_for(lambda: read_status(d) == "running", 60, "running")
        (d / "status.txt").write_text("ready")
        yield d
    finally:
        kill_all(session_id)


def put(d: Path, tag: str, t: Tensor) -> None:
    tsr.torch.save(d / f"{tag}.tsr", t)


def get(d: Path, tag: str) -> Tensor:
    return tsr.torch.load(d / f"{tag}.tsr", mmap=False)


def no_response_after(d: Path, probe: dict[str, str]) -> None:
    """No second answer is pending: the next request's reply is its own."""
    reply = ask(d, json.dumps(probe))
    assert reply == {"cmd": "", "params": f"Hello {probe['params'].title()}"}


def test_upstream_script_runs_unchanged(served: Path, session_id: str, tmp_path: Path) -> None:
    d = served
    # the design scenario: 4x3 of 1.5 @ 3x5 of 2.0 -> 4x5 of 9.0 in r.tsr, inputs removed
    put(d, "a", torch.full((4, 3), 1.5))
    put(d, "b", torch.full((3, 5), 2.0))
    assert ask(d, '{"cmd": "matmul", "params": "a,b"}') == {"cmd": "", "params": "r"}
    r = get(d, "r")
    assert r.shape == (4, 5) and bool((r == 9.0).all())
    assert not (d / "a.tsr").exists() and not (d / "b.tsr").exists()
    assert ask(d, '{"cmd": "hello", "params": "world"}') == {"cmd": "", "params": "Hello World"}

    # state across requests
    for expected in (1.0, 2.0):
        assert ask(d, '{"cmd": "count", "params": ""}')["params"] == "r"
        assert get(d, "r").tolist() == [expected]
    for i in range(3):
        assert ask(d, '{"cmd": "data", "params": ""}')["params"] == "r"
        assert bool((get(d, "r") == float(i)).all())
    # batches exhausted: the IndexError answers invalid, and the server goes on
    reply = ask(d, '{"cmd": "data", "params": ""}')
    assert reply["params"] == "invalid" and "IndexError" in reply["error"]["message"]

    # several results: r0,r1,r2 (upstream wrote "r0r1r")
    put(d, "x", torch.arange(6, dtype=torch.float32).reshape(3, 2))
    assert ask(d, '{"cmd": "split", "params": "x"}') == {"cmd": "", "params": "r0,r1,r2"}
    assert get(d, "r0").tolist() == [[0.0, 1.0]]
    assert get(d, "r1").tolist() == [[2.0, 3.0], [4.0, 5.0]]
    r2 = get(d, "r2")
    assert r2.dtype == torch.int32 and tsr.read_header(d / "r2.tsr").dtype.name == "INT32"

    # a wrong tag count: answered once (upstream: twice, every later reply one behind)
    put(d, "a", torch.ones(2, 2))
    reply = ask(d, '{"cmd": "matmul", "params": "a"}')
    assert reply["params"] == "invalid" and reply["error"]["code"] == "wrong_input_count"
    no_response_after(d, {"cmd": "hello", "params": "after arity"})

    # an exception in main_logic, a False return, an unknown command: invalid, keep serving
    for cmd in ("fail", "refuse", "frobnicate", "float64"):
        reply = ask(d, json.dumps({"cmd": cmd, "params": ""}))
        assert reply["params"] == "invalid", cmd
        assert reply["error"]["code"] == "computation_failed", reply
        assert read_status(d) == "ready", cmd  # upstream: error:..., then terminated
    message = ask(d, '{"cmd": "fail"}')["error"]["message"]
    assert "RuntimeError: this command always fails" in message
    no_response_after(d, {"cmd": "hello", "params": "after failures"})

    # two answers to one request: the first stands, the second is dropped
    assert ask(d, '{"cmd": "twice", "params": ""}')["params"] == "First"
    no_response_after(d, {"cmd": "hello", "params": "after twice"})

    # a tag naming a file outside the session: refused, nothing outside read or deleted
    outside = d.parent / "outside.tsr"
    put(d.parent, "outside", torch.ones(1))
    reply = ask(d, '{"cmd": "relu", "params": "../outside"}')
    assert reply["params"] == "invalid" and reply["error"]["code"] == "bad_tag"
    assert outside.exists()
    no_response_after(d, {"cmd": "hello", "params": "after traversal"})

    # exit: the loop ends, status terminated, the process goes
    assert len(worker_pids(session_id)) == 1
    send(d, '{"cmd": "exit"}')
    wait_for(lambda: read_status(d) == "terminated", 20, "terminated")
    wait_for(lambda: worker_pids(session_id) == [], 20, "server gone")
    assert not (d / "request.json").exists()


def test_running_false_ends_the_server(served: Path, session_id: str) -> None:
    assert ask(served, '{"cmd": "stop", "params": ""}') == {"cmd": "", "params": "Bye"}
    wait_for(lambda: read_status(served) == "terminated", 20, "terminated")
    wait_for(lambda: worker_pids(session_id) == [], 20, "server gone")


def test_sigterm_ends_the_server(served: Path, session_id: str) -> None:
    assert ask(served, '{"cmd": "hello", "params": "x"}')["params"] == "Hello X"
    (pid,) = worker_pids(session_id)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: read_status(served) == "terminated", 20, "terminated")
    wait_for(lambda: worker_pids(session_id) == [], 20, "server gone")


def test_directory_removed_ends_the_server(served: Path, session_id: str) -> None:
    """The C++ destructor's ``remove_all``, without an exit first."""
    assert ask(served, '{"cmd": "hello", "params": "x"}')["params"] == "Hello X"
    shutil.rmtree(served)
    wait_for(lambda: worker_pids(session_id) == [], 20, "server gone")
    assert not served.exists()  # never re-created


def test_launcher_wraps_a_user_script(tmp_path: Path, session_id: str) -> None:
    """The C++ side's ``python3`` lacks tsr: ``--write-launcher --server`` runs the script
    with the Python that has it, the workspace passed on."""
    if shutil.which("python3", path=SYSTEM_PATH) is None:
        pytest.skip("no python3 on /usr/bin:/bin")
    ws = tmp_path / "workspace"
    launcher = tmp_path / "python_server.py"
    write_launcher(launcher, "--server", str(SCRIPT), "--workspace", str(ws))
    text = launcher.read_text()
    assert repr(str(SCRIPT)) in text and repr(str(ws)) in text
    d = ws / "python_session" / f"tr_session_{session_id}"
    d.mkdir(parents=True)
    try:
        launch(launcher, session_id, tmp_path, system_env())
        wait_for(lambda: read_status(d) == "running", 60, "running")
        put(d, "a", torch.full((4, 3), 1.5))
        put(d, "b", torch.full((3, 5), 2.0))
        assert ask(d, '{"cmd": "matmul", "params": "a,b"}')["params"] == "r"
        assert bool((get(d, "r") == 9.0).all())
        assert ask(d, '{"cmd": "stop", "params": ""}')["params"] == "Bye"
        wait_for(lambda: worker_pids(session_id) == [], 20, "server gone")
    finally:
        kill_all(session_id)


def test_write_launcher_server_refuses_worker_options(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("tsr-worker")
    out = subprocess.run(
        [str(exe), "--write-launcher", str(tmp_path / "l.py"), "--server", str(SCRIPT),
         "--idle-timeout", "5"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "--server takes only --workspace" in out.stderr
    assert not (tmp_path / "l.py").exists()


def test_default_workspace_is_the_checkout_of_the_script(tmp_path: Path, session_id: str) -> None:
    """No ``TSR_WORKSPACE``: a script at ``<root>/python/module/`` serves
    ``<root>/workspace``, where upstream's module-relative rule pointed."""
    root = tmp_path / "framework"
    script = root / "python" / "module" / "python_server.py"
    script.parent.mkdir(parents=True)
    shutil.copy(SCRIPT, script)
    d = root / "workspace" / "python_session" / f"tr_session_{session_id}"
    d.mkdir(parents=True)
    env = venv_env()
    env.pop("TSR_WORKSPACE", None)
    try:
        launch(script, session_id, tmp_path, env)
        wait_for(lambda: read_status(d) == "running", 60, "running")
        assert ask(d, '{"cmd": "hello", "params": "root"}')["params"] == "Hello Root"
        send(d, '{"cmd": "exit"}')
        wait_for(lambda: worker_pids(session_id) == [], 20, "server gone")
    finally:
        kill_all(session_id)


def test_default_workspace_elsewhere_is_the_current_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(tmp_path / "s.py"), raising=False)
    assert compat.default_workspace() == str(tmp_path / "workspace")
    nested = tmp_path / "r" / "python" / "tests" / "s.py"
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(nested))
    assert compat.default_workspace() == str(tmp_path / "r" / "workspace")


def test_init_session_refuses_a_path_and_an_unsafe_id(tmp_path: Path) -> None:
    server = compat.TechRenaissanceServer(workspace=str(tmp_path))
    with pytest.raises(ValueError, match="RenaissanceServer"):
        server.init_session(str(tmp_path / "python_session_id1"))
    with pytest.raises(ValueError, match="session id"):
        server.init_session("..")
    server.init_session("ok")
    assert server.session_dir == str(tmp_path / "python_session" / "tr_session_ok")
    assert Path(server.status_file).read_text() == "running"


def test_answers_need_a_request(tmp_path: Path) -> None:
    server = compat.TechRenaissanceServer(workspace=str(tmp_path))
    server.init_session("s")
    with pytest.raises(RuntimeError, match="main_logic"):
        server.write_response("", "x")
    with pytest.raises(RuntimeError, match="main_logic"):
        server.send_tensors(torch.ones(1))


def test_tsr_functions(tmp_path: Path) -> None:
    for dtype, name in ((torch.float32, "FP32"), (torch.int8, "INT8"), (torch.int32, "INT32")):
        path = str(tmp_path / f"{name}.tsr")
        t = torch.arange(6).reshape(2, 3).to(dtype)
        compat.export_tsr(t, path)
        back = compat.import_tsr(path)
        assert back.dtype == dtype and torch.equal(back, t)
        back += 1  # writable, like upstream's
        info = compat.get_tsr_info(path)
        assert info == {
            "filename": path, "shape": [2, 3], "dtype": name, "ndim": 2, "numel": 6,
            "size_bytes": 6 * t.element_size(),
        }  # fmt: skip
    with pytest.raises(compat.TSRError, match="float32, int8 or int32"):
        compat.export_tsr(torch.zeros(2, dtype=torch.float64), str(tmp_path / "f.tsr"))
    with pytest.raises(compat.TSRError, match="4-D"):
        compat.export_tsr(torch.zeros(1, 1, 1, 1, 1), str(tmp_path / "f.tsr"))
    assert compat.TSRError is tsr.TSRError
    assert not (tmp_path / "f.tsr").exists()
    with pytest.raises(FileNotFoundError):
        compat.import_tsr(str(tmp_path / "missing.tsr"))


def test_importing_compat_imports_neither_torch_nor_numpy() -> None:
    code = "import sys, tsr_worker.compat; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_legacy_text_request(served: Path) -> None:
    """Legacy plain-text requests reach main_logic as upstream's params (``a,b``)."""
    put(served, "a", torch.full((2, 2), 1.0))
    put(served, "b", torch.full((2, 2), 3.0))
    send(served, "matmul a b")
    assert json.loads(take_response(served)) == {"cmd": "", "params": "r"}
    assert bool((get(served, "r") == 6.0).all())
