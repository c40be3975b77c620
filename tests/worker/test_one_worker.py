"""One worker per session directory (a lock that dies with its holder), and no request
mistaken for an earlier one (inode reuse, coarse time stamps)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tsr_worker import Worker, WorkerConfig
from tsr_worker.cli import EXIT_BUSY
from tsr_worker.sessiondir import LOCK_NAME, DirectoryBusyError

import tsr_platform

from .worker_helpers import (
    ask,
    read_status,
    send,
    serving,
    spawn,
    take_response,
    tree,
    wait_for,
    without_directory_locks,
)


def test_second_worker_is_refused_and_the_first_keeps_serving(tmp_path: Path) -> None:
    d = tmp_path / "s"
    first = spawn(d)
    try:
        assert ask(d, '{"cmd": "hi", "params": "first"}')["params"] == "Hi First"
        before = tree(d)
        second = spawn(d, log=tmp_path / "second.log", wait_running=False)
        try:
            code = second.wait_exit(30)
        finally:
            second.kill()
        err = second.log_text().strip()
        assert code == EXIT_BUSY, err
        assert err.splitlines() == [
            f"tsr-worker: {d} is already served by worker pid {first.proc.pid}; not starting"
        ]
        assert tree(d) == before, "the refused worker touched the directory"
        for i in range(200):  # replies correct and in order, none lost, none doubled
            word = f"n{i}"
            assert ask(d, json.dumps({"cmd": "hello", "params": word}))["params"] == f"Hello N{i}"
        assert first.proc.poll() is None and "cannot be removed" not in first.log_text()
    finally:
        first.kill()


def test_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    d = tmp_path / "s"
    first = spawn(d)
    first.kill()  # SIGKILL: no clean-up at all
    (d / "status.txt").unlink()
    second = spawn(d)
    try:
        assert ask(d, '{"cmd": "hi", "params": "again"}')["params"] == "Hi Again"
    finally:
        second.kill()


@pytest.mark.parametrize("how", ["directory", "lock file"])
def test_in_process_second_worker_raises_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "lock file":
        without_directory_locks(monkeypatch)
    d = tmp_path / "s"
    config = WorkerConfig(str(d), client_pid=0, preload=False)
    with serving(config):
        # without dir_fd (Windows, the stripped mode) there is no directory descriptor
        by_file = how == "lock file" or not tsr_platform.HAVE_DIR_FD
        assert (d / LOCK_NAME).exists() == by_file
        before = tree(d)
        with pytest.raises(DirectoryBusyError) as info:
            Worker(config).run()
        assert info.value.holder == os.getpid()
        assert tree(d) == before
        assert ask(d, '{"cmd": "hi", "params": "still"}')["params"] == "Hi Still"
    with serving(config) as again:  # released on leaving
        assert again.waiter_name


@pytest.fixture
def inproc(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "s"
    with serving(WorkerConfig(str(d), client_pid=0, preload=False, idle_timeout_s=0)):
        yield d


def wait_response(d: Path, timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (d / "response.json").exists():
            return take_response(d)
        time.sleep(0.0005)
    return None


def test_a_squatting_directory_made_again_at_once_is_answered_again(inproc: Path) -> None:
    """An unremovable request.json (a directory) is answered once; removed and made again
    at once (ext4 hands out the freed inode again, within the same clock tick), it is a
    new request and gets its own answer."""
    d = inproc
    reused = 0
    previous = None
    for i in range(30):
        (d / "request.json").mkdir()
        ino = (d / "request.json").stat().st_ino
        reused += ino == previous
        previous = ino
        text = wait_response(d, 10.0)
        assert text is not None, f"directory {i} never answered ({reused} inodes reused)"
        assert json.loads(text)["error"]["code"] == "bad_request"
        assert wait_response(d, 0.02) is None, "answered twice"
        os.rmdir(d / "request.json")
    assert ask(d, '{"cmd": "hi", "params": "done"}')["params"] == "Hi Done"


def test_a_request_with_the_same_inode_and_times_is_new(inproc: Path) -> None:
    """The worker keeps no identity of answered requests: the same inode, content and
    modification time coming back under request.json (a hard link kept aside) is served
    again, every time."""
    d = inproc
    keep = d / "keep.json"
    keep.write_text('{"cmd": "hi", "params": "again"}')
    st = keep.stat()
    for _ in range(20):
        wait_for(lambda: not (d / "request.json").exists())
        os.link(keep, d / "request.json")
        os.utime(keep, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert json.loads(take_response(d, 10))["params"] == "Hi Again"
    assert keep.stat().st_ino == st.st_ino and read_status(d) == "running"
    send(d, '{"cmd": "exit"}')


def test_a_handler_raising_keyboard_interrupt_is_answered(tmp_path: Path) -> None:
    """A user's server (the compat handler) raising KeyboardInterrupt or SystemExit gets
    its one answer, computation_failed; the worker serves on."""
    from tsr_worker import protocol
    from tsr_worker.worker import _Answer

    def handler(request: protocol.Request) -> _Answer:
        if request.params == "interrupt":
            raise KeyboardInterrupt
        if request.params == "exit":
            raise SystemExit(1)
        return _Answer(request.name, "fine")

    d = tmp_path / "s"
    with serving(WorkerConfig(str(d), client_pid=0, preload=False), handler=handler):
        for params in ("interrupt", "exit"):
            reply = ask(d, json.dumps({"cmd": "x", "params": params}))
            assert reply["error"]["code"] == "computation_failed", reply
        assert ask(d, '{"cmd": "x", "params": "ok"}')["params"] == "fine"


def test_a_second_compat_server_is_refused_before_writing_anything(tmp_path: Path) -> None:
    """A user's server (``TechRenaissanceServer.run``) on a directory a worker serves is
    refused (DirectoryBusyError) before it writes anything: the status file is the very
    one the first worker wrote (before: ``running`` written, then the lock refused)."""
    from tsr_worker import compat

    d = tmp_path / "python_session" / "tr_session_s"
    with serving(WorkerConfig(str(d), client_pid=0, preload=False)):
        status = (d / "status.txt").stat()
        before = tree(d)
        with pytest.raises(DirectoryBusyError):
            compat.TechRenaissanceServer(workspace=str(tmp_path)).run("s")
        after = (d / "status.txt").stat()
        assert (after.st_ino, after.st_mtime_ns) == (status.st_ino, status.st_mtime_ns)
        assert tree(d) == before
        assert ask(d, '{"cmd": "hi", "params": "still"}')["params"] == "Hi Still"


def test_a_compat_server_overriding_init_session_has_it_called_once_after_the_lock(
    tmp_path: Path,
) -> None:
    """A user's server that overrides ``init_session`` (upstream's ``run`` calls it) has
    it called by ``run``, once, after the directory's lock is taken, and serves."""
    from tsr_worker import compat

    d = tmp_path / "python_session" / "tr_session_s"
    calls: list[tuple[str, bool]] = []

    def lock_taken() -> bool:
        try:
            Worker(WorkerConfig(str(d), client_pid=0, preload=False)).claim()
        except DirectoryBusyError:
            return True
        return False

    class Server(compat.TechRenaissanceServer):
        def init_session(self, session_id: str) -> None:
            calls.append((session_id, lock_taken()))
            super().init_session(session_id)

        def main_logic(self, command: str, params: str) -> bool:
            self.write_response(command, params.upper())
            return True

    server = Server(workspace=str(tmp_path))
    thread = threading.Thread(target=server.run, args=("s",), daemon=True)
    thread.start()
    try:
        wait_for(lambda: (d / "status.txt").exists() and read_status(d) == "running")
        assert ask(d, '{"cmd": "say", "params": "ok"}')["params"] == "OK"
        assert calls == [("s", True)]
    finally:
        (d / "exit.flag").touch()
        thread.join(20)
    assert not thread.is_alive()
