"""TSR3 files written by the real C++ framework (tests/data/vectors3, a copy of
../shared/vectors3): each reads to exactly its manifest's values and shape, on every read
path and front end, and saving those values reproduces the file byte for byte."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tsr
from tsr import v3
from tsr._model import Compression

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "tests" / "data" / "vectors3"
ENTRIES: list[dict[str, Any]] = json.loads((VECTORS / "manifest.json").read_text())["files"]
IDS = [e["file"] for e in ENTRIES]
BITS = {"FP32": "<u4", "BF16": "<u2", "INT32": "<i4", "INT8": "i1"}
NUMPY = {"FP32": "<f4", "INT32": "<i4", "INT8": "i1"}


def bits_of(entry: dict[str, Any], arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The array's elements as the manifest's integer encoding, C order."""
    return np.ascontiguousarray(arr).reshape(-1).view(BITS[entry["dtype"]])


def check_values(entry: dict[str, Any], arr: npt.NDArray[Any]) -> None:
    assert arr.shape == tuple(entry["framework_shape"])
    data = np.ascontiguousarray(arr).tobytes()
    assert len(data) == entry["raw_data_size"]
    assert hashlib.sha256(data).hexdigest() == entry["data_sha256"]
    if "values" in entry:
        assert bits_of(entry, arr).tolist() == entry["values"]


def test_every_file_is_in_the_manifest() -> None:
    assert sorted(p.name for p in VECTORS.glob("*.tsr")) == sorted(IDS)
    assert len(IDS) == 60
    for e in ENTRIES:
        assert hashlib.sha256((VECTORS / e["file"]).read_bytes()).hexdigest() == e["sha256"]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
@pytest.mark.parametrize("mmap", [True, False])
def test_load_gives_manifest_values(entry: dict[str, Any], mmap: bool) -> None:
    arr = tsr.load(VECTORS / entry["file"], mmap=mmap)
    check_values(entry, arr)
    expected = "bfloat16" if entry["dtype"] == "BF16" else np.dtype(NUMPY[entry["dtype"]]).name
    assert arr.dtype.name == expected
    assert arr.flags.writeable == (not mmap or entry["mode"] == "ZLIB")
    assert tsr.load_all(VECTORS / entry["file"], mmap=mmap)[0].tobytes() == arr.tobytes()


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_header_and_info_match_manifest(entry: dict[str, Any]) -> None:
    path = VECTORS / entry["file"]
    h = tsr.read_header(path)
    assert isinstance(h, v3.Header) and h.format == "v3"
    assert h.dtype.name == entry["dtype"] and h.dtype_code == entry["dtype_code"]
    assert h.ndim == entry["ndim"] and list(h.dims) == entry["dims_stored"]
    assert h.numel == entry["numel"] and h.raw_data_size == entry["raw_data_size"]
    assert h.data_offset == entry["data_offset"] and h.payload_size == entry["payload_size"]
    assert h.crc32 == entry["crc32"] and h.file_mode == entry["file_mode"]
    with tsr.open(path) as f:
        assert f.format == "v3" and len(f) == 1 and f.header == h
        (info,) = f.tensors
        assert info.dtype == entry["dtype"] and list(info.shape) == entry["framework_shape"]
        assert info.offset == entry["data_offset"] and info.nbytes == entry["raw_data_size"]
        assert info.stored_size == entry["payload_size"] and info.crc32 == entry["crc32"]
        assert info.compression == (None if entry["mode"] == "RAW" else "zlib")
        check_values(entry, f[0])


def manifest_array(entry: dict[str, Any]) -> npt.NDArray[Any]:
    """The tensor, rebuilt from the manifest's values alone (not from the file)."""
    bits = np.array(entry["values"], dtype=BITS[entry["dtype"]])
    if entry["dtype"] == "BF16":
        import ml_dtypes

        out: npt.NDArray[Any] = bits.view(ml_dtypes.bfloat16)
        return out.reshape(entry["framework_shape"])
    return bits.view(NUMPY[entry["dtype"]]).reshape(entry["framework_shape"])


@pytest.mark.parametrize("entry", [e for e in ENTRIES if "values" in e],
                         ids=[e["file"] for e in ENTRIES if "values" in e])  # fmt: skip
def test_save_reproduces_the_file(entry: dict[str, Any], tmp_path: Path) -> None:
    arr = manifest_array(entry)
    compression: Compression = None if entry["mode"] == "RAW" else "zlib"
    out = tmp_path / "out.tsr"
    tsr.save(out, arr, format="v3", compression=compression)
    assert out.read_bytes() == (VECTORS / entry["file"]).read_bytes()


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_save_of_loaded_reproduces_the_file(entry: dict[str, Any], tmp_path: Path) -> None:
    """Also the big ones without values: what load returns saves back identically."""
    out = tmp_path / "out.tsr"
    compression: Compression = None if entry["mode"] == "RAW" else "zlib"
    tsr.save(out, tsr.load(VECTORS / entry["file"]), format="v3", compression=compression)
    assert out.read_bytes() == (VECTORS / entry["file"]).read_bytes()


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_validate_accepts_and_both_cpp_paths_accept(entry: dict[str, Any]) -> None:
    r = tsr.validate(VECTORS / entry["file"])
    assert r.ok and not r.findings and r.format == "v3"
    assert [v.path for v in r.cpp_paths] == ["mmap", "read"] and r.cpp is r.cpp_paths[0]
    for v in r.cpp_paths:
        assert v.accepts and v.hazard is None and not v.different_tensor
        assert list(v.shape or ()) == entry["cpp_reimport_mmap"]["shape"]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_torch_load_gives_manifest_values(entry: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    import tsr.torch as tt

    t = tt.load(VECTORS / entry["file"])
    want = {"FP32": torch.float32, "BF16": torch.bfloat16, "INT32": torch.int32,
            "INT8": torch.int8}[entry["dtype"]]  # fmt: skip
    assert t.dtype == want
    bits = t.view(torch.int16) if entry["dtype"] == "BF16" else t
    check_values(entry, bits.numpy().view(BITS[entry["dtype"]]) if entry["dtype"] == "BF16"
                 else bits.numpy())  # fmt: skip
