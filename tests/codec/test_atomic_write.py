"""The save path: what an atomic save does to links, modes, owners, names, space,
descriptors and other writers' temp files (issue 14, points 4, 5, 6, 14, 15, 20)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import tsr
from tsr import _io

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
DAY = 24 * 3600


def _temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if _io._TMP_MARK in p.name)


def _rescan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_io, "_scanned", {})  # as in a new process


# ----------------------------------------------------------------------------- links


def test_a_symlink_stays_a_link_and_its_target_is_replaced(tmp_path: Path) -> None:
    real = tmp_path / "ckpt_0100.tsr"
    tsr.save(real, np.zeros(2, np.float32))
    link = tmp_path / "latest.tsr"
    link.symlink_to(real.name)  # relative, as `ln -s ckpt_0100.tsr latest.tsr`
    tsr.save(link, np.ones(3, np.float32))
    assert link.is_symlink() and os.readlink(link) == real.name
    assert tsr.load(real).tolist() == [1, 1, 1]
    assert sorted(os.listdir(tmp_path)) == ["ckpt_0100.tsr", "latest.tsr"]


def test_a_chain_of_links_into_another_directory_is_followed(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "real.tsr"
    tsr.save(real, np.zeros(1, np.int8))
    (tmp_path / "b.tsr").symlink_to(real)  # absolute
    (tmp_path / "a.tsr").symlink_to("b.tsr")
    tsr.save(tmp_path / "a.tsr", np.full(4, 7, np.int8))
    assert tsr.load(real).tolist() == [7] * 4
    assert (tmp_path / "a.tsr").is_symlink() and (tmp_path / "b.tsr").is_symlink()
    assert os.listdir(tmp_path / "store") == ["real.tsr"]  # the temp went beside the file


def test_a_dangling_link_creates_its_target_like_open(tmp_path: Path) -> None:
    link = tmp_path / "latest.tsr"
    link.symlink_to("new.tsr")
    tsr.save(link, np.ones(2, np.int32))
    assert link.is_symlink() and tsr.load(tmp_path / "new.tsr").tolist() == [1, 1]


def test_follow_symlinks_false_replaces_the_link_itself(tmp_path: Path) -> None:
    real = tmp_path / "real.tsr"
    tsr.save(real, np.zeros(2, np.float32))
    link = tmp_path / "link.tsr"
    link.symlink_to(real)
    tsr.save(link, np.ones(3, np.float32), follow_symlinks=False)
    assert not link.is_symlink() and tsr.load(link).tolist() == [1, 1, 1]
    assert tsr.load(real).tolist() == [0, 0]


def test_a_link_loop_is_an_eloop_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "a.tsr").symlink_to("b.tsr")
    (tmp_path / "b.tsr").symlink_to("a.tsr")
    with pytest.raises(OSError) as info:
        tsr.save(tmp_path / "a.tsr", np.ones(1, np.float32))
    assert info.value.errno == errno.ELOOP and info.value.filename == str(tmp_path / "a.tsr")


def test_other_hard_links_keep_the_old_content(tmp_path: Path) -> None:
    """Decided: the save is atomic at the name given, so it is a new inode there; the
    file's other names still show the old tensor, complete."""
    path = tmp_path / "x.tsr"
    tsr.save(path, np.zeros(3, np.float32))
    os.link(path, tmp_path / "backup.tsr")
    tsr.save(path, np.ones(3, np.float32))
    assert tsr.load(path).tolist() == [1, 1, 1]
    assert tsr.load(tmp_path / "backup.tsr").tolist() == [0, 0, 0]
    assert os.stat(tmp_path / "backup.tsr").st_nlink == 1


# ----------------------------------------------------------------------------- mode, owner


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604, 0o755])
def test_a_replaced_file_keeps_its_permission_bits(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "private.tsr"
    tsr.save(path, np.zeros(2, np.float32))
    os.chmod(path, mode)
    tsr.save(path, np.ones(2, np.float32))
    tsr.save(path, np.ones(2 << 20, np.float32))  # a big one too
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


def test_a_new_file_gets_0666_less_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        tsr.save(tmp_path / "x.tsr", np.zeros(1, np.float32))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "x.tsr").st_mode) == 0o640


@pytest.mark.skipif(not ROOT, reason="giving a file another owner needs root")
def test_a_replaced_file_keeps_its_owner_and_group(tmp_path: Path) -> None:
    path = tmp_path / "x.tsr"
    tsr.save(path, np.zeros(2, np.float32))
    os.chown(path, 12345, 23456)
    tsr.save(path, np.ones(2, np.float32))
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (12345, 23456)


_AS_NOBODY = """
import errno, os, sys
import numpy as np, tsr
os.setgid(65534); os.setuid(65534)
target = sys.argv[1]
try:
    tsr.save(target, np.ones(2, np.float32))
except PermissionError as exc:
    print("PermissionError", exc.errno, exc.filename)
else:
    print("saved")
"""


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user may reach (pytest's tmp_path is its owner's alone)."""
    d = Path(tempfile.mkdtemp(prefix="tsr-public-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


def _as_nobody(target: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY, str(target)], check=False, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(not ROOT, reason="runs a save as another user")
@pytest.mark.parametrize("case", ["read_only_0444", "another_users_0644"])
def test_a_file_the_caller_may_not_write_is_not_replaced(public_dir: Path, case: str) -> None:
    """As ``open(path, "wb")``: PermissionError naming the target, the file untouched,
    no temp left (the directory itself is writable by the caller)."""
    d = public_dir / "shared"
    d.mkdir()
    os.chown(d, 65534, 65534)
    target = d / "x.tsr"
    tsr.save(target, np.zeros(2, np.float32))
    if case == "read_only_0444":
        os.chown(target, 65534, 65534)
        os.chmod(target, 0o444)
    else:
        os.chmod(target, 0o644)  # root's
    before = target.read_bytes()
    assert _as_nobody(target) == f"PermissionError {errno.EACCES} {target}"
    assert target.read_bytes() == before and os.listdir(d) == ["x.tsr"]
    os.chmod(target, 0o666)  # now the caller may write it: replaced, mode and owner kept
    assert _as_nobody(target) == "saved"
    st = os.stat(target)
    assert tsr.load(target).tolist() == [1, 1] and stat.S_IMODE(st.st_mode) == 0o666


# ----------------------------------------------------------------------------- names, errors


@pytest.mark.parametrize("length", [230, 235, 250, 255])
def test_every_name_open_accepts_saves(tmp_path: Path, length: int) -> None:
    name = "c" * (length - 4) + ".tsr"
    tsr.save(tmp_path / name, np.ones(3, np.float32))
    tsr.save(tmp_path / name, np.zeros(3, np.float32))  # over an existing file too
    assert os.listdir(tmp_path) == [name] and tsr.load(tmp_path / name).tolist() == [0] * 3


def test_a_long_multibyte_name_saves_and_its_temp_is_recognised(tmp_path: Path) -> None:
    name = "ü" * 125 + ".tsr"  # 254 bytes in UTF-8
    tsr.save(tmp_path / name, np.ones(1, np.float32))
    assert os.listdir(tmp_path) == [name]
    temp = _io._temp_name(name, 255)
    assert len(os.fsencode(temp)) <= 255 and _io._temp_kind(temp) == "locked"


def test_a_name_too_long_for_open_is_enametoolong_naming_the_path(tmp_path: Path) -> None:
    target = tmp_path / ("d" * 256)
    with pytest.raises(OSError) as info:
        tsr.save(target, np.ones(1, np.float32))
    assert info.value.errno == errno.ENAMETOOLONG and info.value.filename == str(target)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("path", "cls"),
    [("", FileNotFoundError), ("sub/", IsADirectoryError), ("sub", IsADirectoryError)],
)
def test_names_that_cannot_be_files_fail_like_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, cls: type[OSError]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(cls) as info:
        tsr.save(path, np.ones(1, np.float32))
    assert info.value.filename == path
    assert sorted(os.listdir(tmp_path)) == ["sub"] and os.listdir(tmp_path / "sub") == []


def test_a_missing_directory_names_the_target(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "x.tsr"
    with pytest.raises(FileNotFoundError) as info:
        tsr.save(target, np.ones(1, np.float32))
    assert info.value.filename == str(target)


def test_bytes_and_pathlike_paths_save(tmp_path: Path) -> None:
    tsr.save(os.fsencode(tmp_path / "b.tsr"), np.ones(2, np.int8))
    assert tsr.load(tmp_path / "b.tsr").tolist() == [1, 1]


@pytest.mark.skipif(not ROOT, reason="runs a save as another user")
def test_a_directory_without_write_permission_names_the_target(public_dir: Path) -> None:
    d = public_dir / "ro"
    d.mkdir()
    os.chmod(d, 0o755)  # root's: nobody may not create in it
    target = d / "x.tsr"
    assert _as_nobody(target) == f"PermissionError {errno.EACCES} {target}"


def _unshare_available(*flags: str) -> bool:
    if not ROOT or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", *flags, "true"], check=False, capture_output=True)
    return probe.returncode == 0


def _on_small_tmpfs(tmp_path: Path, size: str, code: str, *args: str) -> list[str]:
    """Run ``code`` in a subprocess with a tmpfs of ``size`` mounted on ``tmp_path/fs``
    (in a private mount namespace, so nothing outlives it); its stdout lines."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    script = f'mount -t tmpfs -o size={size} tmpfs "$1" && shift && exec "$@"'
    cmd = ["unshare", "--mount", "sh", "-c", script, "sh", str(mnt), sys.executable, "-c"]
    out = subprocess.run([*cmd, textwrap.dedent(code), str(mnt), *args],
                         check=False, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


needs_mount_ns = pytest.mark.skipif(
    not _unshare_available("--mount"), reason="needs root and unshare --mount"
)


@needs_mount_ns
def test_no_space_names_the_target_and_leaves_no_temp(tmp_path: Path) -> None:
    code = """
    import errno, os, sys
    import numpy as np, tsr
    d = sys.argv[1]
    target = os.path.join(d, "big.tsr")
    try:
        tsr.save(target, np.ones(3 << 20, np.float32))  # 12 MiB on a 4 MiB filesystem
    except OSError as exc:
        print(type(exc).__name__, errno.errorcode[exc.errno], exc.filename == target)
    print(len(os.listdir(d)))
    """
    assert _on_small_tmpfs(tmp_path, "4m", code) == ["OSError", "ENOSPC", "True", "0"]


@needs_mount_ns
def test_a_replace_loop_whose_old_and_new_fit_never_runs_out_of_space(tmp_path: Path) -> None:
    """On an 8 MiB filesystem, saves of 3.5 MiB over one another always find room (old +
    new = 7 MiB), and, room being short, each frees the file it replaced before it
    returns (what else writes there finds the space free)."""
    code = """
    import os, sys
    import numpy as np, tsr
    target = os.path.join(sys.argv[1], "x.tsr")
    a = np.zeros(7 << 17, np.float32)  # 3.5 MiB
    failures = late = 0
    for i in range(300):
        a[0] = i
        try:
            tsr.save(target, a)
        except OSError:
            failures += 1
        fs = os.statvfs(sys.argv[1])
        late += (fs.f_blocks - fs.f_bavail) * fs.f_frsize > 5 << 20  # old still held
    print(failures, late, tsr.load(target)[0])
    """
    assert _on_small_tmpfs(tmp_path, "8m", code) == ["0", "0", "299.0"]


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("count", [3, 1 << 20])
def test_a_save_leaves_at_most_one_descriptor_until_the_next_save(
    tmp_path: Path, count: int
) -> None:
    target = tmp_path / "x.tsr"
    tsr.save(target, np.zeros(count, np.float32))
    _io._wait_for_freeing()
    before = _fds()
    for value in (1, 2, 3):
        tsr.save(target, np.full(count, value, np.float32))
        assert len(_fds() - before) <= 1  # at once, not eventually
        assert os.listdir(tmp_path) == ["x.tsr"]  # no name left behind, even for a moment
    _io._wait_for_freeing()
    assert not _fds() - before
    assert tsr.load(target)[-1] == 3


@pytest.mark.skipif(
    os.environ.get("TSR_STRIP_PLATFORM") == "1", reason="frees off the path after renameat2"
)
def test_the_next_save_waits_until_the_replaced_file_is_freed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the closer thread is still freeing the last replaced file, a new save does
    not begin: a save loop never holds more than one old and one new file."""
    target = tmp_path / "x.tsr"
    tsr.save(target, np.zeros(3, np.float32))
    tsr.save(target, np.zeros(3, np.float32))  # the closer thread exists from here
    _io._wait_for_freeing()
    gate, stuck = threading.Event(), threading.Event()
    real_close = os.close

    def close(fd: int) -> None:
        if threading.current_thread().name == "tsr-free":
            stuck.set()
            gate.wait(60)  # the closer thread is slow to free
        real_close(fd)

    monkeypatch.setattr(os, "close", close)
    tsr.save(target, np.ones(3, np.float32))
    assert stuck.wait(60)
    second = threading.Thread(target=tsr.save, args=(tmp_path / "y.tsr", np.ones(2, np.int8)))
    second.start()
    try:
        second.join(0.5)
        assert second.is_alive() and os.listdir(tmp_path) == ["x.tsr"]  # not even a temp
    finally:
        gate.set()
    second.join(60)
    assert sorted(os.listdir(tmp_path)) == ["x.tsr", "y.tsr"]
    assert tsr.load(target).tolist() == [1, 1, 1]


def test_a_save_loop_runs_under_a_small_descriptor_limit(tmp_path: Path) -> None:
    code = textwrap.dedent("""
    import os, resource, sys
    import numpy as np, tsr
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    held = []
    while True:  # leave the save three descriptors: its temp, and two to spare
        fd = os.open(os.devnull, os.O_RDONLY)
        if fd >= 61:
            os.close(fd)
            break
        held.append(fd)
    target = os.path.join(sys.argv[1], "x.tsr")
    failures = 0
    for i in range(2000):
        try:
            tsr.save(target, np.full(1024, i, np.float32))
        except OSError:
            failures += 1
    print(failures, int(tsr.load(target)[0]))
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)],
                         check=False, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1999"]


# ----------------------------------------------------------------------------- other writers


_SLOW_WRITER = """
import os, sys
import numpy as np, tsr, tsr._io
target = sys.argv[1]
data = np.arange(1 << 16, dtype=np.int32)
def write(fd):
    os.write(fd, tsr.to_bytes(data)[:1000])
    print("writing", flush=True)
    sys.stdin.readline()  # the test lets it finish
    os.write(fd, tsr.to_bytes(data)[1000:])
tsr._io.atomic_write(target, write)
print("saved", flush=True)
"""


def _start_slow_writer(cmd: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    return proc


def _finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate("go\n", timeout=60)
    return out.strip()


def _check_survived(
    tmp_path: Path, proc: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (temp,) = _temps(tmp_path)  # the live writer's
    _rescan(monkeypatch)
    tsr.save(tmp_path / "other.tsr", np.zeros(1, np.float32))  # this process cleans
    assert _temps(tmp_path) == [temp], "a live writer's temp was removed"
    assert _finish(proc) == "saved" and proc.returncode == 0
    assert tsr.load(tmp_path / "x.tsr").tolist() == list(range(1 << 16))
    assert _temps(tmp_path) == []


def test_a_live_writer_in_another_process_keeps_its_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = _start_slow_writer([sys.executable, "-c", _SLOW_WRITER, str(tmp_path / "x.tsr")])
    _check_survived(tmp_path, proc, monkeypatch)


@pytest.mark.skipif(
    not _unshare_available("--pid", "--fork", "--mount-proc"),
    reason="needs root and unshare --pid",
)
def test_a_live_writer_in_another_pid_namespace_keeps_its_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_pid: int
) -> None:
    """The writer runs in its own PID namespace (another container, in effect) under a
    pid that names no process here: its temp must survive this process's cleaning."""
    shell = f'echo {dead_pid - 1} > /proc/sys/kernel/ns_last_pid && "$@"; exit $?'
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", shell, "sh",
           sys.executable, "-c", _SLOW_WRITER, str(tmp_path / "x.tsr")]  # fmt: skip
    proc = _start_slow_writer(cmd)
    _check_survived(tmp_path, proc, monkeypatch)


def test_a_killed_writers_temp_is_removed_by_the_next_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = _start_slow_writer([sys.executable, "-c", _SLOW_WRITER, str(tmp_path / "x.tsr")])
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert len(_temps(tmp_path)) == 1
    _rescan(monkeypatch)
    tsr.save(tmp_path / "y.tsr", np.zeros(1, np.float32))  # any target in the directory
    assert sorted(os.listdir(tmp_path)) == ["y.tsr"]


def test_a_temp_taken_by_a_cleaner_before_its_writer_locked_it_is_abandoned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window between creating a temp and locking it: a cleaner that got there first
    removes it; the writer sees that its descriptor no longer is that name's file and
    starts again under a new name."""
    real_lock = _io._lock_temp
    calls: list[int] = []

    def lock(fd: int) -> bool | None:
        calls.append(fd)
        if len(calls) == 1:
            (temp,) = _temps(tmp_path)
            os.unlink(tmp_path / temp)  # what a cleaner does with an unlocked temp
        return real_lock(fd)

    monkeypatch.setattr(_io, "_lock_temp", lock)
    tsr.save(tmp_path / "x.tsr", np.ones(3, np.float32))
    assert len(calls) == 2 and os.listdir(tmp_path) == ["x.tsr"]
    assert tsr.load(tmp_path / "x.tsr").tolist() == [1, 1, 1]


def test_a_cleaner_waiting_for_a_writers_lock_never_blocks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a cleaner holds its probe lock on a fresh temp, the writer takes a new name."""
    real_lock = _io._lock_temp
    results: list[bool | None] = []

    def lock(fd: int) -> bool | None:
        results.append(False if not results else real_lock(fd))
        return results[-1]

    monkeypatch.setattr(_io, "_lock_temp", lock)
    tsr.save(tmp_path / "x.tsr", np.ones(2, np.float32))
    assert results == [False, True] and tsr.load(tmp_path / "x.tsr").tolist() == [1, 1]


def _make_temp(directory: Path, name: str, age_s: float) -> Path:
    p = directory / name
    p.write_bytes(b"TSR!half")
    t = time.time() - age_s
    os.utime(p, (t, t))
    return p


def test_without_working_locks_only_temps_a_day_old_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a lock proves nothing (no locks on that filesystem), nothing is removed that
    could be a live save: only temps unmodified for a day."""
    young = _make_temp(tmp_path, f".x.tsr{_io._TMP_MARK}{'a' * 16}", 3600)
    old = _make_temp(tmp_path, f".x.tsr{_io._TMP_MARK}{'b' * 16}", DAY + 60)
    monkeypatch.setattr(_io, "_probe_lock", lambda fd: "unknown")
    monkeypatch.setattr(_io, "_lock_temp", lambda fd: None)
    _rescan(monkeypatch)
    tsr.save(tmp_path / "x.tsr", np.zeros(1, np.float32))
    assert young.exists() and not old.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(["x.tsr", young.name])


def test_old_format_temps_are_judged_by_age_not_by_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_pid: int
) -> None:
    """tsr 0.1's temps carry a pid and no lock; a pid dead here may be alive elsewhere."""
    young = _make_temp(tmp_path, f".x.tsr.tsr-tmp-{dead_pid}-deadbeef", 60)
    old = _make_temp(tmp_path, f".y.tsr.tsr-tmp-{dead_pid}-00c0ffee", DAY + 60)
    _rescan(monkeypatch)
    tsr.save(tmp_path / "x.tsr", np.zeros(1, np.float32))
    assert young.exists() and not old.exists()


def test_names_that_are_not_temps_are_never_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = [
        f".x.tsr{_io._TMP_MARK}{'a' * 15}",  # 15 hex digits
        f".x.tsr{_io._TMP_MARK}{'A' * 16}",  # upper case
        f"x.tsr{_io._TMP_MARK}{'a' * 16}",  # not hidden
        ".x.tsr.tsr-tmp-abc-deadbeef",  # no pid
        ".x.tsr.tsr-tmp-12-deadbee",  # 7 hex digits
    ]
    for name in kept:
        _make_temp(tmp_path, name, 2 * DAY)
    (tmp_path / f".d{_io._TMP_MARK}{'c' * 16}").mkdir()  # a directory with a temp's name
    _rescan(monkeypatch)
    tsr.save(tmp_path / "x.tsr", np.zeros(1, np.float32))
    assert sorted(os.listdir(tmp_path)) == sorted([*kept, f".d{_io._TMP_MARK}{'c' * 16}", "x.tsr"])
