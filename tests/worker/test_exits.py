"""Every way a worker leaves: promptly, with status ``terminated`` (unless its directory is
gone, which it never re-creates), exit status 0."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tsr_worker import ExitReason, Worker, WorkerConfig
from tsr_worker.config import WaitMode

from .worker_helpers import PLUGIN, WorkerProc, ask, read_status, send, spawn, wait_for


@pytest.fixture
def sess(tmp_path: Path) -> Path:
    return tmp_path / "python_session" / "tr_session_x"


def assert_terminated(w: WorkerProc, within_s: float = 5.0) -> None:
    assert w.wait_exit(within_s) == 0, w.log_text()
    assert read_status(w.dir) == "terminated"


def test_exit_command(sess: Path) -> None:
    w = spawn(sess)
    send(sess, '{"cmd": "exit"}')
    assert_terminated(w)
    assert not (sess / "request.json").exists()
    assert not (sess / "response.json").exists()


@pytest.mark.parametrize("msg", ["exit", "EXIT", '{"cmd": "Exit", "params": "now"}'])
def test_exit_command_forms(sess: Path, msg: str) -> None:
    w = spawn(sess)
    send(sess, msg)
    assert_terminated(w)


def test_status_exit(sess: Path) -> None:
    """What the C++ terminate() writes; it then waits 500 ms: we must be far quicker."""
    w = spawn(sess)
    start = time.monotonic()
    (sess / "status.txt").write_text("exit")
    wait_for(lambda: read_status(sess) == "terminated", 5)
    assert time.monotonic() - start < 0.5
    assert_terminated(w)


def test_exit_flag(sess: Path) -> None:
    w = spawn(sess)
    (sess / "exit.flag").touch()
    assert_terminated(w)


def test_exit_flag_present_at_start(sess: Path) -> None:
    sess.mkdir(parents=True)
    (sess / "exit.flag").touch()
    w = spawn(sess, wait_running=False)
    assert_terminated(w)


@pytest.mark.parametrize(
    "sig",
    [getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, n)],
)
def test_signals(sess: Path, sig: int) -> None:
    w = spawn(sess, "--log-level", "info")
    w.proc.send_signal(sig)
    assert_terminated(w)
    assert f"signal {int(sig)}" in w.log_text() and "leaving: signal" in w.log_text()


def test_sigterm_finishes_the_current_request_first(sess: Path) -> None:
    w = spawn(sess, "--commands", str(PLUGIN))
    send(sess, '{"cmd": "nap", "params": "0.4"}')
    wait_for(lambda: not (sess / "request.json").exists() or w.proc.poll() is not None, 5)
    time.sleep(0.1)  # well inside the nap
    w.proc.send_signal(signal.SIGTERM)
    assert_terminated(w)
    assert (sess / "response.json").read_text() == '{"cmd": "nap", "params": "slept"}'


def test_session_dir_removed(sess: Path) -> None:
    w = spawn(sess)
    shutil.rmtree(sess)
    assert w.wait_exit(5) == 0, w.log_text()
    time.sleep(0.1)
    assert not sess.exists(), "the worker re-created its directory"


def test_session_dir_renamed_away(sess: Path) -> None:
    w = spawn(sess)
    os.rename(sess, sess.with_name("moved"))
    assert w.wait_exit(5) == 0, w.log_text()
    assert not sess.exists()


def test_workspace_removed(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    sess = ws / "python_session" / "tr_session_x"
    w = spawn(sess, log=tmp_path / "w.log")
    shutil.rmtree(ws)
    assert w.wait_exit(5) == 0, w.log_text()
    assert not ws.exists()


def test_idle_timeout(sess: Path) -> None:
    w = spawn(sess, "--idle-timeout", "0.3", "--log-level", "info")
    assert ask(sess, '{"cmd": "hi", "params": "x"}')["params"] == "Hi X"  # resets the clock
    start = time.monotonic()
    assert_terminated(w)
    assert 0.25 < time.monotonic() - start < 3
    assert "leaving: idle_timeout" in w.log_text()


def test_idle_timeout_zero_means_never(sess: Path) -> None:
    w = spawn(sess, "--idle-timeout", "0")
    time.sleep(0.5)
    assert w.proc.poll() is None
    w.proc.send_signal(signal.SIGTERM)
    assert_terminated(w)


def test_client_pid_exit(sess: Path) -> None:
    client = subprocess.Popen(["sleep", "60"])
    try:
        w = spawn(sess, "--client-pid", str(client.pid))
        time.sleep(0.1)
        assert w.proc.poll() is None
        client.kill()
        client.wait()
        assert_terminated(w)
    finally:
        client.kill()


def test_parent_exit_without_being_told_its_pid(tmp_path: Path) -> None:
    """A parent that starts the worker directly (fork/exec) is found and watched."""
    sess = tmp_path / "s"
    code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-m', 'tsr_worker', '--session-dir', {str(sess)!r},"
        " '--no-preload'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    try:
        wait_for(lambda: read_status(sess) == "running", 10)
        parent.kill()
        parent.wait()
        wait_for(lambda: read_status(sess) == "terminated", 5)
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 5)
    finally:
        parent.kill()
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_exit_while_waiting_for_the_response_to_be_consumed(sess: Path) -> None:
    w = spawn(sess)
    send(sess, '{"cmd": "hi", "params": "one"}')
    wait_for((sess / "response.json").exists)
    send(sess, '{"cmd": "hi", "params": "two"}')  # answered only once one is consumed
    wait_for(lambda: not (sess / "request.json").exists())  # taken at once, then held
    time.sleep(0.1)
    assert (sess / "response.json").read_text() == '{"cmd": "hi", "params": "Hi One"}'
    (sess / "status.txt").write_text("exit")
    assert_terminated(w, 2)
    assert (sess / "response.json").read_text() == '{"cmd": "hi", "params": "Hi One"}'


# ----------------------------------------------------------------------------- in process


def run_in_thread(worker: Worker) -> tuple[threading.Thread, list[ExitReason]]:
    out: list[ExitReason] = []
    t = threading.Thread(target=lambda: out.append(worker.run()), daemon=True)
    t.start()
    return t, out


def test_stop_ends_an_in_process_worker_without_signals(sess: Path) -> None:
    worker = Worker(WorkerConfig(str(sess), client_pid=0, preload=False))
    t, out = run_in_thread(worker)
    wait_for(lambda: read_status(sess) == "running", 5)
    assert ask(sess, '{"cmd": "hello", "params": "thread"}')["params"] == "Hello Thread"
    worker.stop()
    t.join(5)
    assert out == [ExitReason.STOPPED]
    assert read_status(sess) == "terminated"


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        (lambda d: (d / "exit.flag").touch(), ExitReason.EXIT_FLAG),
        (lambda d: (d / "status.txt").write_text("exit"), ExitReason.STATUS_EXIT),
        (lambda d: send(d, '{"cmd": "exit"}'), ExitReason.EXIT_COMMAND),
        (shutil.rmtree, ExitReason.DIR_REMOVED),
    ],
)
@pytest.mark.parametrize("wait", ["inotify", "poll"])
def test_exit_reasons_in_both_waiting_modes(
    sess: Path, action: Callable[[Path], object], reason: ExitReason, wait: WaitMode
) -> None:
    worker = Worker(WorkerConfig(str(sess), client_pid=0, preload=False, wait=wait))
    t, out = run_in_thread(worker)
    wait_for(lambda: worker.waiter_name != "", 5)
    assert worker.waiter_name == wait
    action(sess)
    t.join(5)
    assert out == [reason]


def test_idle_timeout_in_process(sess: Path) -> None:
    worker = Worker(WorkerConfig(str(sess), client_pid=0, preload=False, idle_timeout_s=0.2))
    t, out = run_in_thread(worker)
    t.join(5)
    assert out == [ExitReason.IDLE_TIMEOUT]
