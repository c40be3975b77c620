"""The Python client: the C++ calls, against real worker subprocesses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from tsr_worker import Session, SessionError, SessionTimeoutError, WorkerError
from tsr_worker.protocol import ProtocolError

from .worker_helpers import PLUGIN, read_status

torch = pytest.importorskip("torch")

LIGHT = ["--no-preload", "--log-level", "error"]


def test_lifecycle_mirrors_the_cpp_client(tmp_path: Path) -> None:
    d = tmp_path / "python_session" / "tr_session_life"
    d.mkdir(parents=True)
    (d / "request.json").write_text("stale")
    (d / "response.json").write_text("stale")
    with Session("life", workspace=str(tmp_path), worker_args=LIGHT) as s:
        assert s.session_dir == str(d) and s.session_id == "life"
        assert not (d / "request.json").exists() and not (d / "response.json").exists()
        assert not s.is_alive()
        s.start()
        assert s.is_alive() and read_status(d) == "ready"
        assert s.is_ready() and not s.is_busy() and not s.new_response()
        assert s.fetch_response('{"cmd": "hello", "params": "world"}') == "Hello World"
        s.send_request('{"cmd": "hi", "params": "there"}')
        assert s.wait_until_ok(5000) and s.new_response()
        assert s.read_response() == "Hi There" and not s.new_response()
        s.terminate()
        assert not s.is_alive() and read_status(d) == "terminated"
        assert s.join(1000)
        assert s.process is not None and s.process.returncode == 0
    assert not d.exists(), "leaving the block removes the session directory"


def test_tensors_and_errors(tmp_path: Path) -> None:
    worker_args = ["--commands", str(PLUGIN), "--log-level", "error"]
    with Session("t", workspace=str(tmp_path), poll="tight", worker_args=worker_args) as s:
        s.start()
        # the first tensor request waits for torch to be imported: allow for a busy machine
        r = s.calculate(
            "matmul", torch.full((4, 3), 1.5), torch.full((3, 5), 2.0), timeout_ms=60000
        )
        assert r.shape == (4, 5) and bool((r == 9.0).all())
        x = np.arange(-3, 3, dtype=np.float32).reshape(2, 3)
        s.send_tensor(x, "a")  # NumPy works too
        r = s.fetch_tensor('{"cmd": "relu", "params": "a"}')
        assert torch.equal(r, torch.relu(torch.from_numpy(x)))
        s.send_tensor(torch.from_numpy(x), "x")
        lo, hi = s.fetch_tensors('{"cmd": "minmax", "params": "x"}')
        assert float(lo[0]) == -3 and float(hi[0]) == 2
        with pytest.raises(WorkerError) as info:
            s.calculate("matmul", torch.ones(2, 3), torch.ones(2, 3))
        assert info.value.code == "computation_failed" and "matmul" in str(info.value)
        assert s.last_error is not None and s.last_error.code == "computation_failed"
        with pytest.raises(WorkerError) as info:
            s.fetch_tensor('{"cmd": "nope"}')
        assert info.value.code == "unknown_command"
        assert s.fetch_response('{"cmd": "nope"}') == "invalid"  # as C++ sees it
        s.send_tensor(torch.ones(3), "x")
        with pytest.raises(SessionError, match="fetch_tensors"):
            s.fetch_tensor('{"cmd": "split_sign", "params": "x"}')
        with pytest.raises(ProtocolError):
            s.send_tensor(torch.ones(1), "../x")
        with pytest.raises(SessionError, match="names no tensor"):
            s.fetch_tensor('{"cmd": "hello", "params": "world"}')
        s.please_exit()
        assert s.join(5000) and read_status(Path(s.session_dir)) == "terminated"


def test_time_outs(tmp_path: Path) -> None:
    s = Session("idle", workspace=str(tmp_path))  # never started
    try:
        Path(s.session_dir, "request.json").write_text("{}")
        start = time.monotonic()
        assert not s.wait_until_ready(100)
        assert not s.wait_until_ok(100)
        assert time.monotonic() - start < 1
        with pytest.raises(SessionTimeoutError, match=r"request\.json to go"):
            s.fetch_response('{"cmd": "hello"}', 100)
        Path(s.session_dir, "request.json").unlink()
        with pytest.raises(SessionTimeoutError, match=r"no response\.json within 100 ms"):
            s.fetch_response('{"cmd": "hello"}', 100)
        with pytest.raises(SessionTimeoutError):
            s.wait_for_tensor(50)
    finally:
        s.close()
    assert not Path(s.session_dir).exists()


def test_start_failure_is_reported(tmp_path: Path) -> None:
    s = Session("bad", workspace=str(tmp_path), worker_args=["--no-such-option"])
    with s, pytest.raises(SessionError, match="exited with status 2"):
        s.start()


@pytest.mark.parametrize("python", ["/nonexistent/python3", "/etc/hostname"])
def test_an_interpreter_that_cannot_run_is_reported(tmp_path: Path, python: str) -> None:
    s = Session("bad", workspace=str(tmp_path), python=python)
    with s, pytest.raises(SessionError, match=f"cannot run the worker with python='{python}'"):
        s.start()


def test_a_second_session_on_a_served_directory_is_refused(tmp_path: Path) -> None:
    with Session("one", workspace=str(tmp_path)) as a:
        a.start()
        b = Session("one", workspace=str(tmp_path))
        with pytest.raises(SessionError, match="exited with status 3"):
            b.start()
        assert a.fetch_response('{"cmd": "hi", "params": "still"}') == "Hi Still"


def test_two_sessions_at_once(tmp_path: Path) -> None:
    a = Session("one", workspace=str(tmp_path), poll="tight", worker_args=["--threads", "1"])
    b = Session("two", workspace=str(tmp_path), poll="tight", worker_args=["--threads", "1"])
    with a, b:
        a.start()
        b.start()
        assert a.session_dir != b.session_dir
        for s in (a, b):  # torch imported (a busy machine can take a while)
            assert s.calculate("relu", torch.ones(1), timeout_ms=60000).item() == 1
        for i in range(5):
            xa, xb = torch.full((3, 3), float(i)), torch.full((2, 4), float(-i))
            a.send_tensor(xa, "a")
            b.send_tensor(xb, "a")
            a.send_request('{"cmd": "square", "params": "a"}')
            b.send_request('{"cmd": "negative", "params": "a"}')
            assert b.wait_for_tensor().equal(-xb)
            assert a.wait_for_tensor().equal(xa * xa)
        assert a.fetch_response(json.dumps({"cmd": "hi", "params": "a"})) == "Hi A"
        assert b.fetch_response(json.dumps({"cmd": "hi", "params": "b"})) == "Hi B"
    assert not Path(a.session_dir).exists() and not Path(b.session_dir).exists()


def test_close_escalates_when_the_worker_ignores_exit(tmp_path: Path) -> None:
    """A worker stuck in a command still goes: status exit, then SIGTERM, then SIGKILL."""
    s = Session("stuck", workspace=str(tmp_path), worker_args=["--commands", str(PLUGIN), *LIGHT])
    s.start()
    s.send_request('{"cmd": "nap", "params": "30"}')
    time.sleep(0.2)
    start = time.monotonic()
    s.close(step_ms=200)
    assert s.process is not None and s.process.returncode == -9
    assert 0.4 < time.monotonic() - start < 5
    assert not Path(s.session_dir).exists()


def test_backoff_polling_matches_the_cpp_timing(tmp_path: Path) -> None:
    """With the C++ back-off a reply is seen at the first 32 ms check, not before."""
    with Session("slow", workspace=str(tmp_path), worker_args=LIGHT) as s:
        s.start()
        start = time.monotonic()
        assert s.fetch_response('{"cmd": "hi", "params": "x"}') == "Hi X"
        assert 0.030 < time.monotonic() - start < 0.5
