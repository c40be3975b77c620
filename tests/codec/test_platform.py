"""The codec's portable paths (what Windows and macOS run), tested on Linux: each fast path
turned off here, and all of them at once by the stripped mode (``TSR_STRIP_PLATFORM=1``,
``tests/platform_strip``), which scripts/test.sh runs as a second pass."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import tsr
import tsr_platform
from tsr import _io

STRIPPED = os.environ.get("TSR_STRIP_PLATFORM") == "1"


@pytest.mark.skipif(not STRIPPED, reason="only in the stripped mode")
def test_the_stripped_mode_is_in_force_here_and_in_children() -> None:
    """What the mode promises is what the code sees, in this process and in those it
    starts (the workers of the worker suite)."""
    code = (
        "import os, select, signal, tsr_platform as p;"
        "print(hasattr(os, 'pread'), hasattr(os, 'writev'), hasattr(select, 'poll'),"
        " hasattr(signal, 'SIGHUP'), p.HAVE_DIR_FD, p.PROCFS, p.LINUX_LIBC)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"] * 7
    assert not tsr_platform.HAVE_PREADV and not tsr_platform.HAVE_WRITEV
    assert os.supports_dir_fd == set()
    with pytest.raises(NotImplementedError):
        os.stat("x", dir_fd=0)
    assert _io._libc("fallocate") is None


@pytest.fixture
def no_pread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tsr_platform, "HAVE_PREAD", False)
    monkeypatch.setattr(tsr_platform, "HAVE_PREADV", False)


@pytest.mark.usefixtures("no_pread")
def test_reads_without_pread_leave_the_file_position_alone(tmp_path: Path) -> None:
    """Seek, read, seek back: a caller's open file keeps its position, and a big copy is
    read by the calling thread alone (the position cannot be shared)."""
    arr = np.arange(3 << 20, dtype=np.int32)  # 12 MiB
    tsr.save(tmp_path / "x.tsr", arr)
    assert _io._read_threads(1 << 30) == 1
    with open(tmp_path / "x.tsr", "rb") as f:
        f.seek(17)
        assert tsr.read_header(f).shape == arr.shape
        assert np.array_equal(tsr.load(f, mmap=False), arr)
        assert f.tell() == 17
    assert tsr.validate(tmp_path / "x.tsr").ok
    assert tsr_platform.pread(os.open(tmp_path / "x.tsr", os.O_RDONLY), 4, 0) == b"TSR!"


@pytest.mark.usefixtures("no_pread")
def test_positional_reads_from_threads_do_not_mix(tmp_path: Path) -> None:
    """The fallback's lock: concurrent readers of one descriptor each get their bytes."""
    data = bytes(range(256)) * 4096
    (tmp_path / "b").write_bytes(data)
    fd = os.open(tmp_path / "b", os.O_RDONLY | tsr_platform.O_BINARY)
    bad: list[int] = []

    def reader(offset: int) -> None:
        for _ in range(200):
            buf = bytearray(1000)
            n = tsr_platform.pread_into(fd, memoryview(buf), offset)
            if bytes(buf[:n]) != data[offset : offset + 1000]:
                bad.append(offset)

    try:
        threads = [threading.Thread(target=reader, args=(o,)) for o in (0, 1001, 77777, 500000)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        os.close(fd)
    assert not bad


def test_a_short_read_without_pread_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_pread: None
) -> None:
    tsr.save(tmp_path / "x.tsr", np.zeros(100, np.float32))
    with open(tmp_path / "x.tsr", "r+b") as f:
        fd = f.fileno()
        h = tsr.read_header(f)
        os.truncate(tmp_path / "x.tsr", 200)
        with pytest.raises(tsr.TruncatedError):
            _io._read_into(fd, memoryview(bytearray(h.total_elements * 4)), 64)


def test_saves_without_writev_write_the_payload_without_joining_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Header, then the array's own memory: two writes, no copy of the payload."""
    monkeypatch.setattr(tsr_platform, "HAVE_WRITEV", False)
    calls: list[tuple[int, int]] = []  # (address, length) of each buffer written
    real_write = os.write

    def write(fd: int, data: bytes | memoryview) -> int:
        calls.append((np.frombuffer(data, np.uint8).ctypes.data, len(data)))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    arr = np.arange(1000, dtype=np.float32)
    tsr.save(tmp_path / "x.tsr", arr)
    assert [n for _, n in calls] == [64, arr.nbytes]
    assert calls[1][0] == arr.ctypes.data  # the array's own memory
    assert (tmp_path / "x.tsr").read_bytes() == tsr.to_bytes(arr)


def test_cpu_count_without_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert tsr_platform.cpu_count() == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert tsr_platform.cpu_count() == 1


def test_pid_alive(dead_pid: int) -> None:
    assert tsr_platform.pid_alive(os.getpid())
    assert not tsr_platform.pid_alive(dead_pid)
    assert not tsr_platform.pid_alive(0) and not tsr_platform.pid_alive(-5)


def _refuse(times: list[int]) -> object:
    real = os.replace

    def replace(src: str, dst: str) -> None:
        if times[0] != 0:
            times[0] -= 1
            raise PermissionError(13, "Access is denied", dst)
        real(src, dst)

    return replace


def test_a_replace_refused_for_a_while_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows: the target is open elsewhere for a moment (a virus scanner, an indexer)."""
    monkeypatch.setattr(tsr_platform, "REPLACE_RETRIES", True)
    monkeypatch.setattr(_io, "_exchange", lambda a, b: False)  # no renameat2: os.replace
    tsr.save(tmp_path / "x.tsr", np.zeros(3, np.float32))
    left = [3]
    monkeypatch.setattr(os, "replace", _refuse(left))
    tsr.save(tmp_path / "x.tsr", np.ones(3, np.float32))
    assert left == [0] and tsr.load(tmp_path / "x.tsr").tolist() == [1, 1, 1]


def test_a_replace_refused_for_good_names_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded retries, then an error saying why; the old file and the directory are as
    before (the temp file is removed)."""
    monkeypatch.setattr(tsr_platform, "REPLACE_RETRIES", True)
    monkeypatch.setattr(_io, "_exchange", lambda a, b: False)  # no renameat2: os.replace
    monkeypatch.setattr(tsr_platform, "REPLACE_RETRY_S", 0.05)
    tsr.save(tmp_path / "x.tsr", np.zeros(3, np.float32))
    monkeypatch.setattr(os, "replace", _refuse([-1]))
    with pytest.raises(tsr_platform.ReplaceBlockedError, match="open or memory-mapped") as info:
        tsr.save(tmp_path / "x.tsr", np.ones(3, np.float32))
    assert isinstance(info.value, PermissionError) and info.value.filename.endswith("x.tsr")
    assert os.listdir(tmp_path) == ["x.tsr"]
    assert tsr.load(tmp_path / "x.tsr").tolist() == [0, 0, 0]


def test_a_refused_replace_is_not_retried_off_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On POSIX a refused rename means no permission: waiting cannot help."""
    monkeypatch.setattr(tsr_platform, "REPLACE_RETRIES", False)
    left = [1]
    monkeypatch.setattr(os, "replace", _refuse(left))
    with pytest.raises(PermissionError) as info:
        tsr_platform.replace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert not isinstance(info.value, tsr_platform.ReplaceBlockedError) and left == [0]


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
def test_load_without_mmap_leaves_no_map(tmp_path: Path) -> None:
    """What Windows needs to replace or delete the file afterwards: no map left open."""
    path = tmp_path / "mapped-or-not.tsr"
    tsr.save(path, np.arange(5000, dtype=np.float32))

    def mapped() -> bool:
        return str(path) in Path("/proc/self/maps").read_text()

    copy = tsr.load(path, mmap=False)
    assert not mapped()
    view = tsr.load(path)
    assert mapped()  # the check can see a map
    del view
    assert copy.sum() == sum(range(5000))


def test_files_are_opened_binary() -> None:
    """O_BINARY (Windows: no CR-LF translation) in every open flag set of the codec."""
    for flags in (_io._OPEN_READ, _io._CREATE, _io._OPEN_PROBE):
        assert flags & tsr_platform.O_BINARY == tsr_platform.O_BINARY


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_without_fcntl_the_temp_is_closed_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows has no ``fcntl`` (no temp locks) and cannot rename a file that is open: the
    save closes its temp first, and still replaces the target atomically."""
    monkeypatch.setattr(_io, "_fcntl", None)
    monkeypatch.setattr(_io, "_resource", None)
    monkeypatch.setattr(_io, "_exchange", lambda a, b: False)
    tsr.save(tmp_path / "x.tsr", np.zeros(3, np.float32))
    open_at_rename: list[str] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{fd}") == os.fspath(src):
                    open_at_rename.append(src)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    tsr.save(tmp_path / "x.tsr", np.ones(3, np.float32))
    assert not open_at_rename
    assert tsr.load(tmp_path / "x.tsr").tolist() == [1, 1, 1]
    assert os.listdir(tmp_path) == ["x.tsr"]
