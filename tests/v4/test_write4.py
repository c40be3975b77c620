"""The TSR4 writer: what it refuses (with the fix), and round trips of every dtype, mode and
rank through the reader, the validator and the model of the C++ importer."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tsr
from tsr import _v4cpp, _zlib, v4
from tsr._model import Compression
from tsr.errors import BadArgumentError, UnsupportedDTypeError

DTYPES = ["<f4", "<f2", "i1", "<i4"]


@pytest.mark.parametrize(
    ("dtype", "hint"),
    [("float64", "float32"), ("int64", "int32"), ("uint8", "int8"), ("bool", "int8"),
     ("complex64", "float32")],
)  # fmt: skip
def test_other_dtypes_are_refused_with_the_fix(dtype: str, hint: str) -> None:
    with pytest.raises(UnsupportedDTypeError) as info:
        v4.to_bytes([np.zeros(3, dtype)])
    assert f"astype(numpy.{hint})" in info.value.message


@pytest.mark.parametrize(
    ("shape", "words"),
    [((1, 2, 3, 4, 5), "rank 5"), ((0, 3), "zero-size"), ((2, 0, 1), "zero-size")],
)
def test_shapes_tsr4_cannot_hold_are_refused(
    shape: tuple[int, ...], words: str, tmp_path: Path
) -> None:
    with pytest.raises(BadArgumentError) as info:
        tsr.save(tmp_path / "x.tsr", np.zeros(shape, "<f4"), format="v4")
    assert words in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_arguments_are_checked() -> None:
    with pytest.raises(BadArgumentError, match="at least one tensor"):
        v4.to_bytes([])
    with pytest.raises(BadArgumentError, match="'gzip'"):
        v4.to_bytes([np.zeros(1, "<f4")], "gzip")  # type: ignore[arg-type]


def test_lower_ranks_get_leading_ones_and_big_endian_is_converted() -> None:
    a = np.arange(12, dtype=">f4").reshape(3, 4)
    blob = v4.to_bytes([a, np.float32(7.5), np.arange(5, dtype="i1")])
    with_le = v4.to_bytes([a.astype("<f4"), np.array(7.5, "<f4"), np.arange(5, dtype="i1")])
    assert blob == with_le
    back = tsr.load_all(_bytes_file(blob))
    assert [b.shape for b in back] == [(1, 1, 3, 4), (1, 1, 1, 1), (1, 1, 1, 5)]
    assert np.array_equal(back[0].reshape(3, 4), a)


def test_non_contiguous_input_is_written_in_c_order() -> None:
    a = np.arange(60, dtype="<i4").reshape(3, 4, 5).transpose(2, 0, 1)[:, ::2]
    back = tsr.load_all(_bytes_file(v4.to_bytes([a], "zlib")))
    assert np.array_equal(back[0].reshape(a.shape), a)


_files: list[Path] = []


def _bytes_file(blob: bytes) -> Path:
    import tempfile

    fh = tempfile.NamedTemporaryFile(suffix=".tsr", delete=False)  # noqa: SIM115
    fh.write(blob)
    fh.close()
    _files.append(Path(fh.name))
    return Path(fh.name)


@pytest.fixture(autouse=True)
def _cleanup() -> Any:
    yield
    while _files:
        _files.pop().unlink(missing_ok=True)


arrays = st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(
        np.dtype(dt),
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=6),
        elements=hnp.from_dtype(np.dtype(dt), allow_nan=False) if dt[-2] == "f" else None,
    )
)


@settings(max_examples=60, deadline=None)
@given(tensors=st.lists(arrays, min_size=1, max_size=5), zlib_mode=st.booleans())
def test_round_trip_every_dtype_mode_and_rank(
    tensors: list[npt.NDArray[Any]], zlib_mode: bool
) -> None:
    compression: Compression = "zlib" if zlib_mode else None
    blob = v4.to_bytes(tensors, compression)
    path = _bytes_file(blob)
    back = tsr.load_all(path)
    assert len(back) == len(tensors)
    for a, b in zip(tensors, back, strict=True):
        assert b.dtype == a.dtype.newbyteorder("<") and b.ndim == 4
        assert b.shape == (1,) * (4 - a.ndim) + a.shape
        assert b.tobytes() == a.tobytes()
    # the layout is the C++ writer's
    h, entries, problems = v4.parse(blob[:128], len(blob), lambda o, n: blob[o : o + n])
    assert problems == [] and h is not None
    pos = v4.data_start(len(tensors), h.file_mode)
    for e, a in zip(entries, tensors, strict=True):
        assert e.data_offset == pos and e.data_crc32 == zlib.crc32(a.tobytes())
        assert e.row_stride == e.shape[2] * e.shape[3] * a.itemsize
        if zlib_mode:
            assert blob[e.data_offset : e.end] == zlib.compress(a.tobytes(), 6)
            pos = e.end
        else:
            assert e.payload_size == a.nbytes
            pos = v4.round_up(e.end, 256)
    assert entries[-1].end == len(blob)
    report = tsr.validate(path)
    assert report.findings == () and report.cpp.accepts
    cpp = _v4cpp.cpp_verdict(len(blob), lambda o, n: blob[o : o + n])
    assert [t.shape for t in cpp.tensors] == [b.shape for b in back]


def test_parallel_zlib_save_is_byte_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_zlib, "PARALLEL_MIN_BYTES", 0)
    rng = np.random.default_rng(7)
    tensors = [rng.integers(0, 4, size=(1, 8, 64, 64), dtype="i1") for _ in range(6)]
    one = v4.to_bytes(tensors, "zlib")
    blocks = [v4.prepare(t) for t in tensors]
    two = b"".join(v4.plan(blocks, "zlib", workers=2).parts())
    assert one == two
    monkeypatch.setattr(_zlib, "threads", lambda: 2)
    with tsr.open(_bytes_file(one)) as f:
        back = f.read_all()
    assert all(np.array_equal(a, b) for a, b in zip(tensors, back, strict=True))


def test_save_all_is_atomic_over_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "x.tsr"
    out.write_bytes(b"old")
    tsr.save_all(out, [np.ones((2, 2), "<f2")], compression="zlib")
    assert [a.shape for a in tsr.load_all(out)] == [(1, 1, 2, 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tsr"]
