"""What the operating system offers, decided once at import: the capability layer that the
codec (``tsr``) and the worker (``tsr_worker``) share.

Linux has positional and vectored I/O (``pread``, ``preadv``, ``writev``), descriptors
relative to a directory (``dir_fd``, ``O_NOFOLLOW``), pidfds and ``/proc``; macOS has most
of them but no pidfds or ``/proc``; Windows has none. Every caller asks here and takes the
fast path where it exists and the portable one elsewhere, with the same contract. The
test mode ``TSR_STRIP_PLATFORM=1`` (``tests/platform_strip``) deletes the Linux-only
features from the interpreter before this module is imported, so the portable paths run
on Linux too.

This is a top-level package, not ``tsr._platform``: the worker uses it before it writes
``running``, and importing anything under ``tsr`` imports NumPy. It imports nothing but
the standard library's small modules (``ctypes`` only on Windows).
"""

from __future__ import annotations

import errno
import io
import os
import sys
import threading
import time
from collections.abc import Callable

__all__ = [
    "HAVE_DIR_FD",
    "HAVE_PREAD",
    "HAVE_WRITEV",
    "O_BINARY",
    "O_CLOEXEC",
    "O_DIRECTORY",
    "O_NOFOLLOW",
    "O_NONBLOCK",
    "PROCFS",
    "REPLACE_RETRY_S",
    "WINDOWS",
    "ReplaceBlockedError",
    "close_process",
    "cpu_count",
    "open_process",
    "pid_alive",
    "pread",
    "pread_into",
    "process_exited",
    "replace",
]

WINDOWS = sys.platform == "win32"
LINUX = sys.platform.startswith("linux")

O_BINARY: int = getattr(os, "O_BINARY", 0)
"""Windows opens files in text mode (CR-LF translation) unless told; 0 elsewhere."""
O_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)
O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
O_NONBLOCK: int = getattr(os, "O_NONBLOCK", 0)
O_DIRECTORY: int = getattr(os, "O_DIRECTORY", 0)

HAVE_PREAD = hasattr(os, "pread")
HAVE_PREADV = hasattr(os, "preadv")
HAVE_WRITEV = hasattr(os, "writev")
HAVE_DIR_FD = (
    bool(O_NOFOLLOW and O_DIRECTORY)
    and {os.open, os.stat, os.unlink, os.rename, os.mkdir} <= os.supports_dir_fd
)
"""Files can be opened, stat'ed, renamed and removed relative to an open directory, and
opened without following a link (Linux, macOS; not Windows)."""
PROCFS = LINUX and os.path.isdir("/proc/self/fd")
"""``/proc/<pid>/stat`` and ``/proc/self/fd/<fd>`` exist (Linux)."""
LINUX_LIBC = LINUX
"""Linux-only libc functions (``fallocate``, ``renameat2``, ``inotify_*``) may be looked
up with ``ctypes``; the strip mode turns this off.

The ``HAVE_*`` flags are tested together with ``sys.platform`` where the call follows
(``if sys.platform != "win32" and HAVE_WRITEV``): the flag decides at run time (and in the
strip mode), the platform test lets ``mypy --platform`` check each platform's branch."""


# ----------------------------------------------------------------------------- CPUs


def cpu_count() -> int:
    """The CPUs this process may run on: ``os.process_cpu_count`` (3.13+), else the
    affinity mask (Linux), else every CPU of the machine."""
    process_cpu_count: Callable[[], int | None] | None = getattr(os, "process_cpu_count", None)
    if process_cpu_count is not None:
        return process_cpu_count() or 1
    affinity: Callable[[int], set[int]] | None = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        try:
            return len(affinity(0)) or 1
        except OSError:
            pass
    return os.cpu_count() or 1


# ----------------------------------------------------------------------------- positional reads

_seek_lock = threading.Lock()
"""Without ``pread``, a positional read is seek + read + seek back, one at a time."""


def pread_into(fd: int, view: memoryview, offset: int) -> int:
    """Read into ``view`` (bytes) from ``fd`` at ``offset`` without moving the file's
    position (for other threads); the count read, 0 at the end of the file.

    ``preadv`` where it exists; elsewhere (Windows) seek, ``readinto`` straight into the
    buffer (no copy), and seek back, under a process-wide lock: the position is shared
    with every user of the descriptor, so these reads never run concurrently.
    """
    if sys.platform != "win32" and HAVE_PREADV:  # (the platform test is for mypy)
        return os.preadv(fd, [view], offset)
    with _seek_lock:
        before = os.lseek(fd, 0, os.SEEK_CUR)
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            with io.FileIO(fd, "rb", closefd=False) as f:
                return f.readinto(view) or 0
        finally:
            os.lseek(fd, before, os.SEEK_SET)


def pread(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes of ``fd`` at ``offset``, the file's position unchanged."""
    if sys.platform != "win32" and HAVE_PREAD:
        return os.pread(fd, size, offset)
    buf = bytearray(size)
    n = pread_into(fd, memoryview(buf), offset)
    return bytes(buf[:n])


# ----------------------------------------------------------------------------- processes

_STILL_ACTIVE = 259
_PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
_ERROR_ACCESS_DENIED = 5


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts).

    POSIX: ``kill(pid, 0)``. Windows: ``OpenProcess`` and ``GetExitCodeProcess``
    (``os.kill(pid, 0)`` there would send CTRL_C_EVENT, whose value is 0).
    """
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    if WINDOWS:
        return _win_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _win_pid_alive(pid: int) -> bool:
    if sys.platform != "win32":  # for mypy: the branch below type-checks on Windows only
        raise OSError(errno.ENOSYS, "Windows only")
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    handle = kernel32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return ctypes.get_last_error() == _ERROR_ACCESS_DENIED
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == _STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


# ----------------------------------------------------------------------------- renames

REPLACE_RETRY_S = 1.0
"""How long :func:`replace` retries a rename that Windows refuses because the target is
in use, before it gives up."""
REPLACE_RETRIES = WINDOWS
"""Whether a refused rename is retried (on Windows a refusal usually means "in use
for now"; elsewhere it means no permission, and waiting cannot help)."""


class ReplaceBlockedError(PermissionError):
    """A rename over a file kept failing with "access denied" (Windows: another process
    has the target open without sharing deletion, or has it memory-mapped)."""


def replace(src: str, dst: str, *, retry_s: float | None = None) -> None:
    """``os.replace(src, dst)``; where refusals are transient (Windows), retried with a
    growing pause (1 ms doubling to 50 ms) for up to ``retry_s`` (:data:`REPLACE_RETRY_S`),
    then :class:`ReplaceBlockedError` naming the cause."""
    try:
        os.replace(src, dst)
        return
    except PermissionError as exc:
        if not REPLACE_RETRIES:
            raise
        first = exc
    bound = REPLACE_RETRY_S if retry_s is None else retry_s
    deadline = time.monotonic() + bound
    pause = 0.001
    while time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
        try:
            os.replace(src, dst)
            return
        except PermissionError as exc:
            first = exc
    raise ReplaceBlockedError(
        first.errno or errno.EACCES,
        f"cannot replace {dst}: access denied for {bound:g} s, so another process most "
        "likely has it open or memory-mapped (Windows refuses to replace a file in use; "
        "a tsr.load() array maps its file until the array is freed: load with mmap=False "
        "or drop the array, close the file there, or save under another name)",
        dst,
    ) from first


# ----------------------------------------------------------------------------- process handles

_SYNCHRONIZE = 0x00100000
_WAIT_OBJECT_0 = 0


def open_process(pid: int) -> int | None:
    """A handle that waits on process ``pid`` (Windows: ``OpenProcess(SYNCHRONIZE)``, held
    so that a reused pid cannot pass for it); ``None`` elsewhere or if it cannot be
    opened. Check it with :func:`process_exited`, release it with :func:`close_process`."""
    if sys.platform != "win32":
        return None
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = ctypes.c_void_p
    handle = kernel32.OpenProcess(_SYNCHRONIZE | _PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    return int(handle) if handle else None


def process_exited(handle: int) -> bool:
    """Whether the process of ``handle`` (from :func:`open_process`) has exited."""
    if sys.platform != "win32":
        raise OSError(errno.ENOSYS, "process handles are Windows only")
    import ctypes

    wait = ctypes.WinDLL("kernel32").WaitForSingleObject
    wait.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    return bool(wait(handle, 0) == _WAIT_OBJECT_0)


def close_process(handle: int) -> None:
    """Release a handle from :func:`open_process`."""
    if sys.platform == "win32":
        import ctypes

        close = ctypes.WinDLL("kernel32").CloseHandle
        close.argtypes = [ctypes.c_void_p]
        close(handle)
