"""The public functions over every generation: ``load``, ``load_all``, ``open``, ``save``,
``save_all``, ``read_header`` and ``validate``, and their in-memory forms ``from_bytes``,
``from_bytes_all``, ``to_bytes``, ``to_bytes_all`` and ``validate_bytes``.

Each opens the file once, reads its first bytes, picks the generation from the magic
(:mod:`tsr._formats`) and works from the neutral model (:mod:`tsr._model`). TSR v1 files
go through v1's own fast paths in :mod:`tsr._io` and :mod:`tsr.validate`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar, cast

import numpy as np
import numpy.typing as npt

import tsr_platform

from . import _blocks, _formats, _io, _zlib
from . import validate as _validate
from ._blocks import ReadMode
from ._io import PathLike, Source
from ._model import Compression, Directory, FormatName, ReadAt, TensorInfo
from .errors import BadArgumentError, TSRError
from .validate import Finding, Report


class _Fd:
    """An open descriptor passed on as a file object (v1's reader takes one)."""

    __slots__ = ("_fd", "name")

    def __init__(self, fd: int, name: object) -> None:
        self._fd = fd
        self.name = name

    def fileno(self) -> int:
        return self._fd


def _fd_source(fd: int, name: object) -> Source:
    """An open descriptor as a :data:`Source` (read by v1's functions, left open)."""
    return cast(Source, _Fd(fd, name))


def _name(source: Source) -> str:
    if isinstance(source, (str, bytes, os.PathLike)):
        return os.fsdecode(source)
    return str(getattr(source, "name", "<file>"))


def _read_at(fd: int) -> Any:
    return lambda offset, n: tsr_platform.pread(fd, n, offset)


def _parse(fd: int, size: int, *, reserved_dtypes: bool) -> tuple[Any, bytes, Directory]:
    head = tsr_platform.pread(fd, _formats.HEAD_SIZE, 0)
    gen = _formats.detect(head)
    d = gen.parse(head[: gen.head_size], size, _read_at(fd), reserved_dtypes=reserved_dtypes)
    return gen, head, d


def _checked(d: Directory, strict: bool) -> Directory:
    p = d.first_error(strict)
    if p is not None:
        raise p.exception()
    return d


def _mode(mmap: bool, writable: bool = False) -> ReadMode:
    return ("c" if writable else "r") if mmap else "copy"


def format_of(source: Source) -> FormatName:
    """The generation of a file, from its magic (``v1`` for an unknown one)."""
    with _io._open_fd(source) as (fd, _):
        return _formats.detect(tsr_platform.pread(fd, 4, 0)).name


def read_header(source: Source, *, strict: bool = True, reserved_dtypes: bool = True) -> Any:
    """The header of a file of any generation (its own frozen dataclass; ``.format`` is
    ``v1``/``v3``/``v4``), checked; no payload is read (v1: the file size is not checked
    either, see :func:`tsr._io.read_header`)."""
    with _io._open_fd(source) as (fd, size):
        head = tsr_platform.pread(fd, _formats.HEAD_SIZE, 0)
        gen = _formats.detect(head)
        if gen.name == "v1":
            return _io.read_header(_fd_source(fd, _name(source)), strict=strict,
                                   reserved_dtypes=reserved_dtypes)  # fmt: skip
        d = gen.parse(head[: gen.head_size], size, _read_at(fd), reserved_dtypes=reserved_dtypes)
    return _checked(d, strict).header


def load(
    source: Source,
    *,
    mmap: bool = True,
    strict: bool = True,
    verify: bool = True,
    reserved_dtypes: bool = False,
) -> npt.NDArray[Any]:
    """Load a single-tensor file of any generation (v1, TSR3, a one-tensor TSR4).

    RAW data (v1, RAW TSR3/TSR4) is a read-only memory map by default, as in v1; ZLIB data
    is inflated into an owned array. ``mmap=False`` always gives an owned, writable array.
    The stored CRC-32 (TSR3, TSR4) is checked on every load; ``verify=False`` skips it for
    RAW maps, which then read nothing until used. ``strict=False`` accepts what the C++
    importer ignores and that harms nothing (reserved fields, padding, trailing bytes).
    A TSR4 file with several tensors raises :class:`TSRError`: use :func:`load_all` or
    :func:`open`. Raises a :class:`TSRError` subclass for any bad file.
    """
    return load_one(source, _mode(mmap), strict=strict, verify=verify,
                    reserved_dtypes=reserved_dtypes)[1]  # fmt: skip


def load_one(source: Source, mode: ReadMode, *, strict: bool, verify: bool,
             reserved_dtypes: bool, bf16_bits: bool = False
             ) -> tuple[str, npt.NDArray[Any]]:  # fmt: skip
    """(the dtype's name, the array) of a single-tensor file; ``bf16_bits`` returns BF16
    as int16 bits (for front ends with their own bfloat16)."""
    with _io._open_fd(source) as (fd, size):
        head = tsr_platform.pread(fd, _formats.HEAD_SIZE, 0)
        gen = _formats.detect(head)
        if gen.name == "v1":
            h, arr = _io.read(_fd_source(fd, _name(source)), mode, strict=strict,
                              reserved_dtypes=reserved_dtypes, bf16_bits=bf16_bits)  # fmt: skip
            return h.dtype.name, arr
        d = gen.parse(head[: gen.head_size], size, _read_at(fd), reserved_dtypes=reserved_dtypes)
        info = _single(_checked(d, strict), _name(source), "load",
                       "tsr.open (one at a time, by index)")  # fmt: skip
        return info.dtype, _read(fd, info, mode, strict=strict, verify=verify,
                                 bf16_bits=bf16_bits)  # fmt: skip


def _single(d: Directory, name: str, api: str, other: str = "") -> TensorInfo:
    """The one tensor of ``d``, or the error naming ``tsr.<api>_all`` (and ``other``)."""
    if len(d.tensors) != 1:
        raise TSRError(
            f"{name} holds {len(d.tensors)} tensors: tsr.{api} reads a single-tensor file; "
            f"use tsr.{api}_all (every tensor)" + (f" or {other}" if other else ""),
            field="tensor_count", found=len(d.tensors), expected=1,
        )  # fmt: skip
    return d.tensors[0]


def _read(fd: int, info: TensorInfo, mode: ReadMode, *, strict: bool, verify: bool,
          bf16_bits: bool) -> npt.NDArray[Any]:  # fmt: skip
    dt = np.dtype("<i2") if bf16_bits and info.dtype == "BF16" else None
    return _blocks.read_block(fd, info, mode, verify=verify, strict=strict, dtype=dt)


def load_all(
    source: Source,
    *,
    mmap: bool = True,
    strict: bool = True,
    verify: bool = True,
    reserved_dtypes: bool = False,
) -> list[npt.NDArray[Any]]:
    """Every tensor of a file, in directory order (one element for v1 and TSR3); options
    as for :func:`load`."""
    with open(source, mmap=mmap, strict=strict, verify=verify,
              reserved_dtypes=reserved_dtypes) as f:  # fmt: skip
        return f.read_all()


T = TypeVar("T")


class OpenFile(Generic[T]):
    """One open TSR file of any generation, ``f[i]`` giving a ``T`` (what :func:`tsr.open`
    and ``tsr.torch.open`` return: :class:`TSRFile`, ``tsr.torch.TorchFile``).

    The header and directory are read and checked when it is opened; payloads are read
    only by ``f[i]``, one tensor at a time. ``f.tensors[i]`` (:class:`tsr.TensorInfo`)
    gives each tensor's dtype, shape, offset, sizes, compression and CRC without reading
    it. Close it (or use ``with``) to release the descriptor; tensors already returned stay
    valid.
    """

    def __init__(self, source: Source, *, mmap: bool, strict: bool, verify: bool,
                 reserved_dtypes: bool, writable: bool = False,
                 bf16_bits: bool = False) -> None:  # fmt: skip
        self.name = _name(source)
        self._close_fd = -1
        if isinstance(source, (str, bytes, os.PathLike)):
            fd = os.open(source, _io._OPEN_READ)
            self._close_fd = fd
        else:
            fd = source.fileno()
        try:
            size = _io._require_regular(fd, self.name)
            gen, _, d = _parse(fd, size, reserved_dtypes=reserved_dtypes)
            _checked(d, strict)
        except BaseException:
            self.close()
            raise
        self._fd = fd
        self.size = size
        self._mode = _mode(mmap, writable)
        self._strict = strict
        self._verify = verify
        self._bf16_bits = bf16_bits
        self.format: FormatName = gen.name
        self.header: Any = d.header
        self.tensors: tuple[TensorInfo, ...] = d.tensors
        self.warnings: tuple[Finding, ...] = tuple(
            _finding(p, strict) for p in d.problems if p.severity(strict) == "warning"
        )

    def _wrap(self, info: TensorInfo, array: npt.NDArray[Any]) -> T:
        """What ``f[i]`` gives for tensor ``info`` read as ``array``."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, index: int) -> T:
        if self._fd < 0:
            raise BadArgumentError(f"{self.name}: the file is closed", field="file")
        info = self.tensors[index]  # IndexError for a bad index, as any sequence
        return self._wrap(info, _read(self._fd, info, self._mode, strict=self._strict,
                                      verify=self._verify, bf16_bits=self._bf16_bits))  # fmt: skip

    def read_all(self) -> list[T]:
        """Every tensor, in directory order; several ZLIB tensors (and RAW CRC checks) run
        on a thread pool (zlib and CRC release the GIL), with the same result and the first
        error in directory order."""
        if self._fd < 0:
            raise BadArgumentError(f"{self.name}: the file is closed", field="file")
        work = sum(t.nbytes for t in self.tensors if t.compression or self._verify)
        return _zlib.map_blocks(self.__getitem__, range(len(self.tensors)), work)

    def __iter__(self) -> Iterator[T]:
        for i in range(len(self.tensors)):
            yield self[i]

    def close(self) -> None:
        """Release the descriptor (of a path opened here; an open file is left open)."""
        if self._close_fd >= 0:
            os.close(self._close_fd)
            self._close_fd = -1
        self._fd = -1

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = type(self)
        where = kind.__module__.replace("._api", "")
        return (
            f"<{where}.{kind.__qualname__} {self.name!r} format={self.format} tensors={len(self)}>"
        )


_Self = TypeVar("_Self", bound=OpenFile[Any])


class TSRFile(OpenFile[npt.NDArray[Any]]):
    """One open TSR file of any generation (what :func:`tsr.open` returns): ``f[i]`` is
    tensor ``i`` as a NumPy array (see :class:`OpenFile` for the rest)."""

    def _wrap(self, info: TensorInfo, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return array


def open(
    source: Source,
    *,
    mmap: bool = True,
    strict: bool = True,
    verify: bool = True,
    reserved_dtypes: bool = False,
) -> TSRFile:
    """Open a TSR file of any generation: ``.format``, ``.header``, ``len()``,
    ``.tensors`` (per-tensor info, no payload read) and ``f[i]`` for one tensor; use it
    as a context manager. Options as for :func:`load`."""
    return TSRFile(source, mmap=mmap, strict=strict, verify=verify,
                   reserved_dtypes=reserved_dtypes)  # fmt: skip


def save(
    path: PathLike | bytes,
    array: npt.ArrayLike,
    *,
    format: str = "v1",
    compression: Compression = None,
    dtype: npt.DTypeLike | None = None,
    fsync: bool = False,
    reserved_dtypes: bool = False,
    follow_symlinks: bool = True,
) -> None:
    """Write ``array`` to ``path`` atomically, as ``format`` ``"v1"`` (the default),
    ``"v3"`` (TSR3) or ``"v4"`` (TSR4), byte-identical with the framework's C++ writer.

    ``compression="zlib"`` (TSR3, TSR4) stores one zlib stream (level 6). ``dtype``
    converts first. What the format cannot hold (a dtype, rank > 4, a zero-size dim for
    TSR3/TSR4) raises :class:`BadArgumentError` / :class:`UnsupportedDTypeError` with the
    fix. ``reserved_dtypes`` is v1's opt-in (see :func:`tsr._io.save`). The target holds
    its old content or the complete new file, never a partial one.

    Every generation is saved the same way (:func:`tsr._io.atomic_write`):

    - ``path`` is a ``str``, ``bytes`` or path-like, and any name ``open(path, "wb")``
      accepts works. A symlink is followed as ``numpy.save`` and ``open(path, "wb")``
      follow it: ``latest.tsr -> ckpt.tsr`` stays a link and ``ckpt.tsr`` is replaced
      (``follow_symlinks=False`` replaces the link itself). A hard-linked file is
      replaced by a new file at ``path``; its other names keep the old content.
    - A replaced file keeps its permission bits, and its owner and group where the
      caller may set them; a new file gets ``0o666 & ~umask``. A file the caller may not
      write is not replaced: :class:`PermissionError`, as ``open(path, "wb")`` raises.
    - Saving over a file needs room for the old and the new file while it runs; the
      old file's space is free again by the time the next save starts (at once on a
      filesystem short of room), and a save leaves at most one descriptor open after it
      returns, for as long as the old file's blocks take to free.
    - Errors of the system (no space, no permission, a missing directory) are the
      :class:`OSError` subclass and errno the system gave, naming ``path``.
    """
    gen = _formats.by_name(format)
    if gen.name == "v1" and compression is None:
        _io.save(path, array, dtype=dtype, fsync=fsync, reserved_dtypes=reserved_dtypes,
                 follow_symlinks=follow_symlinks)  # fmt: skip
        return
    _blocks.write_encoded(path, gen.encode([_array(array, dtype)], compression), fsync=fsync,
                          follow_symlinks=follow_symlinks)  # fmt: skip


def _array(array: npt.ArrayLike, dtype: npt.DTypeLike | None = None) -> npt.NDArray[Any]:
    """``array`` as NumPy (converted to ``dtype``); masked arrays are refused."""
    _io.refuse_masked(array)
    return np.asarray(array) if dtype is None else np.asarray(array, dtype=dtype)


def save_all(
    path: PathLike | bytes,
    arrays: Sequence[npt.ArrayLike],
    *,
    format: str = "v4",
    compression: Compression = None,
    fsync: bool = False,
    follow_symlinks: bool = True,
) -> None:
    """Write several arrays to one file (TSR4; v1 and TSR3 take exactly one), atomically
    (paths, links, modes and errors as for :func:`save`)."""
    gen = _formats.by_name(format)
    arrs = [_array(a) for a in arrays]
    _blocks.write_encoded(path, gen.encode(arrs, compression), fsync=fsync,
                          follow_symlinks=follow_symlinks)  # fmt: skip


def _finding(p: Any, strict: bool) -> Finding:
    return Finding(p.field, p.offset, p.found, p.expected, p.severity(strict), p.message,
                   p.error.__name__)  # fmt: skip


def validate(source: Source, *, strict: bool = True, format: str | None = None) -> Report:
    """Check a file of any generation against its format and say what that generation's
    C++ importer does with it (every path of it: ``report.cpp_paths``). Reads the header,
    the directory and, for TSR3/TSR4, every payload (its CRC; ZLIB streams are inflated
    in bounded memory). The generation comes from the magic; ``format`` judges the file
    as that one instead (for a file whose magic is damaged). A file without a known magic
    is judged as v1. Never raises for a bad file; operating-system errors pass."""
    forced = None if format is None else _formats.by_name(format)
    try:
        with _io._open_fd(source) as (fd, size):
            head = tsr_platform.pread(fd, _formats.HEAD_SIZE, 0)
            gen = forced or _formats.detect(head)
            if gen.name == "v1":
                return _validate.validate(_fd_source(fd, _name(source)), strict=strict)
            return _report(gen, _read_at(fd), size, head, name=_name(source), strict=strict)
    except BadArgumentError:  # not a regular file
        return _validate.validate(source, strict=strict)


def _report(gen: Any, read_at: ReadAt, size: int, head: bytes, *, name: str | None,
            strict: bool) -> Report:  # fmt: skip
    """The report on a TSR3/TSR4 file of ``size`` bytes, read through ``read_at``."""
    d = gen.parse(head[: gen.head_size], size, read_at, reserved_dtypes=True)
    found = list(d.problems)
    for info in d.tensors:
        found.extend(_blocks.check_block(read_at, info))
    padding = getattr(gen, "padding_problems", None)  # bytes outside every block (TSR4)
    if padding is not None:
        found.extend(padding(d, size, read_at))
    verdicts = gen.cpp_verdicts(head, size, read_at, name=name or "<bytes>")
    findings = tuple(_finding(p, strict) for p in found)
    decoded = d.header if d.tensors else None  # a header whose fields make sense
    return Report(name, size, strict, findings, verdicts[0], decoded, gen.name, d.tensors,
                  tuple(verdicts))  # fmt: skip


# ----------------------------------------------------------------------------- in memory

Buffer = bytes | bytearray | memoryview


def _buffer_read_at(view: memoryview) -> ReadAt:
    return lambda offset, n: bytes(view[offset : offset + n])


def _parse_buffer(view: memoryview, strict: bool, reserved_dtypes: bool) -> Directory | None:
    """The checked directory of a whole TSR3/TSR4 file in ``view``; None for v1 (or an
    unknown magic, which v1's reader reports)."""
    head = bytes(view[: _formats.HEAD_SIZE])
    gen = _formats.detect(head)
    if gen.name == "v1":
        return None
    d = gen.parse(head[: gen.head_size], len(view), _buffer_read_at(view),
                  reserved_dtypes=reserved_dtypes)  # fmt: skip
    return _checked(d, strict)


def from_bytes(
    buffer: Buffer,
    *,
    strict: bool = True,
    verify: bool = True,
    reserved_dtypes: bool = False,
) -> npt.NDArray[Any]:
    """Decode a whole single-tensor file of any generation held in memory (the generation
    from its magic, as :func:`load`).

    RAW data (v1, RAW TSR3/TSR4) is a view of ``buffer`` (no copy): read-only over
    ``bytes``, writable over a ``bytearray``. ZLIB data is inflated into an owned array.
    The CRC-32 (TSR3, TSR4) is checked; ``verify=False`` skips it for RAW data. A TSR4
    file with several tensors raises :class:`TSRError` naming :func:`from_bytes_all`.
    Other options and errors as for :func:`load`.
    """
    view = _io.byte_view(buffer)
    d = _parse_buffer(view, strict, reserved_dtypes)
    if d is None:
        return _io.from_bytes(view, strict=strict, reserved_dtypes=reserved_dtypes)
    info = _single(d, "the buffer", "from_bytes")
    return _blocks.block_from_buffer(view, info, verify=verify, strict=strict)


def from_bytes_all(
    buffer: Buffer,
    *,
    strict: bool = True,
    verify: bool = True,
    reserved_dtypes: bool = False,
) -> list[npt.NDArray[Any]]:
    """Every tensor of a whole file held in memory, in directory order (one element for
    v1 and TSR3); several ZLIB tensors are inflated in parallel, as by :func:`load_all`.
    Options as for :func:`from_bytes`."""
    view = _io.byte_view(buffer)
    d = _parse_buffer(view, strict, reserved_dtypes)
    if d is None:
        return [_io.from_bytes(view, strict=strict, reserved_dtypes=reserved_dtypes)]
    work = sum(t.nbytes for t in d.tensors if t.compression or verify)
    return _zlib.map_blocks(
        lambda t: _blocks.block_from_buffer(view, t, verify=verify, strict=strict),
        d.tensors, work,
    )  # fmt: skip


def to_bytes(
    array: npt.ArrayLike,
    *,
    format: str = "v1",
    compression: Compression = None,
    dtype: npt.DTypeLike | None = None,
    reserved_dtypes: bool = False,
) -> bytes:
    """The bytes of the whole file :func:`save` writes for ``array`` (same options)."""
    gen = _formats.by_name(format)
    if gen.name == "v1" and compression is None:
        return _io.to_bytes(array, dtype=dtype, reserved_dtypes=reserved_dtypes)
    return _blocks.to_bytes(gen.encode([_array(array, dtype)], compression))


encode = to_bytes
"""The name the harnesses and scripts use for :func:`to_bytes`."""


def to_bytes_all(
    arrays: Sequence[npt.ArrayLike], *, format: str = "v4", compression: Compression = None
) -> bytes:
    """The bytes of the whole file :func:`save_all` writes for ``arrays``."""
    gen = _formats.by_name(format)
    return _blocks.to_bytes(gen.encode([_array(a) for a in arrays], compression))


def validate_bytes(buffer: Buffer, *, strict: bool = True, format: str | None = None) -> Report:
    """:func:`validate` for a whole file held in memory (any generation, from its magic
    or ``format``); the report's ``path`` is None."""
    view = _io.byte_view(buffer)
    head = bytes(view[: _formats.HEAD_SIZE])
    gen = _formats.detect(head) if format is None else _formats.by_name(format)
    if gen.name == "v1":
        return _validate.validate_bytes(view, strict=strict)
    return _report(gen, _buffer_read_at(view), len(view), head, name=None, strict=strict)
