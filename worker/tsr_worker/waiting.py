"""Waiting for something to happen in the session directory.

Each call of :meth:`Waiter.wait` blocks until one thing happens and says which, as a
tagged :class:`Wake`: files changed (with their names), the time-out passed, a stop was
asked for, the directory went away, or the client process exited.

:class:`InotifyWaiter` (Linux) is event-driven: one ``poll`` on an inotify descriptor
watching the session directory (and its parent, to see the directory itself removed:
the kernel reports a watched directory's own deletion only once every descriptor on it
is closed, and the worker holds one), the stop pipe and the client's pidfds. An idle
worker makes no system call until something happens. inotify is used through ``ctypes``
on libc directly: three functions, no dependency.

:class:`PollWaiter` is for session directories whose events cannot be trusted (network and
FUSE filesystems: see :mod:`tsr_worker.fstype`) and the fallback where inotify is
unavailable. It probes the names that start work (``request.json``, ``exit.flag``) with
one ``lstat`` each, every millisecond or so while a session is active (as often as keeps
the probes under :data:`PROBE_SHARE` of the time, measured), and backs off in proportion
to the idle time once no request came for :data:`ACTIVE_HOLD_S`, to one probe a second.
``status.txt`` and the directory's own presence are checked every :data:`SLOW_CHECK_S`.
:class:`UpstreamPollWaiter` sleeps the upstream worker's 32 to 1024 ms schedule
(:func:`tsr_worker.protocol.backoff_delays_ms`) and reports that anything may have
changed: the comparison the benchmarks make.

:func:`choose` picks the waiter for a ``--wait`` mode and a filesystem type, and says why.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import enum
import errno
import os
import select
import struct
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import tsr_platform

from . import protocol
from .fstype import MOUNTINFO, FsType
from .procwatch import FALLBACK_CHECK_S, ProcessWatch
from .sessiondir import SessionDir, identity

if TYPE_CHECKING:
    import socket

__all__ = [
    "Choice",
    "InotifyUnavailableError",
    "InotifyWaiter",
    "PollWaiter",
    "StopPipe",
    "UpstreamPollWaiter",
    "Waiter",
    "Wake",
    "WakeKind",
    "choose",
    "inotify_available",
]

WATCHED_NAMES = frozenset(
    {protocol.REQUEST, protocol.RESPONSE, protocol.STATUS, protocol.EXIT_FLAG}
)
_WATCHED_RAW = {os.fsencode(n): n for n in WATCHED_NAMES}

"""The names whose changes end a wait; events on other names (the worker's own temporary
and result files, input tensors) are read and dropped."""


class WakeKind(enum.Enum):
    """Why a wait ended."""

    CHANGES = "changes"
    TIMEOUT = "timeout"
    STOP = "stop"
    DIR_GONE = "dir_gone"
    CLIENT_GONE = "client_gone"


@dataclass(frozen=True)
class Wake:
    """The outcome of one wait.

    For ``CHANGES``, ``names`` are the watched files that changed. An event-driven
    waiter also knows how each one ended: ``complete`` if its last event finished a
    write (closed after writing, or renamed in), ``writing`` if a writer still has it
    open (created or modified, not yet closed). A polling waiter knows neither: both
    are empty and every name is in ``names``.
    """

    kind: WakeKind
    names: frozenset[str] = field(default_factory=frozenset)
    complete: frozenset[str] = field(default_factory=frozenset)
    writing: frozenset[str] = field(default_factory=frozenset)


class Waiter(Protocol):
    """What the worker loop needs from a waiting strategy."""

    name: str

    def wait(self, timeout_s: float | None) -> Wake:
        """Block until something happens, or ``timeout_s`` (``None``: no limit) passes."""

    def activity(self) -> None:
        """Tell the waiter a request arrived (the poll schedule restarts)."""

    def close(self) -> None:
        """Release descriptors."""


_HAVE_POLL = sys.platform.startswith("linux") and hasattr(select, "poll")
"""``poll`` on Linux; ``select`` elsewhere (Windows selects sockets only, and macOS's
``poll`` is unreliable beyond sockets and pipes)."""


class StopPipe:
    """A self-pipe: :meth:`set` (thread- and signal-safe) makes the read end readable.

    A pipe where the waiter polls; a socket pair where it selects (Windows can select
    nothing but sockets)."""

    def __init__(self) -> None:
        self._socks: tuple[socket.socket, socket.socket] | None = None
        if sys.platform != "win32" and _HAVE_POLL and hasattr(os, "set_blocking"):
            self.read_fd, self._write_fd = os.pipe()
            for fd in (self.read_fd, self._write_fd):
                os.set_blocking(fd, False)
                os.set_inheritable(fd, False)
            return
        import socket  # here only: 5 ms of start-up where the pipe serves

        self._socks = socket.socketpair()
        for sock in self._socks:
            sock.setblocking(False)
        self.read_fd, self._write_fd = self._socks[0].fileno(), self._socks[1].fileno()

    def set(self) -> None:
        """Wake the waiter (idempotent)."""
        with contextlib.suppress(OSError):  # full pipe: already set; closed: too late
            if self._socks is None:
                os.write(self._write_fd, b"x")
            else:
                self._socks[1].send(b"x")

    def drain(self) -> None:
        """Read what :meth:`set` wrote."""
        with contextlib.suppress(OSError):
            if self._socks is None:
                os.read(self.read_fd, 4096)
            else:
                self._socks[0].recv(4096)

    def close(self) -> None:
        """Close both ends."""
        if self._socks is not None:
            for sock in self._socks:
                sock.close()
            return
        for fd in (self.read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Poller:
    """``select.poll`` for reading, or the same over ``select.select`` (see
    :data:`_HAVE_POLL`)."""

    def __init__(self) -> None:
        self._poll: Any = None  # a select.poll object (a type Windows lacks)
        if sys.platform != "win32" and _HAVE_POLL:
            self._poll = select.poll()
        self._fds: set[int] = set()
        self._urgent: set[int] = set()

    def register(self, fd: int, *, priority: bool = False) -> None:
        """Watch ``fd`` for reading, or with ``priority`` for urgent data (``POLLPRI``:
        a changed mount table)."""
        if sys.platform != "win32" and self._poll is not None:
            self._poll.register(fd, select.POLLPRI if priority else select.POLLIN)
        (self._urgent if priority else self._fds).add(fd)

    def unregister(self, fd: int) -> None:
        if sys.platform != "win32" and self._poll is not None:
            self._poll.unregister(fd)
        self._fds.discard(fd)
        self._urgent.discard(fd)

    def poll(self, ms: int | None) -> list[int]:
        """The registered descriptors readable within ``ms`` (``None``: no limit)."""
        if sys.platform != "win32" and self._poll is not None:
            return [fd for fd, _ in self._poll.poll(ms)]
        timeout = None if ms is None else ms / 1000
        ready, _, urgent = select.select(list(self._fds), [], list(self._urgent), timeout)
        return ready + [fd for fd in urgent if fd not in ready]


# ----------------------------------------------------------------------------- inotify

IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")

SESSION_MASK = (
    IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE
    | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
)  # fmt: skip
"""No IN_MODIFY: one event per write() of every tensor would cost more than it tells. A
file written in place is seen created (being written) and then closed (complete)."""
PARENT_MASK = IN_DELETE | IN_MOVED_FROM | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
_SELF_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED
_COMPLETE = IN_CLOSE_WRITE | IN_MOVED_TO
_WRITING = IN_CREATE


class InotifyUnavailableError(OSError):
    """inotify cannot be used here (not Linux, no libc symbol, or out of watches)."""


_libc: Any = None


def _load_libc() -> Any:
    global _libc
    if _libc is None:
        if not tsr_platform.LINUX_LIBC:
            raise InotifyUnavailableError(errno.ENOSYS, "inotify is Linux only")
        lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        if not hasattr(lib, "inotify_init1"):
            raise InotifyUnavailableError(errno.ENOSYS, "libc has no inotify_init1")
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_init1.restype = ctypes.c_int
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        lib.inotify_add_watch.restype = ctypes.c_int
        _libc = lib
    return _libc


def inotify_available() -> bool:
    """Whether :class:`InotifyWaiter` can be used on this system."""
    try:
        _load_libc()
    except (InotifyUnavailableError, OSError):
        return False
    return True


def _add_watch(ino_fd: int, path: str, mask: int) -> int:
    wd = int(_load_libc().inotify_add_watch(ino_fd, os.fsencode(path), mask))
    if wd < 0:
        err = ctypes.get_errno()
        raise InotifyUnavailableError(err, f"inotify_add_watch({path}): {os.strerror(err)}")
    return wd


def _events(buf: bytes) -> Iterator[tuple[int, int, bytes]]:
    """``(wd, mask, name)`` of each event in a read buffer (names as raw bytes: most
    events are the worker's and client's own temporary files, compared, never decoded)."""
    pos = 0
    size = _EVENT.size
    while pos + size <= len(buf):
        wd, mask, _cookie, length = _EVENT.unpack_from(buf, pos)
        yield wd, mask, buf[pos + size : pos + size + length].rstrip(b"\0")
        pos += size + length


class _Deadline:
    def __init__(self, timeout_s: float | None) -> None:
        self.at = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)

    def remaining_s(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at


class _Base:
    """The parts both waiters share: the stop pipe, the client watch, the poll set."""

    def __init__(self, session: SessionDir, stop: StopPipe, client: ProcessWatch | None) -> None:
        self._session = session
        self._stop = stop
        self._client = client
        self._poll = _Poller()
        self._poll.register(stop.read_fd)
        for fd in client.fds if client else ():
            self._poll.register(fd)

    def _cap_s(self, remaining_s: float | None) -> float | None:
        """Bound a sleep so that clients without a pidfd are checked now and then."""
        if self._client is None or not self._client.needs_polling:
            return remaining_s
        return FALLBACK_CHECK_S if remaining_s is None else min(remaining_s, FALLBACK_CHECK_S)

    def _poll_once(self, timeout_s: float | None) -> tuple[Wake | None, list[int]]:
        """One ``poll``; a terminal :class:`Wake` (stop, client gone) or the other fds."""
        ms = None if timeout_s is None else max(0, int(timeout_s * 1000 + 0.999))
        ready = self._poll.poll(ms)
        if self._stop.read_fd in ready:
            self._stop.drain()
            return Wake(WakeKind.STOP), []
        if self._client is not None:
            for fd in ready:
                if fd in self._client.fds:
                    self._poll.unregister(fd)
                    self._client.on_readable(fd)
            if self._client.needs_polling:
                self._client.check()
            if self._client.gone():
                return Wake(WakeKind.CLIENT_GONE), []
        return None, ready

    def activity(self) -> None:
        """Nothing to reset for an event-driven waiter."""

    def close(self) -> None:
        """Release descriptors owned by the waiter."""


class InotifyWaiter(_Base):
    """Event-driven waiting with inotify (see the module docstring)."""

    name = "inotify"

    def __init__(self, session: SessionDir, stop: StopPipe, client: ProcessWatch | None) -> None:
        super().__init__(session, stop, client)
        lib = _load_libc()
        fd = int(lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
        if fd < 0:
            err = ctypes.get_errno()
            raise InotifyUnavailableError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        try:
            self._wd = _add_watch(fd, session.proc_path("."), SESSION_MASK)
            self._parent_wd = -1
            self._basename = os.fsencode(os.path.basename(session.path))
            parent_fd = session.take_parent_fd()
            if parent_fd is not None:
                try:
                    self._parent_wd = _add_watch(fd, f"/proc/self/fd/{parent_fd}", PARENT_MASK)
                except InotifyUnavailableError:
                    pass  # e.g. out of watches: still fine, see _read
                finally:
                    os.close(parent_fd)
        except BaseException:
            os.close(fd)
            raise
        self._poll.register(fd)
        self._mounts = _open_mount_table()
        if self._mounts is not None:
            self._poll.register(self._mounts, priority=True)

    def wait(self, timeout_s: float | None) -> Wake:
        """Block until a watched name changes, a stop, the client's exit, the
        directory's removal (a mount over its path included), or the time-out."""
        deadline = _Deadline(timeout_s)
        while True:
            wake, ready = self._poll_once(self._cap_s(deadline.remaining_s()))
            if wake is not None:
                return wake
            if self._mounts is not None and self._mounts in ready:
                _rearm(self._mounts)  # the mount table changed: does the path still lead here?
                if self._session.gone():
                    return Wake(WakeKind.DIR_GONE)
            if self._fd in ready:
                wake = self._read()
                if wake is not None:
                    return wake
            if deadline.passed():
                return Wake(WakeKind.TIMEOUT)

    def _read(self) -> Wake | None:
        names: set[str] = set()
        state: dict[str, bool] = {}  # name -> complete (True) or being written (False)
        check_gone = False
        while True:
            try:
                buf = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            for wd, mask, raw in _events(buf):
                if mask & IN_Q_OVERFLOW:  # events lost: everything may have changed
                    names |= WATCHED_NAMES
                    state.clear()
                    check_gone = True
                elif wd == self._wd:
                    name = _WATCHED_RAW.get(raw)
                    if mask & _SELF_GONE:
                        check_gone = True
                    elif name is not None:
                        names.add(name)
                        if mask & _COMPLETE:
                            state[name] = True
                        elif mask & _WRITING:
                            state[name] = False
                        else:  # deleted or moved away
                            state.pop(name, None)
                    elif self._parent_wd < 0 and mask & IN_DELETE:
                        check_gone = True  # no parent watch: a removal may be under way
                elif wd == self._parent_wd and (raw == self._basename or mask & _SELF_GONE):
                    check_gone = True
        if check_gone and self._session.gone():
            return Wake(WakeKind.DIR_GONE)
        if names:
            return Wake(
                WakeKind.CHANGES,
                frozenset(names),
                frozenset(n for n, done in state.items() if done),
                frozenset(n for n, done in state.items() if not done),
            )
        return None

    def close(self) -> None:
        """Close the inotify descriptor."""
        for fd in (self._fd, self._mounts):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _open_mount_table() -> int | None:
    """``/proc/self/mountinfo``, read once: ``poll`` reports ``POLLPRI`` on it when the
    mount table changes (a re-mount, or a mount over the session path). ``None`` where
    there is none."""
    try:
        fd = os.open(MOUNTINFO, os.O_RDONLY | tsr_platform.O_CLOEXEC)
    except OSError:
        return None
    _rearm(fd)
    return fd


def _rearm(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.lseek(fd, 0, os.SEEK_SET)
        while os.read(fd, 65536):
            pass


ACTIVE_MIN_S = 0.001
"""The shortest interval between two probes (a session is active)."""
ACTIVE_MAX_S = 0.032
"""The longest interval while active, however slow the probe (upstream's shortest)."""
PROBE_SHARE = 0.05
"""While active, probes take at most this share of the time: interval >= cost / share."""
ACTIVE_HOLD_S = 2.0
"""The active interval holds this long after the last request (the gaps of a C++ loop
between calls), then the interval grows with the idle time..."""
IDLE_RATIO = 0.1
"""...as this share of it (a request after 5 s of idleness waits at most 0.5 s)..."""
IDLE_MAX_S = 1.0
"""...up to this (one probe a second, like upstream's idle 1024 ms)."""
SLOW_CHECK_S = 0.1
"""``status.txt`` (the client's ``exit``) and the directory's removal are checked at
least this often (``terminate()`` allows 500 ms)."""
_FAST_NAMES = (protocol.REQUEST, protocol.EXIT_FLAG)
_SLOW_NAMES = frozenset({protocol.STATUS, protocol.RESPONSE})


class PollWaiter(_Base):
    """Adaptive polling: fast while a session is active, backing off when idle (see the
    module docstring)."""

    name = "poll"

    def __init__(self, session: SessionDir, stop: StopPipe, client: ProcessWatch | None) -> None:
        super().__init__(session, stop, client)
        self._last_activity = time.monotonic()
        self._last_slow = float("-inf")
        self._costs: deque[float] = deque(maxlen=16)  # the last probe rounds' durations
        self._seen: dict[str, tuple[int, ...] | None] = {}

    def activity(self) -> None:
        """A request arrived: back to the active interval."""
        self._last_activity = time.monotonic()

    def interval_s(self, now: float | None = None) -> float:
        """How long the next wait sleeps (the schedule of the module docstring)."""
        now = time.monotonic() if now is None else now
        # the fastest recent probe: a probe preempted on a busy machine took longer than
        # the filesystem makes it, and a slow (far) filesystem is slow every time
        cost = min(self._costs, default=0.0)
        active = min(ACTIVE_MAX_S, max(ACTIVE_MIN_S, cost / PROBE_SHARE))
        idle = now - self._last_activity - ACTIVE_HOLD_S
        if idle <= 0:
            return active
        return min(IDLE_MAX_S, max(active, idle * IDLE_RATIO))

    def _probe(self, name: str) -> bool:
        """Whether ``name`` changed (appeared, went, or was replaced or rewritten) since
        the last probe. Only absent names are looked up fresh on every network
        filesystem (a cached positive entry may lag), which is what starts work."""
        st = self._session.lstat(name)
        key = None if st is None else (*identity(st), st.st_size)
        changed = name not in self._seen or self._seen[name] != key
        self._seen[name] = key
        return changed

    def wait(self, timeout_s: float | None) -> Wake:
        """Sleep one interval (less if ``timeout_s`` is shorter), then report the names
        that changed: possibly none (the caller re-checks what it waits for)."""
        deadline = _Deadline(timeout_s)
        sleep_s = self.interval_s()
        remaining = deadline.remaining_s()
        if remaining is not None and remaining < sleep_s:
            sleep_s = remaining
        wake, _ = self._poll_once(self._cap_s(sleep_s))
        if wake is not None:
            return wake
        started = time.perf_counter()
        names = {n for n in _FAST_NAMES if self._probe(n)}
        self._costs.append(time.perf_counter() - started)
        now = time.monotonic()
        if now - self._last_slow >= SLOW_CHECK_S:
            self._last_slow = now
            if self._session.gone():
                return Wake(WakeKind.DIR_GONE)
            names |= _SLOW_NAMES
        if not names and deadline.passed():
            return Wake(WakeKind.TIMEOUT)
        return Wake(WakeKind.CHANGES, frozenset(names))


class UpstreamPollWaiter(_Base):
    """Polling with the upstream adaptive schedule (32 ms doubling to 1024 ms)."""

    name = "upstream"

    def __init__(self, session: SessionDir, stop: StopPipe, client: ProcessWatch | None) -> None:
        super().__init__(session, stop, client)
        self._delays = protocol.backoff_delays_ms()

    def activity(self) -> None:
        """Restart the schedule at 32 ms."""
        self._delays = protocol.backoff_delays_ms()

    def wait(self, timeout_s: float | None) -> Wake:
        """Sleep one step of the schedule (less if ``timeout_s`` is shorter), then report
        that every watched name may have changed."""
        deadline = _Deadline(timeout_s)
        sleep_s = next(self._delays) / 1000
        remaining = deadline.remaining_s()
        if remaining is not None and remaining < sleep_s:
            sleep_s = remaining
        wake, _ = self._poll_once(sleep_s)
        if wake is not None:
            return wake
        if self._session.gone():
            return Wake(WakeKind.DIR_GONE)
        if deadline.passed():
            return Wake(WakeKind.TIMEOUT)
        return Wake(WakeKind.CHANGES, WATCHED_NAMES)


# ----------------------------------------------------------------------------- the choice


@dataclass(frozen=True)
class Choice:
    """Which waiter serves a directory, and why (logged at start-up)."""

    waiter: str
    """``inotify``, ``poll`` or ``upstream``."""
    reason: str
    warning: str = ""
    """Set when the choice is likely wrong (``--wait inotify`` on a network filesystem)."""


def choose(mode: str, fs: FsType, inotify_ok: bool) -> Choice:
    """The waiter for ``--wait mode`` on filesystem ``fs`` (``inotify_ok``: inotify works).

    ``auto`` waits on inotify where it is available and the filesystem is local; on a
    network or FUSE filesystem, or one whose type is unknown, it polls: changes made by
    another machine (or behind the FUSE daemon) raise no inotify event here.
    """
    on = fs.describe()
    if mode in ("poll", "upstream"):
        return Choice(mode, f"--wait {mode} given; session directory on {on}")
    if mode == "inotify":
        warning = ""
        if not fs.events_trusted:
            warning = (
                f"--wait inotify on {on}: changes made by other machines (or behind a FUSE "
                "mount) raise no inotify event here, so their requests are never seen; "
                "use --wait auto or poll"
            )
        return Choice("inotify", f"--wait inotify given; session directory on {on}", warning)
    if not fs.events_trusted:
        why = "unknown filesystem type" if fs.kind == "unknown" else f"{fs.kind} filesystem"
        return Choice("poll", f"session directory on {on}: {why}, events cannot be trusted")
    if not inotify_ok:
        return Choice("poll", f"session directory on {on}, but inotify is unavailable")
    return Choice("inotify", f"session directory on {on}: local, events trusted")
