"""Reading and writing TSR v1 files with NumPy.

Reads go through a memory map (zero-copy, read-only) or straight into one owned array;
writes go to a temporary file in the target's directory that is renamed into place, so
the target only ever holds the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import mmap as _mmap
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO, Literal, Union

import numpy as np
import numpy.typing as npt

try:
    import fcntl as _fcntl
except ImportError:  # no fcntl (Windows): temps are judged by their age alone
    _fcntl = None  # type: ignore[assignment]
try:
    import resource as _resource
except ImportError:  # no resource (Windows): replaced files are freed before returning
    _resource = None  # type: ignore[assignment]

import tsr_platform

from . import dtypes, header
from .errors import BadArgumentError, TruncatedError
from .header import HEADER_SIZE, Header

PathLike = Union[str, "os.PathLike[str]"]
Source = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]", BinaryIO, IO[bytes]]
"""A path (``str``, ``bytes`` or path-like, as ``open`` takes), or an open binary file
(anything with ``fileno()``; it is not closed)."""

_CHUNK_BYTES = 16 << 20  # bound on the extra memory of a converting write
_MAX_IO = 1 << 30  # bytes per read/write call (Linux caps a call near 2 GiB)


# ----------------------------------------------------------------------------- opening


_OPEN_READ = os.O_RDONLY | tsr_platform.O_CLOEXEC | tsr_platform.O_NONBLOCK | tsr_platform.O_BINARY


class _open_fd:  # used like a function: ``with _open_fd(src) as (fd, size)``
    """A readable descriptor of ``source`` and the file's size; refuses anything but a
    regular file. A path is opened here (non-blocking, so that a FIFO or device cannot
    hang the call) and closed on exit; an open file is used as is and left open.

    A class rather than a generator context manager: this is on the path of every read,
    and ``contextlib.contextmanager`` costs a few microseconds per use.
    """

    __slots__ = ("_close", "fd_size")

    def __init__(self, source: Source) -> None:
        self._close = -1
        self.fd_size: tuple[int, int]
        if type(source) is str or isinstance(source, (bytes, os.PathLike)):
            fd = os.open(source, _OPEN_READ)
            self._close = fd
            try:
                self.fd_size = fd, _require_regular(fd, os.fsdecode(source))
            except BaseException:
                os.close(fd)
                raise
            return
        if getattr(source, "closed", False) is True:
            raise BadArgumentError(
                f"{getattr(source, 'name', 'the file')}: the file object is closed; pass an "
                "open file or a path",
                field="source",
                found="a closed file",
                expected="an open binary file or a path",
            )
        try:
            fd = source.fileno()  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError) as exc:
            raise BadArgumentError(
                f"expected a path or an open file with a descriptor, got {type(source).__name__}",
                field="source",
                found=type(source).__name__,
                expected="str, bytes, os.PathLike or a binary file with fileno()",
            ) from exc
        self.fd_size = fd, _require_regular(fd, getattr(source, "name", f"fd {fd}"))

    def __enter__(self) -> tuple[int, int]:
        return self.fd_size

    def __exit__(self, *exc: object) -> None:
        if self._close >= 0:
            os.close(self._close)


def _require_regular(fd: int, name: object) -> int:
    """The size of the regular file ``fd``; :class:`BadArgumentError` for anything else."""
    st = os.fstat(fd)
    mode = st.st_mode
    if not stat.S_ISREG(mode):
        raise BadArgumentError(
            f"{name}: not a regular file (TSR files are read with a known size)",
            field="source",
            found=stat.filemode(mode),
            expected="a regular file",
        )
    return st.st_size


def _pread_exact(fd: int, view: memoryview, offset: int, file_end: int) -> None:
    """Fill ``view`` (bytes) from ``fd`` at ``offset``; raise if the file ends first
    (``file_end``: the size the whole file should have, for the message)."""
    pos = 0
    total = len(view)
    while pos < total:
        n = tsr_platform.pread_into(fd, view[pos : pos + _MAX_IO], offset + pos)
        if n == 0:
            raise TruncatedError(
                f"the file ended after {offset + pos} bytes, but its header declares data up "
                f"to byte {file_end}; was it truncated while being read?",
                field="payload",
                offset=offset + pos,
                found=offset + pos,
                expected=file_end,
            )
        pos += n


_PARALLEL_PART_BYTES = 16 << 20
_PARALLEL_MAX_THREADS = 4


def _read_threads(nbytes: int) -> int:
    """How many threads read ``nbytes`` into memory: one per 16 MiB part, at most one per
    CPU this process may run on, at most 4. One where there is no ``pread`` (Windows):
    reads that move the file's position cannot share a descriptor."""
    if nbytes < 2 * _PARALLEL_PART_BYTES or not tsr_platform.HAVE_PREADV:
        return 1
    cpus = tsr_platform.cpu_count()
    return max(1, min(cpus, _PARALLEL_MAX_THREADS, nbytes // _PARALLEL_PART_BYTES))


def _read_into(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` (bytes) from ``fd`` at ``offset``, in parallel parts when it is big.

    Copying from the page cache into fresh memory is CPU-bound (page faults, zeroing,
    copying), and ``pread`` calls on one file run concurrently, so a 1 GiB read from a
    warm cache takes ~0.6x the time with two threads on the bench machine. The calling
    thread reads the first part; the first error (by offset) is raised after all parts
    are done.
    """
    threads = _read_threads(len(view))
    end = offset + len(view)
    if threads == 1:
        _pread_exact(fd, view, offset, end)
        return
    step = -(-len(view) // threads)
    step += -step % _mmap.PAGESIZE  # whole pages per part
    errors: dict[int, BaseException] = {}

    def part(start: int) -> None:
        try:
            _pread_exact(fd, view[start : start + step], offset + start, end)
        except BaseException as exc:  # handed to the calling thread
            errors[start] = exc

    helpers = [
        threading.Thread(target=part, args=(start,), name="tsr-read", daemon=True)
        for start in range(step, len(view), step)
    ]
    for t in helpers:
        t.start()
    try:
        part(0)
    finally:
        for t in helpers:
            t.join()
    if errors:
        raise errors[min(errors)]


def _read_checked_header(fd: int, size: int, *, strict: bool, reserved_dtypes: bool) -> Header:
    head = tsr_platform.pread(fd, HEADER_SIZE, 0)
    h = header.decode_raw(head)
    header.check(h, size, strict=strict, reserved_dtypes=reserved_dtypes)
    return h


# ----------------------------------------------------------------------------- reading


def read_header(source: Source, *, strict: bool = True, reserved_dtypes: bool = True) -> Header:
    """Read and check the 64-byte header of a TSR file; the payload is not read.

    Rules of the header itself are checked (magic, version, dtype code, ndim, dims against
    ``total_elements``, and with ``strict`` header_size and reserved fields); the file's
    size is not. Use :func:`tsr.validate` for a full report, :func:`load` for the data.
    Reserved dtype codes are accepted by default here since nothing is decoded.
    """
    with _open_fd(source) as (fd, _):
        head = tsr_platform.pread(fd, HEADER_SIZE, 0)
    h = header.decode_raw(head)
    header.check(h, None, strict=strict, reserved_dtypes=reserved_dtypes)
    return h


def load(
    source: Source,
    *,
    mmap: bool = True,
    strict: bool = True,
    reserved_dtypes: bool = False,
) -> npt.NDArray[Any]:
    """Load a TSR file as a NumPy array of its logical shape.

    With ``mmap=True`` (the default) the array is a read-only view of a memory map of the
    file: no payload byte is read or copied until used. (As with any memory map, a file
    truncated by another process while mapped makes later access fault.) With
    ``mmap=False`` it is an owned, writable array read in one pass (from 32 MiB in parts,
    by up to four threads at once).

    ``strict=False`` accepts files whose ``header_size`` or reserved fields are off, which
    the C++ reader also ignores. ``reserved_dtypes=True`` reads the reserved codes 4 to 8.
    Raises a :class:`tsr.TSRError` subclass for any bad file.
    """
    return read(source, "r" if mmap else "copy", strict=strict, reserved_dtypes=reserved_dtypes)[1]


ReadMode = Literal["r", "c", "copy"]


def read(
    source: Source,
    mode: ReadMode,
    *,
    strict: bool,
    reserved_dtypes: bool,
    bf16_bits: bool = False,
) -> tuple[Header, npt.NDArray[Any]]:
    """The header and payload of a file: a read-only map (``"r"``), a private
    copy-on-write map (``"c"``, writable, writes never reach the file) or an owned copy.

    ``bf16_bits`` returns BF16 payloads as int16 bits, for front ends with a bfloat16 type.
    """
    with _open_fd(source) as (fd, size):
        h = _read_checked_header(fd, size, strict=strict, reserved_dtypes=reserved_dtypes)
        raw_bits = bf16_bits and h.dtype_code == dtypes.BF16.code
        dt = np.dtype("<i2") if raw_bits else h.dtype.numpy
        count = h.total_elements
        if count == 0:
            out = np.empty(h.shape, dt)
            out.flags.writeable = mode != "r"
            return h, out
        if mode == "copy":
            out = np.empty(h.shape, dt)
            _read_into(fd, out.reshape(-1).view(np.uint8).data, HEADER_SIZE)
            return h, out
        access = _mmap.ACCESS_READ if mode == "r" else _mmap.ACCESS_COPY
        mm = _mmap.mmap(fd, HEADER_SIZE + count * dt.itemsize, access=access)
        return h, np.frombuffer(mm, dt, count, HEADER_SIZE).reshape(h.shape)


def byte_view(buffer: bytes | bytearray | memoryview) -> memoryview:
    """``buffer`` as a flat memoryview of bytes (no copy)."""
    view = memoryview(buffer)
    return view if view.ndim == 1 and view.itemsize == 1 else view.cast("B")


def from_bytes(
    buffer: bytes | bytearray | memoryview,
    *,
    strict: bool = True,
    reserved_dtypes: bool = False,
) -> npt.NDArray[Any]:
    """Decode a whole TSR file held in memory; the array is a view of ``buffer`` (no copy).

    The view is read-only when ``buffer`` is (``bytes``) and writable over a ``bytearray``.
    """
    view = byte_view(buffer)
    h = header.decode_raw(view[:HEADER_SIZE])
    header.check(h, len(view), strict=strict, reserved_dtypes=reserved_dtypes)
    dt = h.dtype.numpy
    return np.frombuffer(view, dt, h.total_elements, HEADER_SIZE).reshape(h.shape)


# ----------------------------------------------------------------------------- writing


def _prepare(
    array: npt.ArrayLike, dtype: npt.DTypeLike | None, reserved_dtypes: bool
) -> tuple[npt.NDArray[Any], bytes]:
    """The array to write and its header."""
    refuse_masked(array)
    arr = np.asarray(array) if dtype is None else np.asarray(array, dtype=dtype)
    dt = dtypes.from_numpy(arr.dtype, reserved_dtypes=reserved_dtypes)
    return arr, header.encode(arr.shape, dt)


def refuse_masked(array: object) -> None:
    """Raise :class:`BadArgumentError` for a masked array: its mask cannot be stored, and
    ``numpy.asarray`` would drop it silently (``numpy.save`` refuses them too)."""
    ma = sys.modules.get("numpy.ma")  # a masked array exists only once numpy.ma is loaded
    if ma is not None and isinstance(array, ma.MaskedArray):
        raise BadArgumentError(
            "a masked array cannot be stored: TSR has no mask; save array.filled(value) "
            "for the data, and the mask (numpy.ma.getmaskarray) separately if needed",
            field="array",
            found="numpy.ma.MaskedArray",
            expected="a plain array",
        )


def _payload_chunks(arr: npt.NDArray[Any]) -> Iterator[memoryview]:
    """The payload in logical C order, little-endian: one view when the array's memory
    already is that, else converted chunks of at most ``_CHUNK_BYTES``."""
    if arr.size == 0:
        return
    le = arr.dtype.newbyteorder("<") if arr.dtype.byteorder in "<>=" else arr.dtype
    if arr.flags.c_contiguous and arr.dtype == le:
        yield arr.reshape(-1).view(np.uint8).data
        return
    buffersize = max(1, _CHUNK_BYTES // arr.dtype.itemsize)
    it = np.nditer(
        arr,
        flags=["external_loop", "buffered", "zerosize_ok"],
        op_dtypes=[le],
        casting="equiv",
        buffersize=buffersize,
        order="C",
    )
    for chunk in it:
        yield np.ascontiguousarray(chunk).view(np.uint8).data


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view[:_MAX_IO])
        view = view[n:]


def save(
    path: PathLike | bytes,
    array: npt.ArrayLike,
    *,
    dtype: npt.DTypeLike | None = None,
    fsync: bool = False,
    reserved_dtypes: bool = False,
    follow_symlinks: bool = True,
) -> None:
    """Write ``array`` to ``path`` as a TSR v1 file, atomically.

    ``array`` is anything :func:`numpy.asarray` takes; non-contiguous and Fortran-ordered
    arrays are written in logical C order without a full copy. ``dtype`` converts first
    (``dtype=numpy.float32`` for a list of floats). Supported: float32, int8, int32; with
    ``reserved_dtypes=True`` also float16, bfloat16 (``ml_dtypes``), float64, int16, uint8,
    which no C++ build reads. A masked array is refused (its mask cannot be stored).

    The data goes to a temporary file beside the target that is then renamed over it:
    the target holds either its old content or the complete new file, never a partial
    one. ``fsync=True`` also flushes the file and its directory to disk before returning.

    - ``path`` is a ``str``, ``bytes`` or path-like; a symlink is followed as
      ``numpy.save`` and ``open(path, "wb")`` follow it: ``latest.tsr -> ckpt.tsr`` stays
      a link and ``ckpt.tsr`` is replaced (``follow_symlinks=False`` replaces the link
      itself with the file). A hard-linked file is replaced by a new file at ``path``;
      its other names keep the old content.
    - A replaced file keeps its permission bits, and its owner and group where the
      caller may set them; a new file gets ``0o666 & ~umask``. A file the caller may not
      write is not replaced: :class:`PermissionError`, as ``open(path, "wb")`` raises.
    - Saving over a file needs room for the old and the new file while it runs; the
      old file's space is free again by the time the next save starts (at once on a
      filesystem short of room), and a save leaves at most one descriptor open after it
      returns, for as long as the old file's blocks take to free.
    - Any name ``open(path, "wb")`` accepts works (the temp's name is shortened to fit).
    - Errors of the system (no space, no permission, a missing directory) are the
      :class:`OSError` subclass and errno the system gave, naming ``path``.
    """
    arr, head = _prepare(array, dtype, reserved_dtypes)
    write_file(path, head, arr, fsync=fsync, follow_symlinks=follow_symlinks)


def write_file(
    path: PathLike | bytes,
    head: bytes,
    payload: npt.NDArray[Any],
    *,
    fsync: bool,
    follow_symlinks: bool = True,
) -> None:
    """Atomically write ``head`` then ``payload`` (in C order, little-endian) to ``path``."""

    def write(fd: int) -> None:
        size = len(head) + payload.nbytes
        if size >= _PREALLOCATE_BYTES:
            _preallocate(fd, size)
        chunks = _payload_chunks(payload)
        first = next(chunks, None)
        if first is None:
            _write_all(fd, head)
            return
        # the header and the first chunk (the whole payload when its memory already is
        # the file's byte order) in one call, without joining them in memory; two calls
        # where there is no writev (Windows)
        if sys.platform != "win32" and tsr_platform.HAVE_WRITEV:
            done = os.writev(fd, (head, first[:_MAX_IO]))
        else:
            _write_all(fd, head)
            done = len(head)
        if done < len(head):
            _write_all(fd, head[done:])
            done = len(head)
        _write_all(fd, first[done - len(head) :])
        for chunk in chunks:
            _write_all(fd, chunk)

    atomic_write(path, write, fsync=fsync, follow_symlinks=follow_symlinks)


_PREALLOCATE_BYTES = 1 << 20
_FALLOC_FL_KEEP_SIZE = 1


@functools.cache
def _libc(name: str, *argtypes: Any) -> Any:
    """The Linux libc function ``name`` (returning int), or None elsewhere or if absent."""
    if not tsr_platform.LINUX_LIBC:
        return None
    fn = getattr(ctypes.CDLL(None, use_errno=True), name, None)  # the libc already loaded
    if fn is not None:
        fn.argtypes = list(argtypes)
        fn.restype = ctypes.c_int
    return fn


def _preallocate(fd: int, size: int) -> None:
    """Reserve the file's blocks before writing it, as ``numpy.ndarray.tofile`` does.

    On ext4 the buffered write then skips the delayed-allocation bookkeeping of each page
    (~10% faster from 64 MiB on the bench machine). Best effort: the size is kept (a
    killed writer's temp file still shows how far it got), and errors are ignored.
    """
    fallocate = _libc("fallocate", ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    if fallocate is not None:
        fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, size)


def to_bytes(
    array: npt.ArrayLike,
    *,
    dtype: npt.DTypeLike | None = None,
    reserved_dtypes: bool = False,
) -> bytes:
    """The bytes of a TSR v1 file holding ``array`` (see :func:`save`)."""
    arr, head = _prepare(array, dtype, reserved_dtypes)
    return _joined(head, arr)


def _joined(head: bytes, payload: npt.NDArray[Any]) -> bytes:
    """Header and payload as one bytes object."""
    parts: list[bytes | memoryview] = [head, *_payload_chunks(payload)]
    return b"".join(parts)


# ----------------------------------------------------------------------------- atomic write

_TMP_MARK = ".tsr-tmp-"
_TMP_HEX = 16
"""Temp files are named ``.<name>.tsr-tmp-<16 hex digits>`` (the name part shortened when
the whole would not fit in NAME_MAX). Their writer holds an exclusive ``flock`` on each
from just after creating it until the save is over; a temp nobody holds a lock on is a
dead writer's. Names of tsr 0.1's format, ``.<name>.tsr-tmp-<pid>-<8 hex digits>``,
carry no lock: they are removed only once far older than any save (see
:data:`_UNPROVEN_MAX_AGE`)."""

_NAME_MAX = 255  # bytes in a file name on every filesystem we know of (pathconf refines)
_UNPROVEN_MAX_AGE = 24 * 3600.0
"""A temp whose writer cannot be proven gone (no working locks on that filesystem, a
temp we may not open, or an old-format name) is removed only when unmodified for this
long: a live save writes continually and renames its temp seconds after its last write."""

_RESCAN_SECONDS = 60.0
_scanned: dict[str, float] = {}
"""Directory -> when this process last scanned it for stale temps (``time.monotonic``)."""

_own_temps: set[str] = set()
"""Paths of the temps this process is writing now. The cleaner never opens them: where
``flock`` is emulated with POSIX locks (Linux NFS), closing any descriptor of a file
drops the process's lock on it."""


def _clean_stale_temps(directory: str) -> None:
    """Remove the temp files that writers no longer running left in ``directory``.

    A temp is a dead writer's when the cleaner can take a lock on it without waiting:
    its writer's lock died with it, whichever host or container it ran in (see
    :data:`_TMP_HEX`). Listing a directory costs about 0.5 µs per entry (5 ms in a
    directory of 10,000 checkpoints), so a process scans a directory at most once a
    minute: the first save to a directory in a process cleans it, and a long-running
    process again after a minute. Best effort: a temp that cannot be removed (another
    user's, say) is left.
    """
    now = time.monotonic()
    last = _scanned.get(directory)
    if last is not None and now - last < _RESCAN_SECONDS:
        return
    if len(_scanned) >= 4096:
        _scanned.clear()
    _scanned[directory] = now
    try:
        with os.scandir(directory or ".") as entries:
            temps = [(e.name, _temp_kind(e.name)) for e in entries if _TMP_MARK in e.name]
    except OSError:
        return
    for name, kind in temps:
        path = os.path.join(directory, name)  # spelt as the writers spell their own
        if kind is not None and path not in _own_temps:
            with contextlib.suppress(OSError):
                _remove_if_dead(path, locked=kind == "locked")


def _temp_kind(name: str) -> Literal["locked", "legacy"] | None:
    """``"locked"`` for a temp name of this version, ``"legacy"`` for tsr 0.1's
    ``.<name>.tsr-tmp-<pid>-<8 hex>``, None for any other name."""
    if len(name) < 2 or name[0] != ".":
        return None
    tail = name[-_TMP_HEX:]
    if (
        len(name) > len(_TMP_MARK) + _TMP_HEX + 1
        and name[-_TMP_HEX - len(_TMP_MARK) : -_TMP_HEX] == _TMP_MARK
        and all(c in "0123456789abcdef" for c in tail)
    ):
        return "locked"
    head, _, tail = name.rpartition(_TMP_MARK)
    pid, dash, suffix = tail.partition("-")
    legacy = (
        len(head) >= 2
        and bool(dash)
        and len(suffix) == 8
        and all(c in "0123456789abcdef" for c in suffix)
        and 0 < len(pid) <= 10
        and pid.isascii()
        and pid.isdigit()
    )
    return "legacy" if legacy else None


def _remove_if_dead(path: str, *, locked: bool) -> None:
    """Unlink the temp ``path`` if its writer is provably gone, or if it cannot be
    proven either way and the file is older than :data:`_UNPROVEN_MAX_AGE`."""
    try:
        fd = os.open(path, _OPEN_PROBE)
    except OSError:
        fd = -1  # another user's temp, say: judged by its age
    try:
        if fd >= 0 and locked:
            probe = _probe_lock(fd)
            if probe == "held":
                return  # a live writer, here or on another host
            st = os.fstat(fd)
            if probe == "taken":
                # The writer checks after locking that its descriptor is still the file of
                # that name, so a temp removed before its writer locked it is abandoned.
                if stat.S_ISREG(st.st_mode) and _same_file(st, os.lstat(path)):
                    os.unlink(path)
                return
        else:
            st = os.lstat(path) if fd < 0 else os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and time.time() - st.st_mtime > _UNPROVEN_MAX_AGE:
            os.unlink(path)
    finally:
        if fd >= 0:
            os.close(fd)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_ino == b.st_ino and a.st_dev == b.st_dev


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` names a process in this PID namespace (only a hint: a process
    in another container or on another host is invisible here). Not ``os.kill(pid, 0)``
    on Windows, where signal 0 is CTRL_C_EVENT: see :func:`tsr_platform.pid_alive`."""
    return tsr_platform.pid_alive(pid)


# Locks: the only platform-specific part of the temp protocol, in two small helpers.

_LOCK_UNSUPPORTED = {errno.ENOLCK, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}


def _lock_temp(fd: int) -> bool | None:
    """Take the writer's exclusive lock on its new temp without waiting: True when
    taken, False when someone else holds one (a cleaner probing it), None when the
    filesystem or platform has no working locks."""
    if sys.platform == "win32" or _fcntl is None:
        return None
    try:
        _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in _LOCK_UNSUPPORTED:
            return None
        raise
    return True


def _probe_lock(fd: int) -> Literal["held", "taken", "unknown"]:
    """Try a shared lock on a temp (opened read-only): ``"held"`` when its writer holds
    its lock, ``"taken"`` when the probe got it (no writer holds it: the lock is kept
    until ``fd`` is closed), ``"unknown"`` when locks do not work there."""
    if sys.platform == "win32" or _fcntl is None:
        return "unknown"
    try:
        _fcntl.flock(fd, _fcntl.LOCK_SH | _fcntl.LOCK_NB)
    except BlockingIOError:
        return "held"
    except OSError:
        return "unknown"
    return "taken"


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False if the
    platform or filesystem cannot, or ``b`` does not exist."""
    renameat2 = _libc(
        "renameat2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint
    )
    if renameat2 is None:
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOENT, errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_CREATE |= getattr(os, "O_BINARY", 0)
_OPEN_PROBE = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_OPEN_PROBE |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_MAX_LINKS = 40  # symlinks followed from the target, as Linux's own limit


def atomic_write(
    path: PathLike | bytes,
    write: Callable[[int], None],
    *,
    fsync: bool = False,
    follow_symlinks: bool = True,
) -> None:
    """Create or replace ``path`` atomically with what ``write(fd)`` writes: ``write``
    fills a temp file beside the target, which is then moved into place, so the target
    holds either its old content or the complete new file.

    - A symlink is followed, as ``open(path, "wb")`` does: the file it points to is
      replaced and the link stays a link (``follow_symlinks=False`` replaces the link
      itself). Other hard links of a replaced file keep the old content: the new file
      is a new inode.
    - A replaced file's permission bits (``0o777``), owner and group are kept where the
      caller may set them; a new file gets ``0o666 & ~umask``. A file the caller may not
      write is not replaced: :class:`PermissionError`, as ``open(path, "wb")``.
    - The save needs room for the old and the new file, and two descriptors, while it
      runs. The replaced file's space is free again when the next save starts, or
      before this one returns where room or descriptors are short (see
      :func:`_unlink_replaced`); until then it holds one descriptor.
    - Errors are the :class:`OSError` the system gave, errno and class kept, naming
      ``path`` (not the hidden temp).

    When ``path`` already exists the two are swapped with ``RENAME_EXCHANGE`` and the old
    file is unlinked: a plain rename over an existing file makes ext4 flush the new data
    synchronously (its ``auto_da_alloc`` heuristic), which costs a disk write per save.
    Temp files left by killed writers are removed by a later save to the same directory
    (see :func:`_clean_stale_temps`); a live writer's, wherever it runs, never are.
    """
    given = os.fspath(path)
    target = os.fsdecode(given)
    try:
        _atomic_write(target, write, fsync=fsync, follow_symlinks=follow_symlinks)
    except OSError as exc:
        if _names_no_other_file(exc):
            raise OSError(exc.errno, exc.strerror, given) from exc
        raise


def _names_no_other_file(exc: OSError) -> bool:
    """Whether ``exc`` is a plain system error naming no file, or naming our temp (so
    that it may name the target instead)."""
    if exc.errno is None or type(exc).__module__ != "builtins":
        return False
    name = exc.filename
    if name is None:
        return True
    if not isinstance(name, (str, bytes)):
        return False
    return _temp_kind(os.path.basename(os.fsdecode(name))) == "locked"


def _atomic_write(
    target: str, write: Callable[[int], None], *, fsync: bool, follow_symlinks: bool
) -> None:
    final, old = _resolve_target(target, follow_symlinks)
    directory, name = os.path.split(final)
    _wait_for_freeing()
    _clean_stale_temps(directory)
    fd, tmp = _create_temp(directory, name)
    try:
        try:
            if old is not None and stat.S_ISREG(old.st_mode):
                _copy_owner_and_mode(fd, old)
            write(fd)
            if fsync:
                os.fsync(fd)
            if old is not None and _exchange(tmp, final):
                _unlink_replaced(tmp, old, fd, directory)  # tmp now names the old file
            else:
                if _fcntl is None:  # no lock to hold (Windows), and a file open here
                    os.close(fd)  # cannot be renamed there: close it first
                    fd = -1
                tsr_platform.replace(tmp, final)  # retried while Windows says "in use"
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    finally:
        _own_temps.discard(tmp)
        if fd >= 0:
            os.close(fd)  # the lock goes last: until here the temp (if any) is live
    if fsync:
        _fsync_dir(directory)


def _resolve_target(target: str, follow_symlinks: bool) -> tuple[str, os.stat_result | None]:
    """The path to replace (the end of ``target``'s symlinks when following them) and
    its ``lstat``, None when nothing is there; raises what ``open(target, "wb")`` would
    for a directory, an empty name or a file the caller may not write."""
    if not target or target.endswith(os.sep) or (os.altsep and target.endswith(os.altsep)):
        code = errno.EISDIR if target else errno.ENOENT
        raise OSError(code, os.strerror(code), target)
    final = target
    for _ in range(_MAX_LINKS + 1):
        try:
            st = os.lstat(final)
        except FileNotFoundError:
            return final, None
        if not (follow_symlinks and stat.S_ISLNK(st.st_mode)):
            break
        final = os.path.join(os.path.dirname(final), os.readlink(final))
    else:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), target)
    if stat.S_ISDIR(st.st_mode):
        raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), target)
    if stat.S_ISREG(st.st_mode) and not _may_write(final):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), target)
    return final, st


def _may_write(path: str) -> bool:
    """Whether the caller may open ``path`` for writing (its effective ids, as open)."""
    if os.access in os.supports_effective_ids:
        return os.access(path, os.W_OK, effective_ids=True)
    return os.access(path, os.W_OK)


def _create_temp(directory: str, name: str) -> tuple[int, str]:
    """Create and lock a new temp beside ``name``; its descriptor and path."""
    limit, refined = _NAME_MAX, False
    for _ in range(100):
        if len(os.fsencode(name)) > limit and not refined:
            limit, refined = _name_max(directory), True
        if len(os.fsencode(name)) > limit:  # open(path, "wb") would fail the same way
            code = errno.ENAMETOOLONG
            raise OSError(code, os.strerror(code), os.path.join(directory, name))
        tmp = os.path.join(directory, _temp_name(name, limit))
        _own_temps.add(tmp)
        try:
            fd = os.open(tmp, _CREATE, 0o666)
        except FileExistsError:
            _own_temps.discard(tmp)
            continue
        except OSError as exc:
            _own_temps.discard(tmp)
            if exc.errno == errno.ENAMETOOLONG and not refined:
                limit, refined = min(limit, _name_max(directory)), True  # a smaller limit
                continue
            raise
        try:
            locked = _lock_temp(fd)
            # A cleaner may have taken the temp between its creation and the lock: then
            # it is (being) removed; start afresh under a new name.
            if locked is None or (locked and _same_file(os.fstat(fd), os.stat(tmp))):
                return fd, tmp
        except FileNotFoundError:
            pass
        except BaseException:
            _own_temps.discard(tmp)
            os.close(fd)
            raise
        _own_temps.discard(tmp)
        os.close(fd)
    code = errno.EAGAIN
    raise OSError(code, "could not create a temp file beside the target", directory)


def _temp_name(name: str, limit: int) -> str:
    """``.<name>.tsr-tmp-<16 hex>``, the name part shortened to fit in ``limit`` bytes."""
    suffix = _TMP_MARK + os.urandom(_TMP_HEX // 2).hex()
    budget = limit - 1 - len(suffix)
    while len(os.fsencode(name)) > budget:
        name = name[: -max(1, (len(os.fsencode(name)) - budget) // 4)]
    return f".{name}{suffix}"


def _name_max(directory: str) -> int:
    if sys.platform == "win32":  # no pathconf: the longest name NTFS takes
        return _NAME_MAX
    try:
        return int(os.pathconf(directory or ".", "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return _NAME_MAX


def _copy_owner_and_mode(fd: int, old: os.stat_result) -> None:
    """Give the temp the replaced file's owner and group where allowed (a user may give
    a file a group of theirs; only root may give it another owner), then its
    permission bits."""
    fchown = getattr(os, "fchown", None)
    if sys.platform == "win32" or fchown is None:  # no owners to copy (Windows)
        pass
    elif (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
        mine = os.fstat(fd)
        if (mine.st_uid, mine.st_gid) != (old.st_uid, old.st_gid):
            try:
                fchown(fd, old.st_uid, old.st_gid)
            except PermissionError:
                with contextlib.suppress(PermissionError):
                    fchown(fd, -1, old.st_gid)
    fchmod = getattr(os, "fchmod", None)
    if fchmod is not None:
        fchmod(fd, stat.S_IMODE(old.st_mode) & 0o777)


def _unlink_replaced(path: str, old: os.stat_result, temp_fd: int, directory: str) -> None:
    """Remove the file a save replaced (``path`` names it now).

    Freeing a file's blocks is the slow part of removing it: on the bench machine's ext4
    (mounted with ``discard``) ~0.4 ms for a 4 KiB file written back to disk, ~3 ms for
    4 MiB, ~0.2 s per GiB. So where the filesystem has ample room (at least
    :data:`_BACKGROUND_ROOM` times the old file free) and the process ample descriptors,
    the old file is opened, its name removed at once, and a thread closes the descriptor
    (that close frees the blocks). One such file at most is pending, and every save
    waits for it before it starts (:func:`_wait_for_freeing`): a save loop never needs
    room for more than one old and one new file, nor more than two descriptors.
    Elsewhere (a nearly full filesystem, few descriptors left, no threads) the blocks
    are freed before the save returns.
    """
    if not _may_free_later(old, temp_fd, directory):
        with contextlib.suppress(FileNotFoundError):  # a cleaner removed it first
            os.unlink(path)
        return
    try:
        fd = os.open(path, _OPEN_PROBE)
    except FileNotFoundError:
        return
    except OSError:  # a symlink (ELOOP), or no permission to read: unlink now
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    try:
        os.unlink(path)
    except BaseException:
        os.close(fd)
        raise
    _free_later(fd)


_BACKGROUND_ROOM = 8
"""Free space, in multiples of the replaced file, that lets its blocks be freed after the
save returns."""
_BACKGROUND_FDS = 32
"""Descriptors that must be left below the process's limit for the same."""


def _may_free_later(old: os.stat_result, temp_fd: int, directory: str) -> bool:
    """Whether the replaced file may be freed off the caller's path: it is a regular
    file whose last name goes, there is room to spare, and descriptors to spare."""
    if sys.platform == "win32" or _resource is None:  # no rlimits nor statvfs (Windows)
        return False
    if not stat.S_ISREG(old.st_mode) or old.st_nlink != 1:
        return False
    soft, _ = _resource.getrlimit(_resource.RLIMIT_NOFILE)
    if soft != _resource.RLIM_INFINITY and temp_fd + _BACKGROUND_FDS > soft:
        return False  # descriptors are allocated lowest first: few are left
    try:
        fs = os.statvfs(directory or ".")
    except OSError:
        return False
    blocks = getattr(old, "st_blocks", 0) * 512 or old.st_size
    return fs.f_bavail * fs.f_frsize >= _BACKGROUND_ROOM * blocks


_freeing = threading.Condition()
_pending_fd: int | None = None
"""The descriptor of the replaced file the closer thread is freeing, if any."""
_closer_started = False


def _free_later(fd: int) -> None:
    global _pending_fd, _closer_started
    with _freeing:
        if _pending_fd is not None:  # another thread's save is being freed: do it here
            os.close(fd)
            return
        if not _closer_started:
            threading.Thread(target=_closer, name="tsr-free", daemon=True).start()
            _closer_started = True
        _pending_fd = fd
        _freeing.notify_all()


def _closer() -> None:
    global _pending_fd
    while True:
        with _freeing:
            while _pending_fd is None:
                _freeing.wait()
            fd = _pending_fd
        with contextlib.suppress(OSError):
            os.close(fd)
        with _freeing:
            _pending_fd = None
            _freeing.notify_all()


def _wait_for_freeing() -> None:
    """Wait until the file the last save replaced has been freed."""
    if _pending_fd is None:  # the common case, without the lock
        return
    with _freeing:
        while _pending_fd is not None:
            _freeing.wait()


def _reset_closer_in_child() -> None:
    """The closer thread does not survive fork: close the child's copy of the pending
    descriptor and start afresh."""
    global _freeing, _pending_fd, _closer_started
    fd, _pending_fd, _closer_started = _pending_fd, None, False
    _freeing = threading.Condition()
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_closer_in_child)


def _fsync_dir(directory: str) -> None:
    try:
        dfd = os.open(directory or ".", os.O_RDONLY | tsr_platform.O_DIRECTORY)
    except OSError:
        return  # platforms without directory descriptors
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
