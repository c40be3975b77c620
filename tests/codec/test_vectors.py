"""Every file the C++ framework wrote reads to exactly its manifest's values, and saving
those values reproduces the file byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tsr

NUMPY: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "INT8": np.dtype("i1"),
    "INT32": np.dtype("<i4"),
}


def expected_array(entry: dict[str, Any]) -> npt.NDArray[Any]:
    """The manifest's values as an array (FP32 from its authoritative bit patterns)."""
    if entry["dtype"] == "FP32":
        bits = np.array([int(h, 16) for h in entry["bits_hex"]], dtype="<u4")
        flat = bits.view("<f4")
    else:
        flat = np.array(entry["values"], dtype=NUMPY[entry["dtype"]])
    return flat.reshape(entry["shape"])


def vector_ids(manifest: list[dict[str, Any]]) -> list[str]:
    return [e["file"] for e in manifest]


@pytest.fixture(params=range(9), ids=lambda i: f"vector{i}")
def entry(request: pytest.FixtureRequest, manifest: list[dict[str, Any]]) -> dict[str, Any]:
    index: int = request.param
    if index >= len(manifest):
        pytest.skip("fewer vectors in the manifest")
    return manifest[index]


def test_manifest_covers_every_vector_file(
    vectors_dir: Path, manifest: list[dict[str, Any]]
) -> None:
    on_disk = sorted(p.name for p in vectors_dir.glob("*.tsr"))
    assert on_disk == sorted(vector_ids(manifest))
    assert len(manifest) == 9


@pytest.mark.parametrize("mmap", [True, False])
def test_load_gives_manifest_values(entry: dict[str, Any], vectors_dir: Path, mmap: bool) -> None:
    path = vectors_dir / entry["file"]
    arr = tsr.load(path, mmap=mmap)
    want = expected_array(entry)
    assert arr.dtype == want.dtype
    assert arr.shape == tuple(entry["shape"])
    assert arr.tobytes() == want.tobytes()  # bit-exact, NaN and -0.0 included
    assert hashlib.sha256(arr.tobytes()).hexdigest() == entry["payload_sha256"]
    assert arr.flags.writeable is (not mmap)


def test_from_bytes_gives_manifest_values(entry: dict[str, Any], vectors_dir: Path) -> None:
    data = (vectors_dir / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["file_sha256"]
    arr = tsr.from_bytes(data)
    assert arr.tobytes() == expected_array(entry).tobytes()
    assert arr.shape == tuple(entry["shape"])


def test_header_matches_manifest(entry: dict[str, Any], vectors_dir: Path) -> None:
    h = tsr.read_header(vectors_dir / entry["file"])
    assert h.magic == b"TSR!"
    assert h.version == 1
    assert h.dtype.name == entry["dtype"]
    assert h.dtype_code == entry["dtype_code"]
    assert h.ndim == entry["header_ndim"] == entry["ndim"]
    assert list(h.dims) == entry["header_dims"]
    assert h.total_elements == entry["header_total_elements"] == entry["numel"]
    assert h.numel == entry["numel"]
    assert list(h.shape) == entry["shape"]
    assert h.file_size == entry["file_size"]
    assert h.payload_size == entry["file_size"] - 64
    assert h.device == "cpu"


def test_saving_manifest_values_reproduces_file(
    entry: dict[str, Any], vectors_dir: Path, tmp_path: Path
) -> None:
    original = (vectors_dir / entry["file"]).read_bytes()
    out = tmp_path / entry["file"]
    tsr.save(out, expected_array(entry))
    assert out.read_bytes() == original
    assert tsr.to_bytes(expected_array(entry)) == original


def test_validate_accepts_vectors_and_cpp_agrees(entry: dict[str, Any], vectors_dir: Path) -> None:
    report = tsr.validate(vectors_dir / entry["file"])
    assert report.ok, report.findings
    assert report.findings == ()
    assert report.cpp.accepts
    assert report.cpp.shape == tuple(entry["shape"])
    assert not report.cpp.different_tensor


def test_torch_load_gives_manifest_values(entry: dict[str, Any], vectors_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    import tsr.torch as tt

    t = tt.load(vectors_dir / entry["file"])
    assert t.device == torch.device("cpu")
    assert tuple(t.shape) == tuple(entry["shape"])
    assert t.numpy().tobytes() == expected_array(entry).tobytes()
