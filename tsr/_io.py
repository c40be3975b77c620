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
import queue
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO, Literal, Union

import numpy as np
import numpy.typing as npt

from . import dtypes, header
from .errors import BadArgumentError, TruncatedError
from .header import HEADER_SIZE, Header

PathLike = Union[str, "os.PathLike[str]"]
Source = Union[str, "os.PathLike[str]", BinaryIO, IO[bytes]]
"""A path, or an open binary file (anything with ``fileno()``; it is not closed)."""

_CHUNK_BYTES = 16 << 20  # bound on the extra memory of a converting write
_MAX_IO = 1 << 30  # bytes per read/write call (Linux caps a call near 2 GiB)


# ----------------------------------------------------------------------------- opening


_OPEN_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_OPEN_READ |= getattr(os, "O_BINARY", 0)


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
        if type(source) is str or isinstance(source, os.PathLike):
            fd = os.open(source, _OPEN_READ)
            self._close = fd
            try:
                self.fd_size = fd, _require_regular(fd, os.fspath(source))
            except BaseException:
                os.close(fd)
                raise
            return
        try:
            fd = source.fileno()  # type: ignore[union-attr]
        except (AttributeError, OSError) as exc:
            raise BadArgumentError(
                f"expected a path or an open file with a descriptor, got {type(source).__name__}",
                field="source",
                found=type(source).__name__,
                expected="str, os.PathLike or a binary file with fileno()",
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


def _pread_exact(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` (bytes) from ``fd`` at ``offset``; raise if the file ends first."""
    pos = 0
    total = len(view)
    while pos < total:
        n = os.preadv(fd, [view[pos : pos + _MAX_IO]], offset + pos)
        if n == 0:
            raise TruncatedError(
                f"the file ended after {offset + pos} bytes while reading {offset + total}; "
                "was it truncated while being read?",
                field="payload",
                offset=offset + pos,
                found=offset + pos,
                expected=offset + total,
            )
        pos += n


_PARALLEL_PART_BYTES = 16 << 20
_PARALLEL_MAX_THREADS = 4


def _read_threads(nbytes: int) -> int:
    """How many threads read ``nbytes`` into memory: one per 16 MiB part, at most one per
    CPU this process may run on, at most 4."""
    if nbytes < 2 * _PARALLEL_PART_BYTES:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
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
    if threads == 1:
        _pread_exact(fd, view, offset)
        return
    step = -(-len(view) // threads)
    step += -step % _mmap.PAGESIZE  # whole pages per part
    errors: dict[int, BaseException] = {}

    def part(start: int) -> None:
        try:
            _pread_exact(fd, view[start : start + step], offset + start)
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
    head = os.pread(fd, HEADER_SIZE, 0)
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
        head = os.pread(fd, HEADER_SIZE, 0)
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
    arr = np.asarray(array) if dtype is None else np.asarray(array, dtype=dtype)
    dt = dtypes.from_numpy(arr.dtype, reserved_dtypes=reserved_dtypes)
    return arr, header.encode(arr.shape, dt)


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
    path: PathLike,
    array: npt.ArrayLike,
    *,
    dtype: npt.DTypeLike | None = None,
    fsync: bool = False,
    reserved_dtypes: bool = False,
) -> None:
    """Write ``array`` to ``path`` as a TSR v1 file, atomically.

    ``array`` is anything :func:`numpy.asarray` takes; non-contiguous and Fortran-ordered
    arrays are written in logical C order without a full copy. ``dtype`` converts first
    (``dtype=numpy.float32`` for a list of floats). Supported: float32, int8, int32; with
    ``reserved_dtypes=True`` also float16, bfloat16 (``ml_dtypes``), float64, int16, uint8,
    which no C++ build reads.

    The data goes to a temporary file beside ``path`` that is then renamed over it: the
    target holds either its old content or the complete new file, never a partial one.
    ``fsync=True`` also flushes the file and its directory to disk before returning.
    """
    arr, head = _prepare(array, dtype, reserved_dtypes)
    write_file(path, head, arr, fsync=fsync)


def write_file(path: PathLike, head: bytes, payload: npt.NDArray[Any], *, fsync: bool) -> None:
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
        # the file's byte order) in one call, without joining them in memory
        done = os.writev(fd, (head, first[:_MAX_IO]))
        if done < len(head):
            _write_all(fd, head[done:])
            done = len(head)
        _write_all(fd, first[done - len(head) :])
        for chunk in chunks:
            _write_all(fd, chunk)

    atomic_write(path, write, fsync=fsync)


_PREALLOCATE_BYTES = 1 << 20
_FALLOC_FL_KEEP_SIZE = 1


@functools.cache
def _libc(name: str, *argtypes: Any) -> Any:
    """The Linux libc function ``name`` (returning int), or None elsewhere or if absent."""
    if not sys.platform.startswith("linux"):
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
"""Temp files are named ``.<name>.tsr-tmp-<pid>-<8 hex digits>``."""

_RESCAN_SECONDS = 60.0
_scanned: dict[str, float] = {}
"""Directory -> when this process last scanned it for stale temps (``time.monotonic``)."""


def _clean_stale_temps(directory: str) -> None:
    """Remove the temp files that writers no longer running left in ``directory``.

    Listing a directory costs about 0.5 µs per entry (5 ms in a directory of 10,000
    checkpoints), so a process scans a directory at most once a minute: the first save
    to a directory in a process cleans it, and a long-running process again after a
    minute. Best effort: a temp that cannot be removed (another user's, say) is left.
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
            stale = [e.path for e in entries if _TMP_MARK in e.name and _dead_temp(e.name)]
    except OSError:
        return
    for path in stale:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _dead_temp(name: str) -> bool:
    """Whether ``name`` is a temp file of a save whose process is gone."""
    head, _, tail = name.rpartition(_TMP_MARK)
    pid, dash, suffix = tail.partition("-")
    return (
        len(head) >= 2
        and head[0] == "."
        and bool(dash)
        and len(suffix) == 8
        and all(c in "0123456789abcdef" for c in suffix)
        and 0 < len(pid) <= 10
        and pid.isascii()
        and pid.isdigit()
        and int(pid) < 1 << 31
        and not _pid_alive(int(pid))
    )


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def atomic_write(path: PathLike, write: Callable[[int], None], *, fsync: bool = False) -> None:
    """Create ``path`` atomically: ``write(fd)`` fills a temp file beside it, then it is
    moved into place.

    When ``path`` already exists the two are swapped with ``RENAME_EXCHANGE`` and the old
    file is unlinked: a plain rename over an existing file makes ext4 flush the new data
    synchronously (its ``auto_da_alloc`` heuristic), which costs a disk write per save.
    Temp files left by killed writers are removed by a later save to the same directory
    (see :func:`_clean_stale_temps`).
    """
    target = os.fspath(path)
    directory, name = os.path.split(target)
    _clean_stale_temps(directory)
    tmp = os.path.join(directory, f".{name}{_TMP_MARK}{os.getpid()}-{os.urandom(4).hex()}")
    fd = os.open(tmp, _CREATE, 0o666)
    try:
        try:
            write(fd)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if _file_or_link(target) and _exchange(tmp, target):
            _discard_old(tmp)  # tmp now names the old file
        else:
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        _fsync_dir(directory)


def _file_or_link(path: str) -> bool:
    """Whether ``path`` names a regular file or a symlink (what a save may replace)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


_PENDING_MAX = 64
_OPEN_OLD = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_OPEN_OLD |= getattr(os, "O_CLOEXEC", 0)
_free_queue: queue.SimpleQueue[int] | None = None
_free_lock = threading.Lock()


def _discard_old(path: str) -> None:
    """Remove the file a save replaced; free its blocks off the caller's path.

    Freeing blocks is the slow part of removing a file, and the new file is already in
    place: on the bench machine's ext4 (mounted with ``discard``) it takes ~80 µs for a
    4 KiB file written back to disk, ~230 ms per GiB. So the old file is opened, its name
    removed at once, and a worker thread closes the descriptor: that last close frees
    the blocks. No name is left behind, and at exit the kernel closes whatever the worker
    has not. At most ``_PENDING_MAX`` descriptors wait; past that the caller closes.
    """
    try:
        fd = os.open(path, _OPEN_OLD)
    except OSError:  # a symlink (ELOOP), or no permission to read: unlink as before
        os.unlink(path)
        return
    try:
        os.unlink(path)
    except BaseException:
        os.close(fd)
        raise
    _close_later(fd)


def _close_later(fd: int) -> None:
    global _free_queue
    q = _free_queue
    if q is None:
        with _free_lock:
            if _free_queue is None:
                q = queue.SimpleQueue()
                threading.Thread(target=_closer, args=(q,), name="tsr-free", daemon=True).start()
                _free_queue = q
            q = _free_queue
    if q.qsize() >= _PENDING_MAX:
        os.close(fd)
        return
    q.put(fd)


def _closer(q: queue.SimpleQueue[int]) -> None:
    while True:
        fd = q.get()
        with contextlib.suppress(OSError):
            os.close(fd)


def _forget_closer_in_child() -> None:
    """The worker does not survive fork: close its backlog in the child, start afresh."""
    global _free_queue
    q, _free_queue = _free_queue, None
    while q is not None and not q.empty():
        with contextlib.suppress(OSError):
            os.close(q.get_nowait())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_closer_in_child)


def _fsync_dir(directory: str) -> None:
    try:
        dfd = os.open(directory or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # platforms without directory descriptors
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
