"""Every TSR4 file the C++ framework wrote reads to exactly its manifest's values, and saving
those arrays reproduces the file byte for byte (RAW and ZLIB)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tsr
from tsr import _v4cpp, v4
from tsr._model import Compression

from .conftest import VECTORS4, manifest4

NUMPY = {"FP32": "<f4", "FP16": "<f2", "INT8": "i1", "INT32": "<i4"}
BITS = {"FP32": "<u4", "FP16": "<u2"}
FILES = manifest4()


def expected(t: dict[str, Any]) -> npt.NDArray[Any] | None:
    """The manifest's values of one tensor (floats from their bit patterns)."""
    if "values" not in t:
        return None
    dt = t["dtype"]
    flat = np.array(t["values"], dtype=BITS.get(dt, NUMPY[dt])).view(NUMPY[dt])
    return flat.reshape(t["stored_shape"])


def test_the_copy_is_complete() -> None:
    assert len(FILES) == 52
    assert {e["file"] for e in FILES} | {"manifest.json", "malformed"} == {
        p.name for p in VECTORS4.iterdir()
    }
    for e in FILES:
        data = (VECTORS4 / e["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == e["sha256"]


@pytest.mark.parametrize("entry", FILES, ids=[e["file"] for e in FILES])
@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "copy"])
def test_reads_to_the_manifest(entry: dict[str, Any], mmap: bool) -> None:
    path = VECTORS4 / entry["file"]
    arrays = tsr.load_all(path, mmap=mmap)
    assert len(arrays) == entry["tensor_count"]
    for arr, t in zip(arrays, entry["tensors"], strict=True):
        assert arr.dtype == np.dtype(NUMPY[t["dtype"]])
        assert arr.shape == tuple(t["stored_shape"])
        assert hashlib.sha256(arr.tobytes()).hexdigest() == t["data_sha256"]
        want = expected(t)
        if want is not None:
            assert arr.tobytes() == want.tobytes()
        if entry["mode"] == "RAW" and mmap:
            assert not arr.flags.writeable and not arr.flags.owndata  # a view of the map
    with tsr.open(path) as f:
        assert f.format == "v4" and len(f) == entry["tensor_count"]
        assert f.header.compression == ("zlib" if entry["mode"] == "ZLIB" else None)
        assert f.header.data_offset == entry["header"]["data_offset"]
        assert f.warnings == ()
        for info, t in zip(f.tensors, entry["tensors"], strict=True):
            assert (info.offset, info.stored_size, info.crc32, info.dtype) == (
                t["data_offset"], t["payload_size"], t["data_crc32"], t["dtype"]
            )  # fmt: skip
    blob = path.read_bytes()
    _, entries, problems = v4.parse(blob[:128], len(blob), lambda o, n: blob[o : o + n])
    assert problems == []
    assert [e.row_stride for e in entries] == [t["row_stride"] for t in entry["tensors"]]


@pytest.mark.parametrize("entry", FILES, ids=[e["file"] for e in FILES])
def test_saving_reproduces_the_file(entry: dict[str, Any], tmp_path: Path) -> None:
    blob = (VECTORS4 / entry["file"]).read_bytes()
    arrays = tsr.load_all(VECTORS4 / entry["file"])
    passed = [
        a.reshape(t["passed_shape"]) if 0 not in t["passed_shape"] else a
        for a, t in zip(arrays, entry["tensors"], strict=True)
    ]
    compression: Compression = "zlib" if entry["mode"] == "ZLIB" else None
    for version in (arrays, passed):  # the stored 4-D shape and the rank the C++ code had
        assert v4.to_bytes(version, compression) == blob
        out = tmp_path / entry["file"]
        tsr.save_all(out, version, format="v4", compression=compression)
        assert out.read_bytes() == blob
        if len(version) == 1:
            tsr.save(out, version[0], format="v4", compression=compression)
            assert out.read_bytes() == blob
            assert tsr.load(out).tobytes() == version[0].tobytes()


@pytest.mark.parametrize("entry", FILES, ids=[e["file"] for e in FILES])
def test_validate_finds_nothing_and_cpp_accepts(entry: dict[str, Any]) -> None:
    path = VECTORS4 / entry["file"]
    report = tsr.validate(path)
    assert report.format == "v4" and report.ok and report.findings == ()
    assert report.cpp.accepts and report.cpp.hazard is None
    assert [t.shape for t in report.tensors] == [tuple(t["stored_shape"]) for t in entry["tensors"]]
    blob = path.read_bytes()
    cpp = _v4cpp.cpp_verdict(len(blob), lambda o, n: blob[o : o + n])
    assert [t.shape for t in cpp.tensors] == [tuple(t["stored_shape"]) for t in entry["tensors"]]


def test_schema_offsets_match_the_brief() -> None:
    h = {f.name: (f.offset, f.size) for f in v4.HEADER_LAYOUT.fields}
    assert h["tensor_count"] == (0x10, 4) and h["dir_offset"] == (0x18, 8)
    assert h["header_crc32"] == (0x28, 4) and h["reserved_1"] == (0x30, 80)
    e = {f.name: (f.offset, f.size) for f in v4.ENTRY_LAYOUT.fields}
    assert e["shape"] == (0x04, 16) and e["numel"] == (0x14, 8) and e["row_stride"] == (0x1C, 8)
    assert e["data_offset"] == (0x2C, 8) and e["data_crc32"] == (0x3C, 4)
    assert _v4cpp.DEFAULT_MEMORY_LIMIT == 1 << 30
