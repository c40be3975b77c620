"""Every malformed TSR4 vector: the error class a strict reader raises (fast, in bounded
memory), what ``strict=False`` and ``validate`` say, and the C++ verdict of its index.json
(under both address-space limits the real importer ran with)."""

from __future__ import annotations

import hashlib
import json
import time
import tracemalloc
from typing import Any

import pytest

import tsr
from tsr import _v4cpp, errors

from .conftest import VECTORS4, malformed4

INDEX = json.loads((VECTORS4 / "malformed" / "index.json").read_text())
FILES = malformed4()

# file prefix -> the error class of a strict load (None: it loads, with warnings)
STRICT = {
    "m002": "TruncatedError", "m004": "BadMagicError", "m006": "UnsupportedVersionError",
    "m008": "UnsupportedVersionError", "m010": "BadFieldError", "m012": "BadFieldError",
    "m014": "BadFieldError", "m016": "BadFieldError", "m018": "BadFieldError",
    "m020": "BadFieldError", "m022": "BadFieldError", "m024": "ChecksumError",
    "m026": "ChecksumError", "m028": "TruncatedError", "m030": "BadFieldError",
    "m032": "TruncatedError", "m034": "BadFieldError", "m036": "BadFieldError",
    "m038": "BadFieldError", "m040": "BadFieldError", "m042": "BadFieldError",
    "m044": "BadFieldError", "m046": "UnsupportedDTypeError", "m048": "UnsupportedDTypeError",
    "m050": "BadFieldError", "m052": "BadFieldError", "m054": "TruncatedError",
    "m056": "TruncatedError", "m058": "TruncatedError", "m060": "CompressionError",
    "m062": "CompressionError", "m064": "CompressionError", "m066": "CompressionError",
    "m068": "TruncatedError", "m070": "ChecksumError", "m072": "ChecksumError",
    "m074": "SizeMismatchError", "m076": "LayoutError", "m078": "LayoutError",
    "m080": "LayoutError", "m082": "LayoutError", "m084": None, "m086": None,
    "m088": "SizeMismatchError", "m090": None, "m092": "TruncatedError",
    "m094": "CompressionError",
}  # fmt: skip
LENIENT = {"m078", "m080", "m084", "m086", "m088", "m090"}
"""Read by ``strict=False``: what C++ accepts, less m042 (a shape its buffer cannot back)."""


def test_the_index_is_covered() -> None:
    assert len(FILES) == INDEX["count"] == len(STRICT) == 47
    assert {f["file"][:4] for f in FILES} == set(STRICT)


@pytest.mark.parametrize("case", FILES, ids=[f["file"] for f in FILES])
def test_cpp_verdict_matches_the_real_importer(case: dict[str, Any]) -> None:
    data = (VECTORS4 / "malformed" / case["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == case["sha256"]
    runs = [("cpp", INDEX["address_space_limit_bytes"])]
    if "cpp_rerun_8GiB" in case:
        runs.append(("cpp_rerun_8GiB", INDEX["rerun_limit_bytes"]))
    for key, limit in runs:
        want = case[key]
        got = _v4cpp.cpp_verdict(
            len(data), lambda o, n: data[o : o + n], name=case["file"], memory_limit=limit
        )
        assert (got.verdict, got.check) == (want["verdict"], want["check"]), key
        if "message" in want:
            assert got.message == want["message"]
            assert got.error == want["type"]
        if want["verdict"] == "accepted":
            assert [list(t.shape) for t in got.tensors] == [t["shape"] for t in want["tensors"]]
    assert got.beyond_buffer == case["file"].startswith("m042")


@pytest.mark.parametrize("case", FILES, ids=[f["file"] for f in FILES])
def test_strict_load_error_class_fast_and_bounded(case: dict[str, Any]) -> None:
    path = VECTORS4 / "malformed" / case["file"]
    want = STRICT[case["file"][:4]]
    tracemalloc.start()
    start = time.perf_counter()
    try:
        if want is None:
            tsr.load_all(path)
        else:
            with pytest.raises(errors.TSRError) as info:
                tsr.load_all(path)
            assert type(info.value).__name__ == want
            assert info.value.field  # names what is wrong
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 1 << 20  # the files ask for up to 4 EiB; a tiny one costs a tiny read
    assert elapsed < 5.0  # generous for a loaded machine; it takes well under 1 ms
    cpp = case["cpp"]
    if cpp["verdict"] != "accepted" or case["file"].startswith("m042"):
        assert want is not None  # what C++ refuses, or reads wrongly, is a TSRError


@pytest.mark.parametrize("case", FILES, ids=[f["file"] for f in FILES])
def test_lenient_reads_what_cpp_reads(case: dict[str, Any]) -> None:
    path = VECTORS4 / "malformed" / case["file"]
    prefix = case["file"][:4]
    if prefix not in LENIENT:
        with pytest.raises(errors.TSRError):
            tsr.load_all(path, strict=False)
        return
    arrays = tsr.load_all(path, strict=False)
    tensors = case["cpp"]["tensors"]
    assert [list(a.shape) for a in arrays] == [t["shape"] for t in tensors]
    assert [hashlib.sha256(a.tobytes()).hexdigest() for a in arrays] == [
        t["sha256"] for t in tensors
    ]


@pytest.mark.parametrize("case", FILES, ids=[f["file"] for f in FILES])
def test_validate_agrees_with_the_reader(case: dict[str, Any]) -> None:
    path = VECTORS4 / "malformed" / case["file"]
    report = tsr.validate(path, format="v4")  # judged as TSR4 even with a damaged magic
    want = STRICT[case["file"][:4]]
    assert report.format == "v4" and report.ok == (want is None)
    assert tsr.validate(path, strict=False, format="v4").ok == (case["file"][:4] in LENIENT)
    if want is not None:
        assert report.errors[0].error == want  # the reader's error comes first
    else:
        assert report.findings and not report.errors
    cpp = case["cpp"]
    assert report.cpp.accepts == (cpp["verdict"] == "accepted")
    assert report.cpp.check == (None if cpp["verdict"] == "accepted" else cpp["check"])
    assert (report.cpp.error_type == "SIGABRT") == (cpp["verdict"] == "crashed")
    assert (report.cpp.hazard is not None) == case["file"].startswith("m042")
