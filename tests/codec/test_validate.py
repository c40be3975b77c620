"""tsr.validate: findings and the C++ verdict, including the reader's int64 quirks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tsr
from tsr import _schema
from tsr.validate import cpp_verdict, validate_bytes

BASE = tsr.to_bytes(np.arange(12, dtype=np.float32).reshape(3, 4))


def header(**fields: Any) -> bytes:
    values = _schema.unpack(BASE)
    values.update(fields)
    return _schema.pack(values)


@pytest.mark.parametrize(
    ("fields", "size", "check", "words"),
    [
        ({}, 63, "file_too_small", "File too small"),
        ({"magic": b"TSR?"}, 112, "magic", "got: TSR?"),
        ({"version": 2}, 112, "version", "version: 2"),
        ({"dtype": 4}, 112, "dtype", "value: 4"),
        ({"ndim": -1}, 112, "ndim", "value: -1"),
        # count before sign: 1*1*-3*4 = -12 matches, then the dim check fails
        ({"dims": (1, 1, -3, 4), "total_elements": -12}, 112, "dimension", "Invalid dimension"),
        ({"dims": (1, 1, -3, 4), "total_elements": 12}, 112, "element_count", "suggest -12"),
        ({}, 113, "file_size", "Expected 112 bytes, got 113"),
        # 65536^4 wraps to 0 in int64: the count check passes, then nothing to allocate
        ({"ndim": 4, "dims": (65536,) * 4, "total_elements": 0}, 64, "allocation", "zero"),
        # 2^63 wraps to -2^63; times 4 wraps to 0, so a 64-byte file passes the size check
        ({"ndim": 4, "dims": (65536, 65536, 65536, 32768), "total_elements": -(2**63)}, 64,
         "allocation", "zero"),
        # 2^62 elements x 4 bytes = 2^64 wraps to 0: the size check passes, then Shape
        # refuses dims whose running product (2^62) passes INT64_MAX / 1000
        ({"ndim": 4, "dims": (65536, 65536, 65536, 16384), "total_elements": 2**62}, 64,
         "allocation", "Shape dimensions are too large"),
        # the shape needs 12 elements, the file holds 0 (total wraps to 0 via a leading dim)
        ({"ndim": 2, "dims": (2**16, 2**16, 3, 4), "total_elements": 12 * 2**32 % 2**64}, 64,
         "file_size", "Expected"),
        ({"dims": (1, 1, 0, 4), "total_elements": 0}, 64, "allocation", "zero"),
    ],
)  # fmt: skip
def test_cpp_rejections(fields: dict[str, Any], size: int, check: str, words: str) -> None:
    verdict = cpp_verdict(header(**fields), size)
    assert not verdict.accepts
    assert verdict.check == check
    assert words in verdict.message


@pytest.mark.parametrize(
    ("fields", "shape", "different"),
    [
        ({}, (3, 4), False),
        ({"header_size": 0}, (3, 4), False),
        ({"reserved_1": -5, "reserved_3": 9}, (3, 4), False),
        ({"ndim": 1}, (4,), True),
        ({"ndim": 0}, (), True),
        ({"ndim": 3}, (1, 3, 4), False),  # leading 1 is part of the shape: same data
    ],
)
def test_cpp_acceptances(fields: dict[str, Any], shape: tuple[int, ...], different: bool) -> None:
    verdict = cpp_verdict(header(**fields), 112)
    assert verdict.accepts and verdict.check is None
    assert verdict.shape == shape
    assert verdict.different_tensor is different


@pytest.mark.parametrize(
    ("fields", "size", "shape"),
    [
        # dims multiply to 3*2^62+1, -(2^62)+1 in int64; x4 bytes wraps to 4: 68 bytes pass
        ({"ndim": 1, "dims": (2743, 5295463, 952469857, 1)}, 68, (1,)),
        # dims multiply to 2^64+4, 4 in int64: an 80-byte file holds "the" huge shape
        ({"ndim": 4, "dims": (27905, 34724, 49477, 384773)}, 80, (27905, 34724, 49477, 384773)),
    ],
)
def test_cpp_accepts_through_wraparound(
    fields: dict[str, Any], size: int, shape: tuple[int, ...]
) -> None:
    product = 1
    for d in fields["dims"]:
        product = (product * d + 2**63) % 2**64 - 2**63
    fields = {**fields, "total_elements": product}
    assert (64 + product * 4) % 2**64 == size
    verdict = cpp_verdict(header(**fields), size)
    assert verdict.accepts and verdict.shape == shape and verdict.different_tensor
    with pytest.raises(tsr.BadFieldError):  # tsr itself never accepts such a file
        tsr.from_bytes(header(**fields) + bytes(size - 64))


def test_all_findings_are_reported_with_offsets() -> None:
    data = header(header_size=32, reserved_1=1, reserved_2=2, dims=(2, 1, 3, 4)) + BASE[64:]
    report = validate_bytes(data)
    fields = [(f.field, f.offset, f.severity) for f in report.findings]
    assert fields == [
        ("total_elements", 40, "error"),
        ("dims[0]", 24, "error"),
        ("header_size", 8, "error"),
        ("reserved_1", 12, "error"),
        ("reserved_2", 48, "error"),
    ]
    lenient = validate_bytes(data, strict=False)
    assert [f.severity for f in lenient.findings] == ["error", "error"] + ["warning"] * 3
    assert not lenient.ok


def test_report_header_present_when_decodable() -> None:
    assert validate_bytes(header(header_size=7) + BASE[64:]).header is not None
    assert validate_bytes(header(ndim=9) + BASE[64:]).header is None
    assert validate_bytes(b"TSR!").header is None


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 111, 112, 113, 200])
def test_validate_never_raises_on_truncations(tmp_path: Path, size: int) -> None:
    data = (BASE + bytes(100))[:size]
    path = tmp_path / "t.tsr"
    path.write_bytes(data)
    report = tsr.validate(path)
    assert report.ok is (size == 112)
    assert report.cpp.accepts is (size == 112)
    assert report.to_dict()["file_size"] == size


def test_ok_means_load_succeeds(tmp_path: Path) -> None:
    cases = [BASE, header(header_size=1) + BASE[64:], header(ndim=1) + BASE[64:], BASE[:-1]]
    for strict in (True, False):
        for data in cases:
            path = tmp_path / "c.tsr"
            path.write_bytes(data)
            ok = tsr.validate(path, strict=strict).ok
            try:
                tsr.load(path, strict=strict)
                loaded = True
            except tsr.TSRError:
                loaded = False
            assert ok is loaded
