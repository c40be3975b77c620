"""The session directory, held open: every file operation is relative to its descriptor.

Names are resolved with ``dir_fd`` against the directory opened once at start-up, and
files are opened with ``O_NOFOLLOW``: a symbolic link in the session directory is never
followed, and renaming or replacing the directory's path cannot redirect a read, a write
or a delete elsewhere. Paths handed to code that wants a path (the codec's atomic save)
go through ``/proc/self/fd/<fd>/<name>``, which names the same open directory. Nothing
here ever creates the directory again once it is gone.

Where the platform has no ``dir_fd`` or ``O_NOFOLLOW`` (Windows), :meth:`SessionDir.open`
returns a :class:`PathSessionDir`, which works by path and checks after each open that
what it opened is what the name in the directory is (see there, with its residual race).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from typing import BinaryIO

import tsr_platform

__all__ = [
    "LOCK_NAME",
    "DirectoryBusyError",
    "NotRegularFileError",
    "PathSessionDir",
    "SessionDir",
    "TooLargeError",
    "identity",
]

LOCK_NAME = ".tsr-worker.lock"
"""The lock file, used only where the directory itself cannot be locked (NFS)."""

_O_CLOEXEC = tsr_platform.O_CLOEXEC
_O_NOFOLLOW = tsr_platform.O_NOFOLLOW
_O_NONBLOCK = tsr_platform.O_NONBLOCK
_O_DIRECTORY = tsr_platform.O_DIRECTORY
_O_READ = os.O_RDONLY | tsr_platform.O_BINARY | _O_NONBLOCK
"""How names are opened to be read or looked at: non-blocking (a FIFO cannot hang it)."""
_O_HOLD = getattr(os, "O_PATH", _O_READ)
"""How a file of any type is held open: without reading it or side effects (``O_PATH``,
Linux), else read-only (Windows cannot open a directory at all)."""


class NotRegularFileError(OSError):
    """The name exists but is a symbolic link, a directory, a FIFO or a device."""


class DirectoryBusyError(OSError):
    """Another worker holds the session directory's lock; ``holder`` is its pid if known."""

    def __init__(self, path: str, holder: int | None) -> None:
        who = f"worker pid {holder}" if holder else "another worker"
        super().__init__(errno.EBUSY, f"{path} is already served by {who}; not starting")
        self.holder = holder


class TooLargeError(OSError):
    """The file is larger than the caller's limit (nothing of it was read)."""

    def __init__(self, name: str, size: int, limit: int) -> None:
        super().__init__(errno.EFBIG, f"{name} has {size} bytes, the limit is {limit}")
        self.size = size
        self.limit = limit


class SessionDir:
    """An open session directory. Use :meth:`open`; close with :meth:`close`."""

    def __init__(self, path: str, fd: int, parent_fd: int | None) -> None:
        self.path = path
        """The directory's absolute path, as given at start-up."""
        self.fd = fd
        self._parent_fd = parent_fd
        self._lock_fd: int | None = None
        st = os.fstat(fd)
        self._dev_ino = (st.st_dev, st.st_ino)
        self._proc = f"/proc/self/fd/{fd}"
        if not os.path.isdir(self._proc):  # no /proc: fall back to the path
            self._proc = path

    @classmethod
    def open(cls, path: str, *, create: bool) -> SessionDir:
        """Open ``path`` (created with mode 0700, parents as needed, if ``create``).

        The last component must be a real directory, not a symbolic link.
        """
        if not tsr_platform.HAVE_DIR_FD:
            return PathSessionDir.open_path(path, create=create)
        path = os.path.abspath(path)
        parent, name = os.path.split(path)
        if create:
            os.makedirs(parent, exist_ok=True)
        parent_fd = os.open(parent, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        try:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=parent_fd)
            try:
                fd = os.open(
                    name, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=parent_fd
                )
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
                    raise NotRegularFileError(
                        exc.errno, f"session directory {path} is a symbolic link; pass its target"
                    ) from None
                raise
        except BaseException:
            os.close(parent_fd)
            raise
        return cls(path, fd, parent_fd)

    def lock(self) -> str:
        """Take the worker lock of this directory, held until :meth:`close` (or the
        process's death: the kernel drops it); return how it is held.

        The lock is an exclusive ``flock`` on the directory's own descriptor: no file to
        delete or replace, nothing written. Where directories cannot be locked (NFS
        emulates ``flock`` with POSIX locks, which need a file open for writing), it is
        an exclusive lock on :data:`LOCK_NAME` in the directory. Raises
        :class:`DirectoryBusyError` if another worker holds it; returns ``"none"`` (and
        serves unlocked) where no lock is available at all.
        """
        held = _try_lock(self.fd) if self.fd >= 0 else None  # PathSessionDir: no fd
        if held is True:
            return "directory"
        if held is False:
            raise DirectoryBusyError(self.path, _lock_holder(os.fstat(self.fd)))
        try:
            fd = self._open_in(LOCK_NAME, os.O_RDWR | os.O_CREAT | _O_NONBLOCK, 0o600)
        except OSError:
            return "none"
        held = _try_lock(fd)
        if held is not True:
            holder = _lock_holder(os.fstat(fd)) if held is False else None
            os.close(fd)
            if held is False:
                raise DirectoryBusyError(self.path, holder)
            return "none"
        self._lock_fd = fd
        return "lock file"

    def take_parent_fd(self) -> int | None:
        """The parent directory's descriptor, handed over once (the caller closes it)."""
        fd, self._parent_fd = self._parent_fd, None
        return fd

    def close(self) -> None:
        """Close the descriptors (idempotent)."""
        for fd in (self._lock_fd, self.fd, self._parent_fd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fd = -1
        self._parent_fd = self._lock_fd = None

    # ------------------------------------------------------------------ queries

    def proc_path(self, name: str) -> str:
        """A path naming ``name`` in this open directory (for path-based APIs)."""
        return f"{self._proc}/{name}"

    def lstat(self, name: str) -> os.stat_result | None:
        """``lstat`` of ``name``, or ``None`` if it does not exist."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists (a dangling link counts)."""
        return self.lstat(name) is not None

    def present(self, name: str) -> bool:
        """Whether ``name`` exists, asked afresh: an ``open``, which network filesystems
        revalidate (close-to-open consistency) where a ``stat`` may answer from a cache
        (a file deleted by another machine can look present for a second or more on FUSE
        or NFS). What cannot be opened (a link, no permission) falls back to ``lstat``."""
        try:
            fd = self._open_in(name, _O_READ)
        except FileNotFoundError:
            return False
        except OSError:
            return self.exists(name)
        os.close(fd)
        return True

    def gone(self) -> bool:
        """True once the directory was removed, or its path no longer leads to it."""
        try:
            if os.fstat(self.fd).st_nlink == 0:
                return True
            st = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._dev_ino

    # ------------------------------------------------------------------ reading

    def open_regular(self, name: str) -> BinaryIO:
        """Open ``name`` for reading: no link followed, regular files only.

        Raises ``FileNotFoundError``, :class:`NotRegularFileError`, or another ``OSError``.
        """
        try:
            fd = self._open_in(name, _O_READ)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotRegularFileError(exc.errno, f"{name} is a symbolic link") from None
            raise
        try:
            st = os.fstat(fd)
            self._check_opened(name, st)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegularFileError(
                    errno.EINVAL, f"{name} is not a regular file ({stat.filemode(st.st_mode)})"
                )
            return os.fdopen(fd, "rb", buffering=0)
        except BaseException:
            os.close(fd)
            raise

    def read_small(self, name: str, max_bytes: int) -> tuple[bytes, os.stat_result]:
        """The whole content of a regular file of at most ``max_bytes``, and its stat.

        The size is checked before anything is read (:class:`TooLargeError`).
        """
        with self.open_regular(name) as f:
            st = os.fstat(f.fileno())
            if st.st_size > max_bytes:
                raise TooLargeError(name, st.st_size, max_bytes)
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:  # grew while we read
            raise TooLargeError(name, len(data), max_bytes)
        return data, st

    def read_text(self, name: str, max_bytes: int = 4096) -> str | None:
        """A small text file's content (``None`` if missing, unreadable or too large)."""
        try:
            data, _ = self.read_small(name, max_bytes)
        except OSError:
            return None
        return data.decode("utf-8", "replace")

    # ------------------------------------------------------------------ writing

    def temp_name(self, name: str) -> str:
        """A fresh hidden name beside ``name`` that no client can predict (and so squat)."""
        return f".{name}.{os.getpid()}-{os.urandom(6).hex()}.tmp"

    def write_atomic(self, name: str, data: bytes) -> None:
        """Write ``data`` to a fresh temporary name and rename it over ``name``.

        The temporary file is created exclusively under an unpredictable name, so no
        file, directory, FIFO or link a client put anywhere can stand in its way. A
        directory at ``name`` itself (which a rename cannot replace) is removed if empty,
        else moved aside to a hidden name (:meth:`move_aside`); anything else there (a
        link, a FIFO) is replaced, never followed.
        """
        tmp = self.temp_name(name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | tsr_platform.O_BINARY
        fd = self._open_in(tmp, flags, 0o666)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            self.rename_in(tmp, name)
        except BaseException:
            with contextlib.suppress(OSError):
                self._unlink(tmp)
            raise

    def rename_in(self, src: str, name: str) -> None:
        """Rename ``src`` over ``name``; a directory squatting ``name`` is cleared first
        (:meth:`move_aside`). Raises ``OSError`` if ``name`` still cannot be replaced."""
        try:
            self.rename(src, name)
        except OSError:
            st = self.lstat(name)
            if st is None or not stat.S_ISDIR(st.st_mode):
                raise
            self.move_aside(name)
            self.rename(src, name)

    def move_aside(self, name: str) -> None:
        """Clear a directory squatting ``name``: removed if empty, else renamed to a hidden
        ``.<name>.moved-<hex>`` (its content kept, the client's to remove)."""
        try:
            self._rmdir(name)
        except OSError:
            self.rename(name, f".{name}.moved-{os.urandom(6).hex()}")

    def unlink(
        self, name: str, *, expect: os.stat_result | None = None, held: bool = False
    ) -> bool:
        """Remove ``name`` (a link itself, never its target); with ``expect``, only if
        ``name`` is still that very file: the same :func:`identity` (inode, type,
        modification and change time), or with ``held`` (the caller holds ``expect``'s
        file open, so its inode cannot have been handed to another file) the same inode.
        True if something was removed; False if not (gone already, replaced or rewritten,
        or not removable: a directory, no permission)."""
        try:
            if expect is not None:
                st = self.lstat(name)
                if st is None:
                    return False
                if held and (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
                    return False
                if not held and identity(st) != identity(expect):
                    return False
            self._unlink(name)
        except OSError:
            return False
        return True

    def hold(self, name: str, expect: os.stat_result) -> int | None:
        """A descriptor holding the file ``name`` (any type, no link followed) while it
        is the one ``expect`` describes, else None (also where the platform cannot open
        it: a directory on Windows). Held open, its inode cannot be reused, so
        ``(st_dev, st_ino)`` tells this file from any later one."""
        try:
            fd = self._open_in(name, _O_HOLD)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            self._check_opened(name, st)
            if (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
                raise NotRegularFileError(errno.ESTALE, f"{name} was replaced")
        except OSError:
            os.close(fd)
            return None
        return fd

    # ------------------------------------------------------------------ primitives
    # Every operation above goes through these; PathSessionDir overrides them.

    def rename(self, src: str, name: str) -> None:
        """Rename ``src`` over ``name``, both in this directory (no link followed)."""
        os.rename(src, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def _open_in(self, name: str, flags: int, mode: int = 0o777) -> int:
        """``open`` of ``name`` in the directory: no link followed, not inherited."""
        return os.open(name, flags | _O_NOFOLLOW | _O_CLOEXEC, mode, dir_fd=self.fd)

    def _check_opened(self, name: str, st: os.stat_result) -> None:
        """Raise :class:`NotRegularFileError` unless the file opened as ``name`` (its
        ``fstat`` is ``st``) is what the name in the directory is (nothing to check
        where the open was relative to the directory and followed no link)."""

    def _unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd)

    def _rmdir(self, name: str) -> None:
        os.rmdir(name, dir_fd=self.fd)


def _try_lock(fd: int) -> bool | None:
    """An exclusive, non-blocking ``flock`` on ``fd``: True if taken, False if another
    open file holds it, None if this system or filesystem cannot lock it. On Windows
    (no ``flock``) it is ``msvcrt.locking`` of the file's first byte, which Windows also
    drops when its holder dies; a directory cannot be opened there, so it is always
    the lock file."""
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except PermissionError:  # EACCES: locked by another process
            return False
        except OSError:
            return None
        return True
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    except OSError:  # ENOLCK, EBADF (NFS on a directory), EINVAL, EOPNOTSUPP, ...
        return None
    return True


def _lock_holder(st: os.stat_result) -> int | None:
    """The pid holding a lock on the file ``st`` describes, from ``/proc/locks`` (Linux;
    None where unknown)."""
    if sys.platform == "win32":
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                fields = line.split()
                if "->" not in fields and len(fields) >= 6 and fields[5] == want:
                    pid = int(fields[4])
                    return pid if pid > 0 else None
    except (OSError, ValueError):
        pass
    return None


def identity(st: os.stat_result) -> tuple[int, ...]:
    """What tells one file from another under the same name: inode numbers are reused at
    once, so type, modification and change times are part of it."""
    return (st.st_dev, st.st_ino, st.st_mode, st.st_mtime_ns, st.st_ctime_ns)


_REPARSE_POINT = 0x400  # FILE_ATTRIBUTE_REPARSE_POINT: symlinks and junctions (Windows)


def _is_link(st: os.stat_result) -> bool:
    """A symbolic link, or on Windows any reparse point (a junction too)."""
    return stat.S_ISLNK(st.st_mode) or bool(getattr(st, "st_file_attributes", 0) & _REPARSE_POINT)


class PathSessionDir(SessionDir):
    """The session directory where files cannot be opened relative to a directory
    descriptor (Windows): every operation goes by path, and is checked.

    - The directory itself must be a real directory (no link, no junction) and stay the
      one found at start-up (device and file number): checked before every write or
      rename and after every open; a moved or replaced directory reads as gone.
    - A file is opened by path, then the name is looked up with ``lstat`` in the
      directory: a link or junction there, or a file other than the one opened (a link
      swapped in or out while opening), is refused. Names are tags (no separators, no
      ``..``), so no path leaves the directory.
    - Temp files are created with ``O_CREAT | O_EXCL`` (never through an existing name,
      link or not) and renamed with :func:`tsr_platform.replace`.

    Residual race, which a descriptor-relative API would close: the directory's path is
    checked, not held, so if another process with write access to the *parent* swaps the
    directory for a link between the check and a write or rename, that one operation can
    land in the link's target. Reads are checked after opening and cannot be redirected.
    """

    def __init__(self, path: str, st: os.stat_result) -> None:
        self.path = path
        self.fd = -1
        self._parent_fd = None
        self._lock_fd = None
        self._dev_ino = (st.st_dev, st.st_ino)
        self._proc = path

    @classmethod
    def open_path(cls, path: str, *, create: bool) -> PathSessionDir:
        """The directory at ``path`` (created with mode 0700, parents as needed, if
        ``create``); refused if it is a link or junction."""
        path = os.path.abspath(path)
        if create:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)
        st = os.lstat(path)
        if _is_link(st):
            raise NotRegularFileError(
                errno.ELOOP, f"session directory {path} is a symbolic link; pass its target"
            )
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, f"session directory {path} is not a directory")
        return cls(path, st)

    def _check_dir(self) -> None:
        """Raise ``FileNotFoundError`` unless the path still leads to the directory."""
        if self.gone():
            raise FileNotFoundError(
                errno.ENOENT, f"session directory {self.path} was removed or replaced"
            )

    def _join(self, name: str) -> str:
        return os.path.join(self.path, name)

    def proc_path(self, name: str) -> str:
        """The path of ``name`` in the directory (checked to be the directory first)."""
        self._check_dir()
        return self._join(name)

    def lstat(self, name: str) -> os.stat_result | None:
        """``lstat`` of ``name``, or ``None`` if it does not exist."""
        try:
            return os.lstat(self._join(name))
        except FileNotFoundError:
            return None

    def gone(self) -> bool:
        """True once the path no longer leads to the directory found at start-up."""
        try:
            st = os.lstat(self.path)
        except OSError:
            return True
        return _is_link(st) or (st.st_dev, st.st_ino) != self._dev_ino

    # ------------------------------------------------------------------ primitives

    def rename(self, src: str, name: str) -> None:
        """Rename ``src`` over ``name`` (see :meth:`SessionDir.rename`), by path."""
        self._check_dir()
        tsr_platform.replace(self._join(src), self._join(name))

    def _open_in(self, name: str, flags: int, mode: int = 0o777) -> int:
        """By path, the directory checked first (``O_NOFOLLOW`` where there is one)."""
        self._check_dir()
        return os.open(self._join(name), flags | _O_NOFOLLOW | _O_CLOEXEC, mode)

    def _check_opened(self, name: str, st: os.stat_result) -> None:
        """What was opened must be what ``name`` is now, not a link, in the directory."""
        seen = os.lstat(self._join(name))
        if _is_link(seen):
            raise NotRegularFileError(errno.ELOOP, f"{name} is a symbolic link")
        if (seen.st_dev, seen.st_ino) != (st.st_dev, st.st_ino):
            raise NotRegularFileError(
                errno.ELOOP, f"{name} changed while being opened (a link swapped in?)"
            )
        self._check_dir()

    def _unlink(self, name: str) -> None:
        self._check_dir()
        os.unlink(self._join(name))

    def _rmdir(self, name: str) -> None:
        self._check_dir()
        os.rmdir(self._join(name))
