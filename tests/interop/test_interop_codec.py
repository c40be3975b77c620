"""tsr (Python) and the C++ kit exchange files both ways, bit for bit."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tsr

from .kitlib import CppKit, check_name

pytestmark = pytest.mark.interop

CPP_DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "INT8": np.dtype("i1"),
    "INT32": np.dtype("<i4"),
}
SHAPES = [(), (1,), (7,), (3, 4), (1, 1), (2, 3, 4), (1, 5, 1), (2, 3, 4, 5), (1, 1, 1, 1)]


def sample(dtype: np.dtype[Any], shape: tuple[int, ...], seed: int) -> npt.NDArray[Any]:
    """Values that exercise the whole range: extremes, signed zeros, NaN, infinities."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape, dtype=np.int64))
    if dtype.kind == "f":
        specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -3.4028235e38, 1.5],
                            dtype=np.float32)  # fmt: skip
        vals = rng.standard_normal(n).astype(np.float32) * np.float32(1000)
        vals[: min(n, specials.size)] = specials[: min(n, specials.size)]
        # a NaN with a payload: bit patterns must survive too
        if n > specials.size:
            vals.view(np.uint32)[specials.size] = 0x7FC0_1234
    else:
        info = np.iinfo(dtype)
        vals = rng.integers(info.min, info.max, size=n, endpoint=True, dtype=dtype)
        vals[:2] = [info.min, info.max][: min(n, 2)]
    return vals.astype(dtype).reshape(shape)


def shape_str(shape: tuple[int, ...]) -> str:
    return "(" + ",".join(map(str, shape)) + ")"


@pytest.mark.parametrize("dtype_name", list(CPP_DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=shape_str)
def test_tsr_save_is_read_by_cpp_with_identical_values(
    kit: CppKit, tmp_path: Path, dtype_name: str, shape: tuple[int, ...]
) -> None:
    arr = sample(CPP_DTYPES[dtype_name], shape, seed=len(shape) * 10 + len(dtype_name))
    path = tmp_path / "t.tsr"
    tsr.save(path, arr)
    got, lines = kit.values(path)
    assert got.accepted, got.line
    assert (got.dtype, got.shape, got.numel) == (dtype_name, shape, arr.size)
    assert got.sha256 == hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
    flat = arr.reshape(-1)
    if dtype_name == "FP32":
        assert [int(ln.split()[0], 16) for ln in lines] == flat.view(np.uint32).tolist()
    else:
        assert [int(ln) for ln in lines] == flat.tolist()


def test_many_random_tsr_files_read_by_cpp(kit: CppKit, tmp_path: Path) -> None:
    rng = random.Random(20251126)
    paths: list[Path] = []
    arrays = []
    for i in range(150):
        dtype_name = rng.choice(list(CPP_DTYPES))
        shape = tuple(rng.randint(1, 6) for _ in range(rng.randint(0, 4)))
        arr = sample(CPP_DTYPES[dtype_name], shape, seed=i)
        if rng.random() < 0.3 and arr.ndim >= 2:
            arr = arr.T  # a non-contiguous source: the file must still be C order
        p = tmp_path / f"r{i}.tsr"
        tsr.save(p, arr)
        paths.append(p)
        arrays.append((dtype_name, arr))
    for (dtype_name, arr), got in zip(arrays, kit.read(paths), strict=True):
        assert got.accepted, got.line
        assert (got.dtype, got.shape) == (dtype_name, arr.shape)
        assert got.sha256 == hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


ZERO_SHAPES = [(0,), (3, 0), (0, 4), (2, 0, 4), (2, 3, 4, 0), (0, 3, 4, 5), (0, 0)]


@pytest.mark.parametrize("dtype_name", list(CPP_DTYPES))
def test_zero_size_tensors_written_by_tsr_are_rejected_by_cpp(
    kit: CppKit, tmp_path: Path, dtype_name: str
) -> None:
    paths = []
    for i, shape in enumerate(ZERO_SHAPES):
        p = tmp_path / f"z{i}.tsr"
        tsr.save(p, np.zeros(shape, dtype=CPP_DTYPES[dtype_name]))
        paths.append(p)
    for shape, p, got in zip(ZERO_SHAPES, paths, kit.read(paths), strict=True):
        # The real C++ Shape cannot hold a zero dim: every such file fails to import.
        assert not got.accepted, (shape, got.line)
        assert check_name(got) == "allocation", (shape, got.line)
        verdict = tsr.validate(p).cpp
        assert (verdict.accepts, verdict.check) == (False, "allocation"), (shape, verdict)
        # ... while tsr itself round-trips the empty tensor.
        assert tsr.load(p).shape == shape


def test_64_mib_tensor_both_ways(kit: CppKit, tmp_path: Path) -> None:
    n = 64 * 1024 * 1024 // 4
    ramp = np.arange(n, dtype=np.float32) * np.float32(0.5) - np.float32(3.25)
    shape = (16, 64, 128, 128)
    assert int(np.prod(shape)) == n
    arr = ramp.reshape(shape)

    py_file = tmp_path / "py.tsr"
    tsr.save(py_file, arr)
    got = kit.read_one(py_file)
    assert got.accepted, got.line
    assert (got.dtype, got.shape, got.numel) == ("FP32", shape, n)
    assert got.sha256 == hashlib.sha256(arr.tobytes()).hexdigest()

    cpp_file = tmp_path / "cpp.tsr"
    status, line = kit.write("FP32", cpp_file, "ramp", shape)
    assert status == 0, line
    loaded = tsr.load(cpp_file)
    assert loaded.shape == shape and loaded.dtype == np.float32
    assert np.array_equal(loaded.view(np.uint32), arr.view(np.uint32))
    assert cpp_file.read_bytes() == py_file.read_bytes()


@pytest.mark.parametrize("dtype_name", list(CPP_DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=shape_str)
def test_cpp_writer_files_are_read_by_tsr_and_byte_equal_to_tsr_save(
    kit: CppKit, tmp_path: Path, dtype_name: str, shape: tuple[int, ...]
) -> None:
    arr = sample(CPP_DTYPES[dtype_name], shape, seed=100 + len(shape))
    cpp_file = tmp_path / "cpp.tsr"
    status, line = kit.write(dtype_name, cpp_file, "stdin", shape, stdin=arr.tobytes())
    assert status == 0, line
    loaded = tsr.load(cpp_file)
    assert loaded.dtype == arr.dtype and loaded.shape == arr.shape
    assert loaded.tobytes() == arr.tobytes()  # bit-exact, NaN payloads included
    py_file = tmp_path / "py.tsr"
    tsr.save(py_file, arr)
    assert cpp_file.read_bytes() == py_file.read_bytes() == tsr.to_bytes(arr)
    report = tsr.validate(cpp_file)
    assert report.ok and report.cpp.accepts and not report.cpp.different_tensor


def test_cpp_writer_ramp_matches_numpy_float32_arithmetic(kit: CppKit, tmp_path: Path) -> None:
    for dtype_name, shape in [("FP32", (5, 7)), ("INT8", (4, 6)), ("INT32", (3, 3, 3))]:
        out = tmp_path / f"{dtype_name}.tsr"
        status, line = kit.write(dtype_name, out, "ramp", shape)
        assert status == 0, line
        i = np.arange(int(np.prod(shape)), dtype=np.int64)
        if dtype_name == "FP32":
            expected = i.astype(np.float32) * np.float32(0.5) - np.float32(3.25)
        else:
            expected = ((i * 7) % 23 - 11).astype(CPP_DTYPES[dtype_name])
        assert np.array_equal(tsr.load(out), expected.reshape(shape))
