"""The in-memory API over every generation: ``from_bytes``/``from_bytes_all`` read exactly
what ``load``/``load_all`` read from the same bytes on disk (every C++-written vector,
valid and malformed, TSR3 and TSR4), ``validate_bytes`` reports what ``validate`` reports,
and ``to_bytes``/``to_bytes_all`` are the bytes ``save``/``save_all`` write."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tsr
from tsr._model import Compression

DATA = Path(__file__).resolve().parents[1] / "data"
FILES = sorted(
    [*DATA.glob("vectors3/*.tsr"), *DATA.glob("vectors3/malformed/*.tsr"),
     *DATA.glob("vectors4/*.tsr"), *DATA.glob("vectors4/malformed/*.tsr")]
)  # fmt: skip
MODES: list[Compression] = [None, "zlib"]


def _outcome(fn: Any, *args: Any, **kw: Any) -> tuple[str, Any]:
    """What a reader did: its arrays as (dtype, shape, bytes), or its error."""
    try:
        out = fn(*args, **kw)
    except tsr.TSRError as exc:
        return "error", (type(exc).__name__, exc.field, exc.offset, str(exc).split(": ", 1)[-1])
    except ImportError as exc:  # BF16 without ml_dtypes: the same gap on both paths
        return "import", str(exc)
    arrays = out if isinstance(out, list) else [out]
    return "ok", [(a.dtype.str, a.shape, a.tobytes()) for a in arrays]


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_from_bytes_reads_what_load_reads(path: Path) -> None:
    data = path.read_bytes()
    for strict in (True, False):
        for fn, mem in ((tsr.load, tsr.from_bytes), (tsr.load_all, tsr.from_bytes_all)):
            on_disk = _outcome(fn, path, strict=strict)
            in_memory = _outcome(mem, data, strict=strict)
            if on_disk[0] == "error":  # the same error; messages may name the path
                assert in_memory[0] == "error" and in_memory[1][:3] == on_disk[1][:3]
            else:
                assert in_memory == on_disk


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_validate_bytes_reports_what_validate_reports(path: Path) -> None:
    data = path.read_bytes()
    for strict in (True, False):
        on_disk = tsr.validate(path, strict=strict).to_dict()
        in_memory = tsr.validate_bytes(data, strict=strict).to_dict()
        assert in_memory.pop("path") is None
        on_disk.pop("path")
        assert _no_names(in_memory, path) == _no_names(on_disk, path)


def _no_names(value: Any, path: Path) -> Any:
    """A report's dict with the file's name taken out of the C++ messages (C++ names the
    file it read)."""
    if isinstance(value, dict):
        return {k: _no_names(v, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_names(v, path) for v in value]
    if isinstance(value, str):
        value = value.replace(str(path), "<file>").replace(path.name, "<file>")
        return value.replace("<bytes>", "<file>")
    return value


@pytest.mark.parametrize(
    ("fmt", "compression"),
    [("v1", None), ("v3", None), ("v3", "zlib"), ("v4", None), ("v4", "zlib")],
)
def test_round_trip_in_memory_is_zero_copy_for_raw(fmt: str, compression: Compression,
                                                   tmp_path: Path) -> None:  # fmt: skip
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    data = tsr.to_bytes(arr, format=fmt, compression=compression)
    tsr.save(tmp_path / "x.tsr", arr, format=fmt, compression=compression)
    assert data == (tmp_path / "x.tsr").read_bytes()
    buf = bytearray(data)
    out = tsr.from_bytes(buf)
    want = arr.reshape((1, 2, 3, 4)) if fmt == "v4" else arr
    assert out.tobytes() == want.tobytes() and out.shape == want.shape
    assert out.flags.writeable
    if compression is None:  # a view of the buffer
        out.reshape(-1)[0] = 42.0
        assert tsr.from_bytes(buf, verify=False).reshape(-1)[0] == 42.0
        assert not tsr.from_bytes(bytes(buf), verify=False).flags.writeable
    else:
        assert out.flags.owndata or out.base is not None


def test_several_tensors_in_memory() -> None:
    arrays: list[npt.NDArray[Any]] = [np.ones((2, 3), np.float32), np.arange(5, dtype=np.int8)]
    for compression in MODES:
        data = tsr.to_bytes_all(arrays, compression=compression)
        got = tsr.from_bytes_all(data)
        assert [a.tobytes() for a in got] == [a.tobytes() for a in arrays]
        assert [a.shape for a in got] == [(1, 1, 2, 3), (1, 1, 1, 5)]
        with pytest.raises(tsr.TSRError, match=r"2 tensors.*tsr\.from_bytes_all") as info:
            tsr.from_bytes(data)
        assert info.value.field == "tensor_count"
        assert tsr.validate_bytes(data).ok
    assert len(tsr.from_bytes_all(tsr.to_bytes(arrays[0]))) == 1  # v1: one element


def test_a_bad_crc_in_memory_is_found_unless_verify_is_off() -> None:
    data = bytearray(tsr.to_bytes(np.arange(8, dtype=np.int32), format="v4"))
    data[-1] ^= 1
    with pytest.raises(tsr.ChecksumError):
        tsr.from_bytes(data)
    assert tsr.from_bytes(data, verify=False)[0, 0, 0, -1] == 7 ^ (1 << 24)
    report = tsr.validate_bytes(data)
    assert not report.ok and report.findings[0].error == "ChecksumError"
    zdata = bytearray(tsr.to_bytes(np.arange(8, dtype=np.int32), format="v3", compression="zlib"))
    zdata[-1] ^= 1  # inside the stream's adler-32 or the data: an error either way
    with pytest.raises(tsr.TSRError):
        tsr.from_bytes(zdata, verify=False)  # ZLIB blocks are always checked


def test_validate_bytes_format_judges_a_damaged_magic() -> None:
    data = b"XSR4" + tsr.to_bytes(np.zeros(3, np.float32), format="v4")[4:]
    assert tsr.validate_bytes(data).format == "v1"
    forced = tsr.validate_bytes(data, format="v4")
    assert forced.format == "v4" and forced.findings[0].field == "magic"


@pytest.mark.parametrize(("fmt", "field"), [("v3", "dims"), ("v4", "shape")])
def test_the_shared_shape_check_refuses_what_a_4d_header_cannot_hold(fmt: str, field: str) -> None:
    huge = np.broadcast_to(np.float32(0), (2, 2**31))  # no memory behind it
    for shape, words in (((1, 2, 3, 4, 5), "rank 5"), ((3, 0), "zero-size dim 1"),
                         (huge.shape, "int32")):  # fmt: skip
        arr = huge if shape == huge.shape else np.zeros(shape, np.float32)
        with pytest.raises(tsr.BadArgumentError, match=words) as info:
            tsr.to_bytes(arr, format=fmt)
        assert info.value.field == (field if words != "rank 5" or fmt == "v4" else "ndim")
        assert f"TSR{fmt[1]}" in info.value.message
        assert ("empty" if words.startswith("zero") else "reshape") in info.value.message


@pytest.mark.parametrize("overlap_min", [0, None])
def test_raw_saves_whose_crcs_are_computed_while_writing_are_byte_identical(
    overlap_min: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tsr import _blocks, v3, v4

    if overlap_min is not None:
        monkeypatch.setattr(_blocks, "OVERLAP_MIN", overlap_min)
    big = np.arange(5 << 18, dtype=np.float32).reshape(-1, 1024)  # 5 MiB: overlapped
    arrays: list[npt.NDArray[Any]] = [big, np.arange(7, dtype=np.int8), big[::2, ::3]]
    tsr.save_all(tmp_path / "m.tsr", arrays)
    reference = v4.to_bytes(arrays)  # CRCs first, then the head, one buffer
    assert (tmp_path / "m.tsr").read_bytes() == reference
    assert tsr.validate(tmp_path / "m.tsr").ok
    tsr.save(tmp_path / "b.tsr", big[::-1], format="v3")
    data = (tmp_path / "b.tsr").read_bytes()
    flipped = np.ascontiguousarray(big[::-1])
    assert v3.decode(data).crc32 == zlib.crc32(flipped.tobytes())
    assert data[256:] == flipped.tobytes() and tsr.validate(tmp_path / "b.tsr").ok
