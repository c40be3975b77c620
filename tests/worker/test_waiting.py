"""Waiting: the inotify and polling waiters, the client-process watch, idle behaviour and
start-up time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tsr_worker import procwatch
from tsr_worker.procwatch import ProcessWatch, discover_client
from tsr_worker.sessiondir import SessionDir
from tsr_worker.waiting import (
    InotifyWaiter,
    PollWaiter,
    StopPipe,
    UpstreamPollWaiter,
    WakeKind,
    inotify_available,
)

import tsr_platform

from .worker_helpers import ctx_switches, read_status, send, spawn, wait_for

needs_inotify = pytest.mark.skipif(not inotify_available(), reason="no inotify")


@pytest.fixture
def sdir(tmp_path: Path) -> Iterator[SessionDir]:
    d = SessionDir.open(str(tmp_path / "ps" / "tr_session_w"), create=True)
    yield d
    d.close()


@needs_inotify
def test_inotify_reports_complete_writes_and_renames(sdir: SessionDir) -> None:
    stop = StopPipe()
    w = InotifyWaiter(sdir, stop, None)
    try:
        assert w.wait(0.02).kind is WakeKind.TIMEOUT
        path = Path(sdir.path)
        (path / "request.tmp").write_text("{}")
        os.replace(path / "request.tmp", path / "request.json")
        wake = w.wait(1)
        assert wake.kind is WakeKind.CHANGES and "request.json" in wake.complete
        with open(path / "status.txt", "w") as f:  # written in place, still open
            f.write("ex")
            f.flush()
            wake = w.wait(1)
            assert "status.txt" in wake.writing and "status.txt" not in wake.complete
            f.write("it")
        wake = w.wait(1)
        assert "status.txt" in wake.complete
        (path / "other.tsr").write_bytes(b"x")  # names nobody waits for are dropped
        (path / "r.tsr").write_bytes(b"x")
        assert w.wait(0.05).kind is WakeKind.TIMEOUT
        (path / "exit.flag").touch()
        assert "exit.flag" in w.wait(1).names
        stop.set()
        assert w.wait(None).kind is WakeKind.STOP
    finally:
        w.close()
        stop.close()


@needs_inotify
@pytest.mark.parametrize("how", ["rmtree", "rename", "rm_parent"])
def test_inotify_sees_the_directory_go(sdir: SessionDir, how: str) -> None:
    stop = StopPipe()
    w = InotifyWaiter(sdir, stop, None)
    path = Path(sdir.path)
    (path / "status.txt").write_text("running")
    w.wait(0.05)
    if how == "rmtree":
        shutil.rmtree(path)
    elif how == "rename":
        os.rename(path, path.with_name("elsewhere"))
    else:
        shutil.rmtree(path.parent)
    try:
        kinds = [w.wait(1).kind]
        while kinds[-1] is WakeKind.CHANGES:  # the files' own deletion first
            kinds.append(w.wait(1).kind)
        assert kinds[-1] is WakeKind.DIR_GONE, kinds
    finally:
        w.close()
        stop.close()


def test_upstream_poll_waiter_sleeps_the_backoff_and_honours_stop(sdir: SessionDir) -> None:
    stop = StopPipe()
    w = UpstreamPollWaiter(sdir, stop, None)
    try:
        start = time.monotonic()
        for _ in range(9):  # 9 x 32 ms
            assert w.wait(None).kind is WakeKind.CHANGES
        assert 0.28 < time.monotonic() - start < 2.0
        for _ in range(3):  # then 64 ms each
            start = time.monotonic()
            w.wait(None)
            assert time.monotonic() - start > 0.06
        w.activity()  # a request came: back to 32 ms
        durations = []
        for _ in range(3):
            start = time.monotonic()
            w.wait(None)
            durations.append(time.monotonic() - start)
        assert 0.03 < min(durations) < 0.06, durations
        assert w.wait(0.001).kind is WakeKind.TIMEOUT
        stop.set()
        start = time.monotonic()
        assert w.wait(None).kind is WakeKind.STOP
        assert time.monotonic() - start < 0.02
        shutil.rmtree(sdir.path)
        assert w.wait(None).kind is WakeKind.DIR_GONE
    finally:
        stop.close()


@pytest.mark.parametrize("pidfd", [True, False])
def test_process_watch(sdir: SessionDir, monkeypatch: pytest.MonkeyPatch, pidfd: bool) -> None:
    if pidfd and not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfds here (the polling case runs)")
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
        monkeypatch.setattr(procwatch, "FALLBACK_CHECK_S", 0.05)
        monkeypatch.setattr("tsr_worker.waiting.FALLBACK_CHECK_S", 0.05)
    sleeper = subprocess.Popen(["sleep", "30"])
    watch = ProcessWatch([sleeper.pid])
    assert watch.needs_polling is not pidfd and len(watch.fds) == int(pidfd)
    stop = StopPipe()
    w = PollWaiter(sdir, stop, watch) if not pidfd else None
    w2 = InotifyWaiter(sdir, stop, watch) if pidfd and inotify_available() else None
    waiter = w or w2
    if waiter is None:
        pytest.skip("no inotify")
    try:
        assert not watch.gone()
        assert waiter.wait(0.05).kind in (WakeKind.TIMEOUT, WakeKind.CHANGES)
        sleeper.kill()
        sleeper.wait()
        deadline = time.monotonic() + 5
        kind = None
        while time.monotonic() < deadline and kind is not WakeKind.CLIENT_GONE:
            kind = waiter.wait(1).kind
        assert kind is WakeKind.CLIENT_GONE and watch.gone()
    finally:
        sleeper.kill()
        watch.close()
        stop.close()


def test_watch_of_nothing_is_never_gone() -> None:
    assert not ProcessWatch([]).gone()


def test_discover_client_rules() -> None:
    assert discover_client(0) == []
    assert discover_client(1234) == [1234]
    # Started directly by this (non-shell) process, in its process group: watch the parent.
    code = "from tsr_worker.procwatch import discover_client; print(discover_client())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [f"[{os.getpid()}]"]


@pytest.mark.skipif(not tsr_platform.PROCFS, reason="finding the job's processes needs /proc")
def test_discover_client_after_a_shell_launch_watches_the_job(tmp_path: Path) -> None:
    """Launched with ``sh -c '... &'`` from a process group leader (the C++ program started
    from a shell): the worker is re-parented and watches the leader's group."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from tsr_worker.procwatch import discover_client as d\nprint(d(), flush=True)\n"
    )
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.run(['sh', '-c', f'{{sys.executable}} {probe} &'])\n"
        "time.sleep(3)\n"
    )
    leader = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert leader.stdout is not None
        line = leader.stdout.readline()
        watched = [int(p) for p in line.strip(" []\n").split(",") if p.strip()]
        assert leader.pid in watched and os.getpid() not in watched, line
    finally:
        leader.kill()
        leader.wait()


def test_idle_worker_makes_no_timed_wake_ups(tmp_path: Path) -> None:
    """Event-driven: an idle worker's main thread does not wake up at all."""
    if not inotify_available():
        pytest.skip("no inotify")
    d = tmp_path / "s"
    w = spawn(d, "--idle-timeout", "0")
    try:
        send(d, '{"cmd": "hi", "params": "x"}')  # settle: first request served
        wait_for((d / "response.json").exists)
        (d / "response.json").unlink()
        time.sleep(0.1)
        before = ctx_switches(w.proc.pid)
        time.sleep(1.0)
        assert ctx_switches(w.proc.pid) - before == 0
    finally:
        w.kill()


def test_upstream_like_polling_mode_does_wake_up(tmp_path: Path) -> None:
    """The contrast: ``--wait upstream`` wakes every 32 to 1024 ms as upstream does."""
    d = tmp_path / "s"
    w = spawn(d, "--wait", "upstream", "--idle-timeout", "0")
    try:
        before = ctx_switches(w.proc.pid)
        time.sleep(0.5)
        assert ctx_switches(w.proc.pid) - before >= 5
    finally:
        w.kill()


@pytest.mark.skipif(
    os.environ.get("TSR_STRIP_PLATFORM") == "1", reason="the strip itself costs start-up time"
)
def test_start_up_to_running_is_fast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``running`` appears long before torch is imported (upstream: 1.2 s, importing torch)."""
    times = []
    for i in range(3):
        d = tmp_path / f"s{i}"
        start = time.monotonic()
        w = spawn(d, preload=True)
        times.append(time.monotonic() - start)
        (d / "exit.flag").touch()
        w.wait_exit(10)
        assert read_status(d) == "terminated"
    with capsys.disabled():
        print(f"\nstart-up to running: {', '.join(f'{t * 1000:.0f} ms' for t in times)}")
    assert min(times) < 0.5
