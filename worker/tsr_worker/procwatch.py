"""Knowing when the client process is gone.

The C++ client starts the worker with ``system("python3 script id &")``: the shell exits
at once, the worker is re-parented (to init or a sub-reaper) and nothing would ever stop
it if the C++ program died. ``PR_SET_PDEATHSIG`` cannot help (the parent that dies is
the shell), and by the time the worker's first line runs the shell is usually gone, so
``getppid()`` no longer names anything useful. What survives is the process group:
``system()`` does not create one, so the C++ program is in the worker's process group.

:func:`discover_client` therefore picks, at start-up, the processes to watch:

1. ``--client-pid PID`` given: that one (0: none).
2. The parent is in our process group and is not a shell: it started us directly
   (``fork``/``exec``, ``subprocess.Popen``), so watch it.
3. Otherwise (re-parented, or the parent is the shell of ``system()``): every other
   process of our process group, except other workers (``python -m tsr_worker`` or the
   ``tsr-worker`` script) and pid 1. When all of them have exited, the job that launched the
   worker is over.

Rule 3 is exact when the C++ program leads its process group (started from an
interactive shell, an IDE, ``setsid``); started from a script, the group also holds the
script, whose end then ends the worker. A group of more than 64 processes is not
watched. The idle time-out is the backstop in every case.

:class:`ProcessWatch` watches with ``pidfd_open`` (Linux 5.3+): each process gives a
descriptor that becomes readable when it exits, so the worker's one ``poll`` covers it
with no timed wake-up. Without pidfds it checks ``/proc/<pid>/stat`` (start time included,
against pid reuse) at most every :data:`FALLBACK_CHECK_S` seconds.

Elsewhere: macOS has no ``/proc`` (rule 3 needs it) and no pidfds; the parent is watched
when it is alive and in our process group (rule 2 without the shell test), through a
``kqueue`` ``EVFILT_PROC``/``NOTE_EXIT`` descriptor that the same ``poll`` covers. Windows
has no process groups of this kind: the parent is watched if it is alive (``start /B``
from the C++ ``system()`` leaves the short-lived ``cmd.exe`` as parent, so there usually
is none: pass ``--client-pid``), through a process handle (``OpenProcess``, held against
pid reuse) checked every :data:`FALLBACK_CHECK_S` seconds. Anything else is checked with
:func:`tsr_platform.pid_alive`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import sys
from collections.abc import Iterable
from typing import Any

import tsr_platform

__all__ = ["FALLBACK_CHECK_S", "ProcessWatch", "discover_client"]

FALLBACK_CHECK_S = 5.0
"""How often processes without a pidfd are checked."""
MAX_GROUP = 64
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox", "fish", "tcsh"})


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """``(comm, ppid, pgrp, starttime)`` of a live process, from ``/proc``."""
    if not tsr_platform.PROCFS:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    lpar, rpar = raw.find(b"("), raw.rfind(b")")
    fields = raw[rpar + 2 :].split()
    if lpar < 0 or rpar < 0 or len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None  # zombies have exited
    comm = raw[lpar + 1 : rpar].decode("utf-8", "replace")
    return comm, int(fields[1]), int(fields[2]), int(fields[19])


def _is_worker(pid: int) -> bool:
    """A worker: ``python -m tsr_worker ...`` or the ``tsr-worker`` script."""
    if not tsr_platform.PROCFS:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    if any(a == b"-m" and b == b"tsr_worker" for a, b in itertools.pairwise(argv)):
        return True
    return any(os.path.basename(a) == b"tsr-worker" for a in argv[:2])


def discover_client(client_pid: int | None = None) -> list[int]:
    """The pids to watch (see the module docstring); ``[]`` for none."""
    if client_pid is not None:
        return [client_pid] if client_pid > 0 else []
    if sys.platform == "win32" or not hasattr(os, "getpgrp"):
        ppid = os.getppid()
        return [ppid] if ppid > 1 and tsr_platform.pid_alive(ppid) else []
    me, pgrp, ppid = os.getpid(), os.getpgrp(), os.getppid()
    if not tsr_platform.PROCFS:  # macOS: the parent if it is alive and in our group
        try:
            same = ppid > 1 and os.getpgid(ppid) == pgrp
        except (AttributeError, OSError):
            same = False
        return [ppid] if same else []
    parent = _stat(ppid) if ppid > 1 else None
    if parent is not None and parent[2] == pgrp and parent[0] not in SHELLS:
        return [ppid]
    members: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in (me, 1):
            continue
        info = _stat(pid)
        if info is None or info[2] != pgrp or _is_worker(pid):
            continue
        members.append(pid)
        if len(members) > MAX_GROUP:
            return []
    return sorted(members)


class ProcessWatch:
    """Watches processes; :meth:`gone` is true once all of them have exited."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = tuple(pids)
        self._fds: dict[int, int] = {}  # pidfd -> pid
        self._polled: dict[int, int] = {}  # pid -> start time
        self._kqueues: dict[int, Any] = {}  # fd -> its kqueue object (macOS)
        self._handles: dict[int, int] = {}  # pid -> process handle (Windows)
        self._alive = set(self.pids)
        for pid in self.pids:
            info = _stat(pid)
            if info is None and not tsr_platform.pid_alive(pid):
                self._alive.discard(pid)
                continue
            fd = self._exit_fd(pid)
            if fd is not None:
                self._fds[fd] = pid
                continue
            self._polled[pid] = info[3] if info else -1
            handle = tsr_platform.open_process(pid)
            if handle is not None:
                self._handles[pid] = handle

    def _exit_fd(self, pid: int) -> int | None:
        """A descriptor that becomes readable when ``pid`` exits: a pidfd (Linux 5.3+), a
        kqueue with ``NOTE_EXIT`` (macOS, BSD); ``None`` where there is neither."""
        if sys.platform == "linux" and hasattr(os, "pidfd_open"):
            try:
                return os.pidfd_open(pid)
            except OSError:
                return None
        if sys.platform != "win32" and sys.platform != "linux" and hasattr(select, "kqueue"):
            kq = select.kqueue()
            try:
                flags = select.KQ_EV_ADD | select.KQ_EV_ONESHOT
                event = select.kevent(pid, select.KQ_FILTER_PROC, flags, select.KQ_NOTE_EXIT)
                kq.control([event], 0)
            except OSError:
                kq.close()
                return None
            self._kqueues[kq.fileno()] = kq
            return kq.fileno()
        return None

    @property
    def fds(self) -> list[int]:
        """Descriptors to poll for reading: each becomes readable when its process exits."""
        return list(self._fds)

    @property
    def needs_polling(self) -> bool:
        """True if some process can only be checked by polling (no pidfd)."""
        return bool(self._polled)

    def on_readable(self, fd: int) -> None:
        """Note that pidfd ``fd`` became readable: its process has exited."""
        pid = self._fds.pop(fd, None)
        if pid is not None:
            self._alive.discard(pid)
            self._close_fd(fd)

    def check(self) -> None:
        """Check the processes watched without a pidfd."""
        for pid, start in list(self._polled.items()):
            handle = self._handles.get(pid)
            if handle is not None:
                exited = tsr_platform.process_exited(handle)
            elif tsr_platform.PROCFS:
                info = _stat(pid)
                exited = info is None or (start >= 0 and info[3] != start)
            else:
                exited = not tsr_platform.pid_alive(pid)
            if exited:
                del self._polled[pid]
                self._alive.discard(pid)

    def gone(self) -> bool:
        """True if processes were watched and all of them have exited."""
        return bool(self.pids) and not self._alive

    def close(self) -> None:
        """Close the pidfds, kqueues and process handles."""
        for fd in self._fds:
            self._close_fd(fd)
        self._fds.clear()
        for handle in self._handles.values():
            tsr_platform.close_process(handle)
        self._handles.clear()

    def _close_fd(self, fd: int) -> None:
        kq = self._kqueues.pop(fd, None)
        with contextlib.suppress(OSError):
            if kq is not None:
                kq.close()
            else:
                os.close(fd)
