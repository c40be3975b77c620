"""The session directory, held open: every file operation is relative to its descriptor.

Names are resolved with ``dir_fd`` against the directory opened once at start-up, and
files are opened with ``O_NOFOLLOW``: a symbolic link in the session directory is never
followed, and renaming or replacing the directory's path cannot redirect a read, a write
or a delete elsewhere. Paths handed to code that wants a path (the codec's atomic save)
go through ``/proc/self/fd/<fd>/<name>``, which names the same open directory. Nothing
here ever creates the directory again once it is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import BinaryIO

__all__ = ["NotRegularFileError", "SessionDir", "TooLargeError", "identity"]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class NotRegularFileError(OSError):
    """The name exists but is a symbolic link, a directory, a FIFO or a device."""


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

    def take_parent_fd(self) -> int | None:
        """The parent directory's descriptor, handed over once (the caller closes it)."""
        fd, self._parent_fd = self._parent_fd, None
        return fd

    def close(self) -> None:
        """Close the descriptors (idempotent)."""
        for fd in (self.fd, self._parent_fd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fd = -1
        self._parent_fd = None

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
            fd = os.open(name, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, dir_fd=self.fd)
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
            fd = os.open(name, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotRegularFileError(exc.errno, f"{name} is a symbolic link") from None
            raise
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise NotRegularFileError(
                    errno.EINVAL, f"{name} is not a regular file ({stat.filemode(mode)})"
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

    def write_atomic(self, name: str, tmp_name: str, data: bytes) -> None:
        """Write ``data`` to ``tmp_name`` (created afresh) and rename it over ``name``."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name, dir_fd=self.fd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
        fd = os.open(tmp_name, flags, 0o666, dir_fd=self.fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.rename(tmp_name, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str, *, expect: os.stat_result | None = None) -> bool:
        """Remove ``name`` (a link itself, never its target); with ``expect``, only if
        ``name`` is still that very file (:func:`identity`). True if something was
        removed; False if not (gone already, replaced or rewritten, or not removable: a
        directory, no permission)."""
        try:
            if expect is not None:
                st = self.lstat(name)
                if st is None or identity(st) != identity(expect):
                    return False
            os.unlink(name, dir_fd=self.fd)
        except OSError:
            return False
        return True


def identity(st: os.stat_result) -> tuple[int, ...]:
    """What tells one file from another under the same name: inode numbers are reused at
    once, so type, modification and change times are part of it."""
    return (st.st_dev, st.st_ino, st.st_mode, st.st_mtime_ns, st.st_ctime_ns)
