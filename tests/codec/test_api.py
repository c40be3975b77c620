"""Behaviour of the public API beyond the bytes: memory maps, copies, sources, atomic
writes, dtype handling, and the errors users see."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import tsr
import tsr_platform
from tsr import _io


def test_load_mmap_is_a_read_only_view_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "x.tsr"
    tsr.save(path, np.arange(1 << 16, dtype=np.float32))
    arr = tsr.load(path)
    assert not arr.flags.writeable
    assert not arr.flags.owndata
    with pytest.raises(ValueError, match="read-only"):
        arr[0] = 1
    # the base chain ends in the mmap of the file, not a heap copy
    base = arr
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    assert isinstance(base, memoryview)
    assert type(base.obj).__name__ == "mmap"


def test_load_copy_is_owned_and_writable(tmp_path: Path) -> None:
    path = tmp_path / "x.tsr"
    tsr.save(path, np.arange(10, dtype=np.int32))
    arr = tsr.load(path, mmap=False)
    assert arr.flags.writeable and arr.flags.owndata
    arr[0] = 99
    assert tsr.load(path)[0] == 0


def test_from_bytes_is_zero_copy(tmp_path: Path) -> None:
    buf = bytearray(tsr.to_bytes(np.arange(6, dtype=np.int8)))
    arr = tsr.from_bytes(buf)
    buf[64] = 42
    assert arr[0] == 42
    assert not tsr.from_bytes(bytes(buf)).flags.writeable
    assert tsr.from_bytes(memoryview(buf)).tolist() == [42, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("shape", [(), (0,), (3, 0), (0, 0, 0, 0), (2, 0, 5)])
def test_empty_and_scalar_round_trip(tmp_path: Path, shape: tuple[int, ...]) -> None:
    arr = np.zeros(shape, np.float32) if 0 in shape else np.array(1.5, np.float32)
    path = tmp_path / "e.tsr"
    tsr.save(path, arr)
    assert path.stat().st_size == 64 + arr.size * 4
    for mmap in (True, False):
        out = tsr.load(path, mmap=mmap)
        assert out.shape == arr.shape and out.dtype == np.float32
        np.testing.assert_array_equal(out, arr)
    report = tsr.validate(path)
    assert report.ok
    if 0 in shape:
        assert not report.cpp.accepts and report.cpp.check == "allocation"
        assert any("no C++ build" in w.message for w in report.warnings)
    else:
        assert report.cpp.accepts


def test_nan_bits_and_negative_zero_survive(tmp_path: Path) -> None:
    bits = np.array([0x7FC00001, 0xFFBFFFFF, 0x7F800001, 0x80000000], dtype="<u4")
    tsr.save(tmp_path / "n.tsr", bits.view("<f4"))
    assert tsr.load(tmp_path / "n.tsr").view("<u4").tolist() == bits.tolist()


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a[:, ::2],
        lambda a: a.T,
        np.asfortranarray,
        lambda a: a.astype(">f4"),
        lambda a: a[::-1, ::-3],
        lambda a: np.broadcast_to(a[:1], (5, 6)),
    ],
    ids=["strided", "transposed", "fortran", "big-endian", "negative-strides", "broadcast"],
)
def test_any_layout_is_written_in_logical_c_order(tmp_path: Path, make: object) -> None:
    base = np.arange(30, dtype=np.float32).reshape(5, 6)
    view = make(base)  # type: ignore[operator]
    tsr.save(tmp_path / "v.tsr", view)
    out = tsr.load(tmp_path / "v.tsr")
    assert out.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(out, view)
    assert tsr.to_bytes(view) == (tmp_path / "v.tsr").read_bytes()


def test_chunked_conversion_bounds_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-contiguous array is converted in chunks of at most _CHUNK_BYTES."""
    monkeypatch.setattr(_io, "_CHUNK_BYTES", 1024)
    arr = np.arange(100_000, dtype=np.int32).reshape(100, 1000)[:, ::3]
    chunks = list(_io._payload_chunks(arr))
    assert len(chunks) > 10
    assert max(len(c) for c in chunks) <= 1024
    assert b"".join(chunks) == np.ascontiguousarray(arr).tobytes()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (np.zeros(3, np.int64), ("int64", "float32, int8 and int32", "astype(numpy.int32)")),
        (np.zeros(3, bool), ("bool", "int32")),
        (np.zeros(3, np.complex64), ("complex64", "float32")),
        (np.array([object()]), ("object",)),
        ([1.0, 2.0], ("float64", "reserved_dtypes=True", "float32")),
        (np.zeros(3, np.float16), ("float16", "reserved", "C++")),
    ],
)
def test_unsupported_dtypes_are_refused_with_the_fix(
    tmp_path: Path, value: npt.ArrayLike, words: tuple[str, ...]
) -> None:
    with pytest.raises(tsr.UnsupportedDTypeError) as info:
        tsr.save(tmp_path / "x.tsr", value)
    for word in words:
        assert word in str(info.value)
    assert not (tmp_path / "x.tsr").exists()
    assert os.listdir(tmp_path) == []


def test_dtype_argument_converts(tmp_path: Path) -> None:
    tsr.save(tmp_path / "x.tsr", [1.0, 2.5], dtype=np.float32)
    assert tsr.load(tmp_path / "x.tsr").tolist() == [1.0, 2.5]


@pytest.mark.parametrize(
    ("dtype", "name"),
    [("<f2", "FP16"), ("<f8", "FP64"), ("<i2", "INT16"), ("u1", "UINT8"), (">f8", "FP64")],
)
def test_reserved_dtypes_round_trip_on_opt_in(tmp_path: Path, dtype: str, name: str) -> None:
    arr = np.arange(6).astype(dtype).reshape(2, 3)
    tsr.save(tmp_path / "r.tsr", arr, reserved_dtypes=True)
    assert tsr.read_header(tmp_path / "r.tsr").dtype.name == name
    with pytest.raises(tsr.UnsupportedDTypeError):
        tsr.load(tmp_path / "r.tsr")
    out = tsr.load(tmp_path / "r.tsr", reserved_dtypes=True)
    np.testing.assert_array_equal(out, arr)
    assert out.dtype.byteorder in "<|="


def test_rank_and_dim_limits(tmp_path: Path) -> None:
    with pytest.raises(tsr.BadArgumentError, match="rank 5") as info:
        tsr.save(tmp_path / "x.tsr", np.zeros((1, 1, 1, 1, 1), np.float32))
    assert info.value.field == "ndim"
    big = np.broadcast_to(np.float32(0), (2**31,))
    with pytest.raises(tsr.BadArgumentError, match="int32"):
        tsr.to_bytes(big)
    assert os.listdir(tmp_path) == []


def test_os_errors_are_not_wrapped(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        tsr.load(tmp_path / "missing.tsr")
    with pytest.raises(FileNotFoundError):
        tsr.validate(tmp_path / "missing.tsr")
    with pytest.raises(FileNotFoundError):
        tsr.save(tmp_path / "no" / "dir.tsr", np.zeros(1, np.float32))
    with pytest.raises(IsADirectoryError):
        tsr.save(tmp_path, np.zeros(1, np.float32))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs (Windows, stripped mode)")
def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.tsr"
    os.mkfifo(fifo)
    result: list[BaseException] = []

    def run() -> None:
        try:
            tsr.load(fifo)
        except BaseException as exc:  # recorded for the assertion
            result.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "load blocked on a FIFO"
    assert isinstance(result[0], tsr.BadArgumentError)
    assert "not a regular file" in str(result[0])
    for path in (fifo, tmp_path):  # validate reports instead of raising
        report = tsr.validate(path)
        assert not report.ok and not report.cpp.accepts
        assert report.errors[0].field == "file" and "not a regular file" in report.errors[0].message


def test_open_file_sources(tmp_path: Path) -> None:
    path = tmp_path / "x.tsr"
    tsr.save(path, np.arange(4, dtype=np.int8))
    with open(path, "rb") as f:
        f.read(3)  # the position does not matter and is not moved
        assert tsr.read_header(f).shape == (4,)
        assert tsr.load(f).tolist() == [0, 1, 2, 3]
        assert tsr.validate(f).ok
        assert f.tell() == 3
    with pytest.raises(tsr.BadArgumentError, match="path or an open file"):
        tsr.load(object())  # type: ignore[arg-type]


def test_read_header_reads_only_the_header(tmp_path: Path) -> None:
    path = tmp_path / "x.tsr"
    tsr.save(path, np.zeros((2, 3), np.float32))
    with open(path, "ab") as f:
        f.write(b"junk")  # read_header does not look at the size
    h = tsr.read_header(path)
    assert (h.shape, h.dims, h.ndim, h.numel) == ((2, 3), (1, 1, 2, 3), 2, 6)
    assert (h.payload_size, h.file_size, h.device) == (24, 88, "cpu")
    with pytest.raises(tsr.SizeMismatchError):
        tsr.load(path)


# --------------------------------------------------------------------------- atomic writes


def test_save_replaces_atomically_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "x.tsr"
    tsr.save(path, np.zeros(1000, np.float32))
    old_inode = path.stat().st_ino
    tsr.save(path, np.ones(10, np.int8), fsync=True)
    assert path.stat().st_ino != old_inode
    assert tsr.load(path).tolist() == [1] * 10
    assert sorted(os.listdir(tmp_path)) == ["x.tsr"]


def test_failed_write_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "x.tsr"
    tsr.save(path, np.arange(5, dtype=np.int32))
    original = path.read_bytes()

    def explode(fd: int) -> None:
        os.write(fd, b"TSR!partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        _io.atomic_write(path, explode)
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["x.tsr"]


_DEAD_TEMP = f".x.tsr{_io._TMP_MARK}0badf00d0badf00d"
"""A temp name of a writer that is gone (nobody holds its lock)."""


def test_directory_is_scanned_at_most_once_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saving into a big directory must not list it every time; a stale temp that
    appears meanwhile goes at the first save after the minute."""
    monkeypatch.setattr(_io, "_scanned", {})
    target = tmp_path / "x.tsr"
    tsr.save(target, np.zeros(1, np.float32))
    (scanned_at,) = _io._scanned.values()
    stale = tmp_path / _DEAD_TEMP
    stale.write_bytes(b"TSR!")
    tsr.save(target, np.ones(1, np.float32))
    tsr.save(tmp_path / "y.tsr", np.ones(1, np.float32))
    assert stale.exists() and list(_io._scanned.values()) == [scanned_at]
    for directory in _io._scanned:
        _io._scanned[directory] -= _io._RESCAN_SECONDS  # a minute later
    tsr.save(target, np.ones(1, np.float32))
    assert sorted(os.listdir(tmp_path)) == ["x.tsr", "y.tsr"]


def test_a_stale_temp_that_cannot_be_removed_does_not_fail_the_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / _DEAD_TEMP
    stale.write_bytes(b"TSR!")
    real_unlink = os.unlink

    def unlink(path: str) -> None:
        if os.path.basename(path) == stale.name:
            raise PermissionError(1, "Operation not permitted", path)  # another user's
        real_unlink(path)

    monkeypatch.setattr(_io, "_scanned", {})
    monkeypatch.setattr(os, "unlink", unlink)
    tsr.save(tmp_path / "x.tsr", np.zeros(2, np.float32))
    assert tsr.load(tmp_path / "x.tsr").tolist() == [0, 0]
    assert stale.exists()


def test_exchange_path_and_rename_path_give_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.tsr"
    tsr.save(path, np.zeros(3, np.float32))
    calls: list[bool] = []
    real = _io._exchange

    def spy(a: str, b: str) -> bool:
        calls.append(real(a, b))
        return calls[-1]

    monkeypatch.setattr(_io, "_exchange", spy)
    tsr.save(path, np.ones(3, np.float32))
    assert calls, "an existing target goes through the exchange path"
    assert tsr.load(path).tolist() == [1, 1, 1]
    monkeypatch.setattr(_io, "_exchange", lambda a, b: False)
    tsr.save(path, np.full(3, 2, np.float32))
    assert tsr.load(path).tolist() == [2, 2, 2]
    assert os.listdir(tmp_path) == ["x.tsr"]


def test_import_tsr_does_not_import_torch() -> None:
    code = "import sys, tsr; tsr.validate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_errors_are_value_errors_with_context() -> None:
    for cls in (
        tsr.BadMagicError,
        tsr.UnsupportedVersionError,
        tsr.BadFieldError,
        tsr.TruncatedError,
        tsr.SizeMismatchError,
        tsr.UnsupportedDTypeError,
        tsr.BadArgumentError,
    ):
        assert issubclass(cls, tsr.TSRError) and issubclass(cls, ValueError)
    e = tsr.BadFieldError("m", field="ndim", offset=20, found=9, expected="0 to 4")
    assert (e.field, e.offset, e.found, e.expected, str(e)) == ("ndim", 20, 9, "0 to 4", "m")


@pytest.mark.parametrize("limit", [1, 10, 64, 70])
def test_short_writes_still_write_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """A write call may take fewer bytes than offered (signals, pipes, quotas): the rest
    follows, wherever the cut falls (in the header, at its end, in the payload)."""
    real_writev, real_write = getattr(os, "writev", None), os.write

    def writev(fd: int, buffers: tuple[bytes | memoryview, ...]) -> int:
        data = b"".join(bytes(b) for b in buffers)[:limit]
        assert real_writev is not None
        return int(real_writev(fd, [data]))

    def write(fd: int, data: bytes | memoryview) -> int:
        return real_write(fd, bytes(data[:limit]))

    arr = np.arange(40, dtype=np.int32).reshape(4, 10)
    if real_writev is not None:  # no writev: Windows, stripped mode
        monkeypatch.setattr(os, "writev", writev)
    monkeypatch.setattr(os, "write", write)
    for source in (arr, arr.T, arr.astype(">i4")):
        tsr.save(tmp_path / "x.tsr", source)
        assert (tmp_path / "x.tsr").read_bytes() == tsr.to_bytes(source)


needs_preadv = pytest.mark.skipif(
    not tsr_platform.HAVE_PREADV, reason="parallel reads need preadv (tests/codec/test_platform.py)"
)


@needs_preadv
@pytest.mark.parametrize("count", [8192, 8193, 30_000, 65_536 * 3 + 7])
def test_big_copies_are_read_in_parallel_parts_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    monkeypatch.setattr(_io, "_PARALLEL_PART_BYTES", 4096)  # parts of small files
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    step = [0]
    real = _io._pread_exact

    def spy(fd: int, view: memoryview, offset: int, file_end: int) -> None:
        step[0] = max(step[0], len(view))
        real(fd, view, offset, file_end)

    monkeypatch.setattr(_io, "_pread_exact", spy)
    arr = np.random.default_rng(count).integers(-(2**31), 2**31, count, dtype=np.int32)
    tsr.save(tmp_path / "x.tsr", arr)
    assert np.array_equal(tsr.load(tmp_path / "x.tsr", mmap=False), arr)
    assert step[0] < arr.nbytes  # it was split
    assert _io._read_threads(arr.nbytes) == 4


@needs_preadv
def test_a_parallel_read_reports_the_first_short_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file cut short while being read (after its size was checked): the error names
    the first missing byte, and no reader thread is left running."""
    monkeypatch.setattr(_io, "_PARALLEL_PART_BYTES", 4096)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    arr = np.arange(1 << 20, dtype=np.float32)  # 4 MiB: four parts of 1 MiB
    tsr.save(tmp_path / "x.tsr", arr)
    cut = 64 + (3 << 20) // 2  # inside the second part; the third and fourth get nothing
    real = os.preadv

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        if offset >= cut:
            return 0
        return real(fd, [buffers[0][: cut - offset]], offset)

    monkeypatch.setattr(os, "preadv", preadv)
    with pytest.raises(tsr.TruncatedError) as info:
        tsr.load(tmp_path / "x.tsr", mmap=False)
    assert info.value.offset == cut
    assert not [t for t in threading.enumerate() if t.name == "tsr-read"]
