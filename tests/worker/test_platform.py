"""The worker's portable paths (what Windows and macOS run), tested on Linux: the session
directory by path with checks after opening, the select-based stop pipe, client-death
detection by process handle or ``pid_alive``, signals that exist, Windows-style paths.
The stripped mode (``TSR_STRIP_PLATFORM=1``) runs the whole worker suite this way."""

from __future__ import annotations

import json
import ntpath
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tsr_worker import Worker, WorkerConfig, config, procwatch, sessiondir, signals, waiting
from tsr_worker.cli import _LAUNCHER
from tsr_worker.sessiondir import NotRegularFileError, PathSessionDir, SessionDir

import tsr_platform

from .worker_helpers import ask, take_response, wait_for

STRIPPED = os.environ.get("TSR_STRIP_PLATFORM") == "1"


@pytest.fixture
def pdir(tmp_path: Path) -> PathSessionDir:
    d = PathSessionDir.open_path(str(tmp_path / "ws" / "tr_session_p"), create=True)
    return d


def test_without_dir_fd_the_session_directory_works_by_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tsr_platform, "HAVE_DIR_FD", False)
    d = SessionDir.open(str(tmp_path / "s"), create=True)
    assert isinstance(d, PathSessionDir) and d.fd == -1
    assert (tmp_path / "s").is_dir() and not d.gone()
    if STRIPPED:  # and SessionDir.open chose it by itself
        monkeypatch.undo()
        assert isinstance(SessionDir.open(str(tmp_path / "s"), create=False), PathSessionDir)


def test_path_session_dir_reads_writes_and_removes(pdir: PathSessionDir) -> None:
    pdir.write_atomic("status.txt", b"ready")
    assert pdir.read_text("status.txt") == "ready"
    assert not os.path.exists(pdir.proc_path("status.txt.tmp"))
    pdir.write_atomic("status.txt", b"busy")  # over an existing file
    data, st = pdir.read_small("status.txt", 100)
    assert data == b"busy" and pdir.exists("status.txt") and pdir.present("status.txt")
    with pytest.raises(sessiondir.TooLargeError):
        pdir.read_small("status.txt", 3)
    assert pdir.unlink("status.txt", expect=st)
    assert not pdir.present("status.txt") and pdir.lstat("status.txt") is None
    assert not pdir.unlink("status.txt")


def test_path_session_dir_refuses_links_and_odd_files(pdir: PathSessionDir, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_bytes(b"secret")
    os.symlink(precious, pdir.proc_path("a.tsr"))
    with pytest.raises(NotRegularFileError, match="symbolic link"):
        pdir.open_regular("a.tsr")
    assert pdir.read_text("a.tsr") is None
    assert pdir.unlink("a.tsr") and precious.read_bytes() == b"secret"  # the link, not it
    os.mkdir(pdir.proc_path("d.tsr"))
    with pytest.raises(OSError):
        pdir.open_regular("d.tsr")
    with pytest.raises(FileNotFoundError):
        pdir.open_regular("missing.tsr")


def test_a_link_swapped_in_while_opening_is_refused(
    pdir: PathSessionDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check after opening: what was opened must be what the name is now. Simulated
    by opening another file than the name holds (as a link swapped in and out would)."""
    (tmp_path / "elsewhere").write_bytes(b"x" * 10)
    with open(pdir.proc_path("a.tsr"), "wb") as f:
        f.write(b"y" * 10)
    real_open = os.open

    def swapped(path: str, flags: int, *args: int, **kw: int) -> int:
        if str(path).endswith("a.tsr"):
            return real_open(str(tmp_path / "elsewhere"), flags, *args, **kw)
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", swapped)
    with pytest.raises(NotRegularFileError, match="changed while being opened"):
        pdir.open_regular("a.tsr")


def test_a_directory_replaced_by_a_link_is_gone_and_not_written(
    pdir: PathSessionDir, tmp_path: Path
) -> None:
    """Renaming the session directory away and putting a link in its place: every later
    operation sees the directory gone; nothing is written through the link."""
    target = tmp_path / "target"
    target.mkdir()
    os.rename(pdir.path, tmp_path / "moved")
    os.symlink(target, pdir.path)
    assert pdir.gone()
    with pytest.raises(FileNotFoundError, match="removed or replaced"):
        pdir.write_atomic("status.txt", b"ready")
    with pytest.raises(FileNotFoundError):
        pdir.proc_path("r.tsr")
    assert os.listdir(target) == []


def test_a_symlinked_session_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(NotRegularFileError, match="symbolic link"):
        PathSessionDir.open_path(str(tmp_path / "link"), create=True)


def test_junctions_count_as_links() -> None:
    """Windows reparse points (junctions too) are refused like symbolic links."""
    st = os.stat_result((0o40755, 1, 1, 1, 0, 0, 0, 0, 0, 0))
    assert not sessiondir._is_link(st)

    class Junction:
        st_mode = 0o40755
        st_file_attributes = 0x410  # FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_REPARSE_POINT

    assert sessiondir._is_link(Junction())  # type: ignore[arg-type]


def test_the_select_based_stop_pipe_and_poller(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows selects sockets only: the stop pipe is a socket pair there, and a stop set
    from another thread ends a wait at once."""
    monkeypatch.setattr(waiting, "_HAVE_POLL", False)
    stop = waiting.StopPipe()
    poller = waiting._Poller()
    try:
        assert stop._socks is not None
        poller.register(stop.read_fd)
        assert poller.poll(0) == []
        threading.Timer(0.05, stop.set).start()
        started = time.monotonic()
        assert poller.poll(10_000) == [stop.read_fd]
        assert time.monotonic() - started < 5
        stop.set()
        stop.drain()
        assert poller.poll(0) == []
    finally:
        stop.close()


def test_client_death_by_process_handle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows: the client is watched through a held process handle (faked here), and
    the handle is released on close."""
    exited = {"h": False}
    closed: list[int] = []
    monkeypatch.setattr(procwatch.ProcessWatch, "_exit_fd", lambda self, pid: None)
    monkeypatch.setattr(tsr_platform, "open_process", lambda pid: 77)
    monkeypatch.setattr(tsr_platform, "process_exited", lambda h: exited["h"] and h == 77)
    monkeypatch.setattr(tsr_platform, "close_process", closed.append)
    watch = procwatch.ProcessWatch([os.getpid()])
    assert watch.needs_polling and watch.fds == []
    watch.check()
    assert not watch.gone()
    exited["h"] = True
    watch.check()
    assert watch.gone()
    watch.close()
    assert closed == [77]


def test_client_death_without_pidfd_or_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS-like (no pidfd, no /proc): ``pid_alive`` polling notices the exit."""
    monkeypatch.setattr(tsr_platform, "PROCFS", False)
    monkeypatch.setattr(procwatch.ProcessWatch, "_exit_fd", lambda self, pid: None)
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)  # fmt: skip
    watch = procwatch.ProcessWatch([proc.pid])
    try:
        watch.check()
        assert not watch.gone()
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(30)
        watch.check()
        assert watch.gone()
    finally:
        watch.close()


def test_discovery_without_process_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows: no getpgrp; the parent is watched while it is alive."""
    monkeypatch.delattr(os, "getpgrp", raising=False)
    parent = os.getpid()  # a live process (the test's real parent may be init)
    monkeypatch.setattr(os, "getppid", lambda: parent)
    assert procwatch.discover_client() == [parent]
    assert procwatch.discover_client(5) == [5] and procwatch.discover_client(0) == []
    monkeypatch.setattr(tsr_platform, "pid_alive", lambda pid: False)
    assert procwatch.discover_client() == []


def test_discovery_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS: no /proc; the parent if it is alive and in our process group."""
    if not hasattr(os, "getpgrp"):
        pytest.skip("no process groups")
    monkeypatch.setattr(tsr_platform, "PROCFS", False)
    same = os.getpgid(os.getppid()) == os.getpgrp()
    assert procwatch.discover_client() == ([os.getppid()] if same else [])


def test_only_signals_that_exist_are_handled() -> None:
    names = {signal.Signals(s).name for s in signals.SIGNALS}
    assert {"SIGTERM", "SIGINT"} <= names
    assert ("SIGHUP" in names) == hasattr(signal, "SIGHUP")


def test_windows_workspace_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drive letters and backslashes, as a Windows C++ client gives them (ntpath, the
    os.path of Windows)."""
    monkeypatch.setattr(os, "path", ntpath)  # config uses os.path: all of it, for this test
    got = config.session_dir("T:\\Dataset\\ws", "7", "python_session")
    assert got == "T:\\Dataset\\ws\\python_session\\tr_session_7"
    assert config.session_dir("T:/Dataset/ws/", "7") == got  # forward slashes normalised
    monkeypatch.setenv(config.WORKSPACE_ENV, "C:\\Users\\me\\ws")
    assert config.resolve_workspace() == "C:\\Users\\me\\ws"


def test_launcher_run_as_windows_runs_it(tmp_path: Path) -> None:
    """``python "<launcher>" <id>`` with a workspace of drive letters and backslashes: the
    arguments reach the worker as written (repr in the script, subprocess quoting)."""
    args = ["--workspace", "C:\\Users\\A B\\ws", "--layout", "python_session"]
    text = _LAUNCHER.format(python=sys.executable, args=args, script=None, env={})
    compile(text, "launcher", "exec")
    assert repr("C:\\Users\\A B\\ws") in text and 'os.name == "nt"' in text
    script = tmp_path / "launch.py"
    # the Windows branch, taken here: subprocess.call instead of execv, exit code passed on
    fake_worker = '"-c", "import sys; print(sys.argv[1:]); sys.exit(3)"'
    windows = text.replace('os.name == "nt"', "True").replace('"-m", "tsr_worker"', fake_worker)
    script.write_text(windows)
    out = subprocess.run(
        [sys.executable, str(script), "42"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 3
    assert out.stdout.strip() == repr(["42", *args])


@pytest.fixture
def windows_like(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What Windows gives the worker: no ``dir_fd`` (the path-based directory), no
    ``O_NOFOLLOW`` (an open follows a link) and no ``open`` of a directory (EACCES).
    (After ``tmp_path``, which is made before the patching.)"""
    monkeypatch.setattr(tsr_platform, "HAVE_DIR_FD", False)
    monkeypatch.setattr(sessiondir, "_O_NOFOLLOW", 0)
    real_open = os.open

    def open_like_windows(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if kwargs.get("dir_fd") is None and isinstance(path, str) and os.path.isdir(path):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_like_windows)


@pytest.mark.parametrize("squat", ["directory", "link"])
def test_a_squatted_request_is_answered_once_without_dir_fd(
    windows_like: None, tmp_path: Path, squat: str
) -> None:
    """A link or a directory at request.json, where nothing but a regular file can be
    held open: answered once (the link removed, its target untouched; the directory
    remembered by its identity), not again while it stays, and the next request is
    served. (Before: the path-based directory opened it to hold it, which followed the
    link and cannot open a directory, so it was answered again and again.)"""
    d = tmp_path / "s"
    secret = tmp_path / "secret.json"
    secret.write_text('{"cmd": "hi", "params": "leak"}')
    worker = Worker(WorkerConfig(str(d), client_pid=0, preload=False, wait="poll"))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: worker.waiter_name != "")
        if squat == "link":
            os.symlink(secret, d / "request.json")
        else:
            (d / "request.json").mkdir()
        reply = json.loads(take_response(d))
        assert reply["error"]["code"] == "bad_request", reply
        time.sleep(0.3)  # many polls
        assert not (d / "response.json").exists(), "answered again"
        if squat == "link":
            assert not (d / "request.json").is_symlink(), "the link is removed"
            assert secret.read_text() == '{"cmd": "hi", "params": "leak"}'
        else:
            (d / "request.json").rmdir()
        assert ask(d, '{"cmd": "hi", "params": "next"}')["params"] == "Hi Next"
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()
