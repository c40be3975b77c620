"""Sessions on shared and network filesystems, without a mount: the filesystem type found,
the waiter chosen for it (with injected types), the adaptive poll."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tsr_worker import fstype, waiting
from tsr_worker.config import WorkerConfig
from tsr_worker.fstype import FsType, detect, kind_of_name
from tsr_worker.sessiondir import SessionDir
from tsr_worker.waiting import PollWaiter, StopPipe, WakeKind, choose
from tsr_worker.worker import ExitReason, Worker

import tsr_platform

from .worker_helpers import ask, wait_for

NFS = FsType("nfs4", "network", 0x6969, "statfs+mountinfo")
FUSE = FsType("fuse.sshfs", "fuse", fstype.FUSE_MAGIC, "statfs+mountinfo")
EXT4 = FsType("ext4", "local", 0xEF53, "statfs+mountinfo")
UNKNOWN = FsType("unknown", "unknown")


@pytest.fixture
def sdir(tmp_path: Path) -> Iterator[SessionDir]:
    d = SessionDir.open(str(tmp_path / "ps" / "tr_session_n"), create=True)
    yield d
    d.close()


# ----------------------------------------------------------------------------- detection


needs_dir_fd = pytest.mark.skipif(
    not tsr_platform.HAVE_DIR_FD, reason="detection reads the open directory's descriptor"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="statfs/mountinfo: Linux")
@needs_dir_fd
def test_detect_names_the_test_directory_like_the_mount_table(sdir: SessionDir) -> None:
    found = detect(sdir.fd, sdir.path)
    assert found.how == "statfs+mountinfo" and found.magic is not None
    # the test directory is on a local disk or tmpfs here and in CI
    assert found.kind == "local" and found.events_trusted, found


@needs_dir_fd
def test_mountinfo_is_matched_by_device_then_by_longest_mount_point(
    sdir: SessionDir, tmp_path: Path
) -> None:
    dev = os.fstat(sdir.fd).st_dev
    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        f"40 22 {os.major(dev)}:{os.minor(dev)} / /mnt/elsewhere rw - nfs4 srv:/x rw\n"
    )
    assert fstype._mountinfo_type(sdir.fd, sdir.path, str(table)) == "nfs4"
    table.write_text(
        "22 1 250:1 / / rw - ext4 /dev/sda1 rw\n"
        f"41 22 250:9 / {sdir.path.rsplit('/', 1)[0]} rw shared:1 - fuse.sshfs h:/ rw\n"
        "42 22 250:7 / /no rw - tmpfs t rw\n"
    )
    assert fstype._mountinfo_type(sdir.fd, sdir.path, str(table)) == "fuse.sshfs"
    assert fstype._mountinfo_type(sdir.fd, sdir.path, str(tmp_path / "none")) is None


def test_without_linux_calls_the_type_is_unknown_and_auto_polls(
    sdir: SessionDir, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The portable fallback: no fstatfs, no /proc mount table -> unknown -> poll."""
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(fstype, "MOUNTINFO", str(tmp_path / "absent"))
    found = detect(sdir.fd, sdir.path)
    assert found == FsType("unknown", "unknown", None, "none")
    assert choose("auto", found, inotify_ok=False).waiter == "poll"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("nfs", "network"), ("nfs4", "network"), ("cifs", "network"), ("smb3", "network"),
        ("9p", "network"), ("ceph", "network"), ("lustre", "network"), ("gpfs", "network"),
        ("fuse", "fuse"), ("fuse.bindfs", "fuse"), ("fuse.sshfs", "fuse"), ("fuseblk", "fuse"),
        ("fuse.glusterfs", "network"), ("ext4", "local"), ("xfs", "local"), ("tmpfs", "local"),
        ("btrfs", "local"), ("overlay", "local"), ("zfs", "local"), ("weirdfs", "unknown"),
    ],
)  # fmt: skip
def test_kind_of_a_mount_table_name(name: str, kind: str) -> None:
    assert kind_of_name(name) == kind


def test_magic_wins_and_the_table_refines_it(
    sdir: SessionDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fstype, "_statfs_magic", lambda fd: fstype.FUSE_MAGIC)
    monkeypatch.setattr(fstype, "_mountinfo_type", lambda fd, path: "fuse.glusterfs")
    assert detect(sdir.fd, sdir.path).kind == "network"
    monkeypatch.setattr(fstype, "_mountinfo_type", lambda fd, path: None)
    assert detect(sdir.fd, sdir.path) == FsType("fuse", "fuse", fstype.FUSE_MAGIC, "statfs")
    monkeypatch.setattr(fstype, "_statfs_magic", lambda fd: 0x6969)
    assert detect(sdir.fd, sdir.path).kind == "network"


# ----------------------------------------------------------------------------- the choice


@pytest.mark.parametrize(
    ("mode", "fs", "ok", "waiter", "warns"),
    [
        ("auto", EXT4, True, "inotify", False),
        ("auto", EXT4, False, "poll", False),
        ("auto", NFS, True, "poll", False),
        ("auto", FUSE, True, "poll", False),
        ("auto", UNKNOWN, True, "poll", False),
        ("inotify", NFS, True, "inotify", True),
        ("inotify", FUSE, True, "inotify", True),
        ("inotify", EXT4, True, "inotify", False),
        ("poll", EXT4, True, "poll", False),
        ("upstream", NFS, True, "upstream", False),
    ],
)  # fmt: skip
def test_choice(mode: str, fs: FsType, ok: bool, waiter: str, warns: bool) -> None:
    c = choose(mode, fs, ok)
    assert c.waiter == waiter and bool(c.warning) is warns
    assert fs.name in c.reason
    if warns:
        assert "no inotify event" in c.warning and "--wait auto" in c.warning


@pytest.mark.parametrize(("mode", "waiter"), [("auto", "poll"), ("inotify", "inotify")])
def test_worker_on_a_network_filesystem_polls_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    mode: str, waiter: str,
) -> None:  # fmt: skip
    warns = mode == "inotify"
    if mode == "inotify" and not waiting.inotify_available():
        pytest.skip("no inotify")
    monkeypatch.setattr(fstype, "detect", lambda fd, path: NFS)
    d = tmp_path / "s"
    worker = Worker(WorkerConfig(str(d), client_pid=0, preload=False, wait=mode))  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="tsr_worker")
    t = threading.Thread(target=worker.run)
    t.start()
    try:
        wait_for(lambda: worker.waiter_name != "", 10)
        assert worker.waiter_name == waiter and worker.fs == NFS
        assert ask(d, '{"cmd": "hello", "params": "far side"}')["params"] == "Hello Far Side"
    finally:
        (d / "exit.flag").touch()
        t.join(10)
    text = caplog.text
    assert f"waiting by {waiter}: " in text and "nfs4 (network" in text
    assert ("WARNING" in text and "raise no inotify event" in text) is warns


# ----------------------------------------------------------------------------- the poll


def test_poll_schedule_is_fast_while_active_and_backs_off_when_idle(sdir: SessionDir) -> None:
    stop = StopPipe()
    w = PollWaiter(sdir, stop, None)
    try:
        now = time.monotonic()
        w.activity()
        assert w.interval_s(now) == waiting.ACTIVE_MIN_S
        assert w.interval_s(now + waiting.ACTIVE_HOLD_S - 0.01) == waiting.ACTIVE_MIN_S
        assert w.interval_s(now + waiting.ACTIVE_HOLD_S + 5) == pytest.approx(0.5, abs=0.01)
        assert w.interval_s(now + 3600) == waiting.IDLE_MAX_S
        w._costs.extend([0.001] * 8)  # probes of 1 ms (a far NFS server): 20 ms apart
        assert w.interval_s(now) == pytest.approx(0.001 / waiting.PROBE_SHARE)
        w._costs.append(0.5)  # one probe preempted on a busy machine: not the filesystem
        assert w.interval_s(now) == pytest.approx(0.001 / waiting.PROBE_SHARE)
        w._costs.extend([1.0] * 16)
        assert w.interval_s(now) == waiting.ACTIVE_MAX_S
    finally:
        stop.close()


def test_poll_reports_what_changed_and_sees_the_directory_go(sdir: SessionDir) -> None:
    stop = StopPipe()
    w = PollWaiter(sdir, stop, None)
    path = Path(sdir.path)
    try:
        first = w.wait(None)  # the first look reports everything
        assert first.kind is WakeKind.CHANGES and "request.json" in first.names
        assert w.wait(None).names <= {"status.txt", "response.json"}  # nothing new
        (path / "request.json").write_text("{}")
        assert "request.json" in w.wait(None).names
        (path / "exit.flag").touch()
        assert "exit.flag" in w.wait(None).names
        slow: set[str] = set()
        deadline = time.monotonic() + 5
        while "status.txt" not in slow and time.monotonic() < deadline:
            slow |= w.wait(None).names  # the slow names at least every SLOW_CHECK_S
        assert "status.txt" in slow
        assert w.wait(0.0).kind in (WakeKind.TIMEOUT, WakeKind.CHANGES)
        shutil.rmtree(path)
        start = time.monotonic()
        kind = w.wait(None).kind
        while kind is not WakeKind.DIR_GONE and time.monotonic() - start < 5:
            kind = w.wait(None).kind
        assert kind is WakeKind.DIR_GONE
        assert time.monotonic() - start < 1.0
        stop.set()
        assert w.wait(None).kind is WakeKind.STOP
    finally:
        stop.close()


def test_poll_worker_serves_and_leaves_on_every_exit(tmp_path: Path) -> None:
    """The poll mode end to end, in process: requests, then the directory removed."""
    d = tmp_path / "s"
    worker = Worker(WorkerConfig(str(d), client_pid=0, preload=False, wait="poll"))
    result: list[ExitReason] = []
    t = threading.Thread(target=lambda: result.append(worker.run()))
    t.start()
    try:
        wait_for(lambda: worker.waiter_name == "poll", 10)
        for i in range(5):
            assert ask(d, f'{{"cmd": "hi", "params": "n{i}"}}')["params"] == f"Hi N{i}"
        shutil.rmtree(d)
        t.join(10)
        assert result == [ExitReason.DIR_REMOVED] and not d.exists()
    finally:
        worker.stop()
        t.join(10)
