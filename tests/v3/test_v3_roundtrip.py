"""TSR3 round trips: every dtype, both modes, every rank, through NumPy and torch; the
bytes are what the C++ writer lays out; what the format cannot hold is refused."""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tsr
from tsr import _api, v3

DTYPES = {"FP32": "<f4", "INT32": "<i4", "INT8": "i1", "BF16": ml_dtypes.bfloat16}
CODES = {"FP32": 1, "BF16": 2, "INT32": 3, "INT8": 4}

shapes = st.lists(st.integers(1, 5), min_size=0, max_size=4).map(tuple)


@st.composite
def arrays(draw: st.DrawFn) -> tuple[str, npt.NDArray[Any]]:
    name = draw(st.sampled_from(sorted(DTYPES)))
    shape = draw(shapes)
    itemsize = np.dtype(DTYPES[name]).itemsize
    raw = draw(st.binary(min_size=itemsize * int(np.prod(shape)),
                         max_size=itemsize * int(np.prod(shape))))  # fmt: skip
    return name, np.frombuffer(raw, DTYPES[name]).reshape(shape)


@settings(max_examples=150, deadline=None)
@given(arrays(), st.sampled_from([None, "zlib"]), st.booleans())
def test_round_trip_every_dtype_mode_and_rank(
    case: tuple[str, npt.NDArray[Any]], compression: str | None, mmap: bool
) -> None:
    name, arr = case
    data = _api.encode(arr, format="v3", compression=compression)  # type: ignore[arg-type]
    # the layout, field by field, as the C++ writer writes it
    h = v3.decode(data)
    raw = arr.tobytes()
    assert (h.magic, h.header_size, h.version) == (b"TSR3", 128, 3)
    assert h.file_mode == (0 if compression is None else 1)
    assert h.dtype_code == CODES[name] and h.ndim == arr.ndim
    assert h.dims == (0,) * (4 - arr.ndim) + arr.shape
    assert h.numel == arr.size and h.raw_data_size == len(raw) and h.crc32 == zlib.crc32(raw)
    assert h.reserved_1 == (0, 0) and h.reserved_2 == 0 and h.padding == bytes(52)
    if compression is None:
        assert h.data_offset == 256 and h.payload_size == len(raw)
        assert data[128:256] == bytes(128) and data[256:] == raw
    else:
        stream = zlib.compress(raw, 6)
        assert h.data_offset == 128 and h.payload_size == len(stream) and data[128:] == stream
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.tsr"
        path.write_bytes(data)
        back = tsr.load(path, mmap=mmap)
        assert back.dtype == arr.dtype and back.shape == arr.shape
        assert back.tobytes() == raw
        r = tsr.validate(path)
        assert r.ok and not r.findings and all(v.accepts and not v.hazard for v in r.cpp_paths)
        tsr.save(path, back, format="v3", compression=compression)  # type: ignore[arg-type]
        assert path.read_bytes() == data


def test_noncontiguous_and_big_endian_arrays_are_written_in_c_order(tmp_path: Path) -> None:
    base = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    for arr in (base, base.transpose(2, 0, 1), base[:, ::2], np.asfortranarray(base)):
        for compression in (None, "zlib"):
            tsr.save(tmp_path / "x.tsr", arr, format="v3", compression=compression)
            back = tsr.load(tmp_path / "x.tsr")
            assert back.dtype == np.dtype("<i4") and np.array_equal(back, arr)


def test_scalar_is_ndim0_dims0_numel1_and_rank1_of_1_is_distinct(tmp_path: Path) -> None:
    scalar = v3.decode(_api.encode(np.float32(2.5), format="v3"))
    one = v3.decode(_api.encode(np.array([2.5], np.float32), format="v3"))
    assert (scalar.ndim, scalar.dims, scalar.numel) == (0, (0, 0, 0, 0), 1)
    assert (one.ndim, one.dims, one.numel) == (1, (0, 0, 0, 1), 1)
    tsr.save(tmp_path / "s.tsr", np.float32(2.5), format="v3")
    assert tsr.load(tmp_path / "s.tsr").shape == ()


@pytest.mark.parametrize(
    ("array", "error", "words"),
    [
        (np.zeros((1, 1, 1, 1, 2), np.float32), tsr.BadArgumentError, "rank 5"),
        (np.zeros((0, 3), np.float32), tsr.BadArgumentError, "empty"),
        (np.zeros(3, np.float64), tsr.UnsupportedDTypeError, "astype(numpy.float32)"),
        (np.zeros(3, np.float16), tsr.UnsupportedDTypeError, "float16"),
        (np.zeros(3, np.int16), tsr.UnsupportedDTypeError, "astype(numpy.int32)"),
    ],
)
def test_what_tsr3_cannot_hold_is_refused_with_the_fix(
    array: npt.NDArray[Any], error: type[Exception], words: str, tmp_path: Path
) -> None:
    with pytest.raises(error, match=re.escape(words)):
        tsr.save(tmp_path / "x.tsr", array, format="v3")
    assert not list(tmp_path.iterdir())  # nothing written, no temp left


def test_bad_format_and_compression_arguments(tmp_path: Path) -> None:
    a = np.zeros(3, np.float32)
    with pytest.raises(tsr.BadArgumentError, match="'v2'"):
        tsr.save(tmp_path / "x.tsr", a, format="v2")
    with pytest.raises(tsr.BadArgumentError, match="no compression"):
        tsr.save(tmp_path / "x.tsr", a, compression="zlib")
    with pytest.raises(tsr.BadArgumentError, match=r"None \(RAW\) or 'zlib'"):
        tsr.save(tmp_path / "x.tsr", a, format="v3", compression="lz4")  # type: ignore[arg-type]


def test_bf16_without_ml_dtypes_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b.tsr"
    tsr.save(path, np.ones(3, ml_dtypes.bfloat16), format="v3")
    monkeypatch.setitem(__import__("sys").modules, "ml_dtypes", None)
    fix = r"install ml_dtypes, or load with tsr\.torch"
    with pytest.raises(tsr.UnsupportedDTypeError, match=fix):
        tsr.load(path)
    assert tsr.read_header(path).dtype.name == "BF16"  # the header alone needs nothing


def test_torch_round_trip_including_bf16(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import tsr.torch as tt

    for dtype in (torch.float32, torch.bfloat16, torch.int32, torch.int8):
        t = (torch.arange(24) - 7).to(dtype).reshape(2, 3, 4)[:, ::2]  # non-contiguous
        for compression in (None, "zlib"):
            path = tmp_path / f"{dtype}-{compression}.tsr"
            tt.save(path, t, format="v3", compression=compression)
            back = tt.load(path)
            assert back.dtype == dtype and torch.equal(back, t)
            assert tt.load_all(path)[0].dtype == dtype
            assert tsr.read_header(path).dtype.name == {
                torch.float32: "FP32", torch.bfloat16: "BF16", torch.int32: "INT32",
                torch.int8: "INT8"}[dtype]  # fmt: skip
    with pytest.raises(tsr.UnsupportedDTypeError):
        tt.save(tmp_path / "h.tsr", torch.zeros(2, dtype=torch.float16), format="v3")
