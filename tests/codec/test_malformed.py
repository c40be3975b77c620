"""Each way a file can be wrong gets its own error class and a message that names the
field, what was found and what was expected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

import tsr
from tsr import _schema
from tsr.validate import validate_bytes

GOOD = tsr.to_bytes(np.arange(12, dtype=np.float32).reshape(3, 4))
GOOD_FIELDS = _schema.unpack(GOOD)


def mutate(payload_delta: int = 0, **fields: Any) -> bytes:
    values = dict(GOOD_FIELDS)
    values.update(fields)
    body = GOOD[64:]
    body = body[:payload_delta] if payload_delta < 0 else body + b"\0" * payload_delta
    return _schema.pack(values) + body


# (id, bytes, error class, field, offset, found, expected, words in the message)
CASES: list[tuple[str, bytes, type[tsr.TSRError], str, int, Any, Any, tuple[str, ...]]] = [
    ("empty", b"", tsr.TruncatedError, "header", 0, 0, 64, ("truncated header", "64")),
    ("short-header", GOOD[:40], tsr.TruncatedError, "header", 0, 40, 64, ("got 40",)),
    ("bad-magic", b"NPY!" + GOOD[4:], tsr.BadMagicError, "magic", 0, b"NPY!", b"TSR!",
     ("bad magic", "not a TSR file")),
    ("version-2", mutate(version=2), tsr.UnsupportedVersionError, "version", 4, 2, 1,
     ("version 2",)),
    ("version-0", mutate(version=0), tsr.UnsupportedVersionError, "version", 4, 0, 1, ("0",)),
    ("dtype-0", mutate(dtype=0), tsr.UnsupportedDTypeError, "dtype", 16, 0, None,
     ("unknown dtype code 0", "FP32")),
    ("dtype-9", mutate(dtype=9), tsr.UnsupportedDTypeError, "dtype", 16, 9, None, ("9",)),
    ("dtype-neg", mutate(dtype=-3), tsr.UnsupportedDTypeError, "dtype", 16, -3, None, ("-3",)),
    ("dtype-reserved", mutate(dtype=6), tsr.UnsupportedDTypeError, "dtype", 16, 6, None,
     ("FP64", "reserved_dtypes=True")),
    ("ndim-5", mutate(ndim=5), tsr.BadFieldError, "ndim", 20, 5, "0 to 4", ("ndim 5",)),
    ("ndim-neg", mutate(ndim=-1), tsr.BadFieldError, "ndim", 20, -1, "0 to 4", ("ndim -1",)),
    ("dim-negative", mutate(dims=(1, 1, -3, 4), total_elements=-12), tsr.BadFieldError,
     "dims[2]", 32, -3, ">= 0", ("negative", "H")),
    ("count-mismatch", mutate(total_elements=13), tsr.BadFieldError, "total_elements", 40,
     13, 12, ("13", "1x1x3x4 = 12")),
    ("count-overflow", mutate(dims=(65536, 65536, 65536, 65536), total_elements=0),
     tsr.BadFieldError, "total_elements", 40, 0, 2**64, ("18446744073709551616",)),
    ("leading-dim", mutate(16 * 4, dims=(2, 1, 3, 4), total_elements=24), tsr.BadFieldError,
     "dims[0]", 24, 2, 1, ("must be 1", "N")),
    ("ndim0-with-dims", mutate(ndim=0), tsr.BadFieldError, "dims[2]", 32, 3, 1,
     ("ndim 0",)),
    ("header-size-128", mutate(header_size=128), tsr.BadFieldError, "header_size", 8, 128,
     64, ("header_size 128",)),
    ("header-size-0", mutate(header_size=0), tsr.BadFieldError, "header_size", 8, 0, 64, ()),
    ("reserved-1", mutate(reserved_1=7), tsr.BadFieldError, "reserved_1", 12, 7, 0, ()),
    ("reserved-2", mutate(reserved_2=-1), tsr.BadFieldError, "reserved_2", 48, -1, 0, ()),
    ("reserved-3", mutate(reserved_3=1), tsr.BadFieldError, "reserved_3", 56, 1, 0, ()),
    ("truncated-payload", mutate(-4), tsr.TruncatedError, "payload", 64, 108, 112,
     ("truncated payload", "fully written")),
    ("no-payload", GOOD[:64], tsr.TruncatedError, "payload", 64, 64, 112, ()),
    ("trailing-byte", mutate(1), tsr.SizeMismatchError, "payload", 64, 113, 112,
     ("1 trailing byte",)),
    ("huge-declared", mutate(dims=(1, 1, 2**31 - 1, 2**31 - 1), total_elements=(2**31 - 1) ** 2),
     tsr.TruncatedError, "payload", 64, 112, 64 + 4 * (2**31 - 1) ** 2, ("truncated",)),
]  # fmt: skip

IDS = [c[0] for c in CASES]


class Case(NamedTuple):
    name: str
    data: bytes
    error: type[tsr.TSRError]
    field: str
    offset: int
    found: Any
    expected: Any
    words: tuple[str, ...]


MATRIX = [Case(*c) for c in CASES]


@pytest.mark.parametrize("case", MATRIX, ids=IDS)
def test_from_bytes_error(case: Case) -> None:
    with pytest.raises(case.error) as info:
        tsr.from_bytes(case.data)
    exc = info.value
    assert type(exc) is case.error
    assert isinstance(exc, ValueError)
    assert exc.field == case.field
    assert exc.offset == case.offset
    assert exc.found == case.found
    if case.expected is not None:
        assert exc.expected == case.expected
    for word in case.words:
        assert word in str(exc)


@pytest.mark.parametrize("case", MATRIX, ids=IDS)
def test_load_and_validate_agree_with_from_bytes(tmp_path: Path, case: Case) -> None:
    path = tmp_path / "bad.tsr"
    path.write_bytes(case.data)
    for mmap in (True, False):
        with pytest.raises(case.error) as info:
            tsr.load(path, mmap=mmap)
        assert info.value.field == case.field
    report = tsr.validate(path)
    if case.name == "dtype-reserved":
        # valid TSR (reserved codes are part of the format) but no C++ build reads it
        assert any(f.field == "dtype" for f in report.warnings)
        assert report.cpp.check == "dtype"
        return
    assert not report.ok
    assert any(f.field == case.field and f.offset == case.offset for f in report.errors)
    assert report.errors[0].error == case.error.__name__


@pytest.mark.parametrize(
    "fields",
    [{"header_size": 128}, {"header_size": 0}, {"reserved_1": 1}, {"reserved_3": 2**40}],
)
def test_lenient_reading_accepts_what_cpp_ignores(fields: dict[str, Any]) -> None:
    data = mutate(**fields)
    with pytest.raises(tsr.BadFieldError):
        tsr.from_bytes(data)
    arr = tsr.from_bytes(data, strict=False)
    assert arr.tobytes() == GOOD[64:]
    strict, lenient = validate_bytes(data), validate_bytes(data, strict=False)
    assert not strict.ok and lenient.ok
    assert [f.severity for f in lenient.findings] == ["warning"]
    assert strict.cpp.accepts and not strict.cpp.different_tensor


def test_reserved_dtype_needs_opt_in() -> None:
    data = tsr.to_bytes(np.arange(4, dtype=np.float64), reserved_dtypes=True)
    with pytest.raises(tsr.UnsupportedDTypeError, match="reserved_dtypes=True"):
        tsr.from_bytes(data)
    assert tsr.from_bytes(data, reserved_dtypes=True).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_hostile_header_allocates_nothing(tmp_path: Path) -> None:
    """A header declaring 16 EiB on a 64-byte file fails before any allocation or map."""
    data = mutate(-48, dims=(2**31 - 1,) * 4, total_elements=2**63 - 1)
    with pytest.raises(tsr.BadFieldError):  # product check comes first
        tsr.from_bytes(data)
    wrapped = mutate(-48, ndim=4, dims=(65536, 65536, 65536, 16384), total_elements=2**62)
    path = tmp_path / "big.tsr"
    path.write_bytes(wrapped)
    for mmap in (True, False):
        with pytest.raises(tsr.TruncatedError, match=str(64 + 4 * 2**62)):
            tsr.load(path, mmap=mmap)


def test_shared_malformed_files(vectors_dir: Path) -> None:
    index = json.loads((vectors_dir / "malformed" / "index.json").read_text())["files"]
    expected_errors = {
        "bad_magic.tsr": tsr.BadMagicError,
        "version_2.tsr": tsr.UnsupportedVersionError,
        "dtype_9.tsr": tsr.UnsupportedDTypeError,
        "ndim_5.tsr": tsr.BadFieldError,
        "count_mismatch_13.tsr": tsr.BadFieldError,
        "truncated_payload_4.tsr": tsr.TruncatedError,
        "trailing_1_byte.tsr": tsr.SizeMismatchError,
        "header_size_128.tsr": tsr.BadFieldError,
        "ndim2_leading_dim_2.tsr": tsr.BadFieldError,
        "truncated_header_40.tsr": tsr.TruncatedError,
    }
    assert sorted(expected_errors) == sorted(e["file"] for e in index)
    for e in index:
        path = vectors_dir / "malformed" / e["file"]
        with pytest.raises(expected_errors[e["file"]]):
            tsr.load(path)
        verdict = tsr.validate(path).cpp
        accepts = e["cpp_import"].startswith("accept:")
        assert verdict.accepts is accepts, e["file"]
        if accepts:
            # "accept: FP32 (3,4) numel=12 ..." from the real reader
            assert e["cpp_import"].startswith(verdict.message.split(" (the header")[0])
        else:
            key = e["cpp_import"].removeprefix("reject: ").split(":")[0].split(".")[0]
            assert verdict.message.startswith(key), (verdict.message, key)


def test_leading_dim_file_cpp_reads_prefix(vectors_dir: Path) -> None:
    """The real reader's sha256 for ndim2_leading_dim_2.tsr is that of the first 12
    elements, which is what our verdict's shape (3, 4) reads."""
    import hashlib

    data = (vectors_dir / "malformed" / "ndim2_leading_dim_2.tsr").read_bytes()
    verdict = tsr.validate(vectors_dir / "malformed" / "ndim2_leading_dim_2.tsr").cpp
    assert verdict.shape == (3, 4) and verdict.different_tensor
    prefix = data[64 : 64 + 12 * 4]
    assert (
        hashlib.sha256(prefix).hexdigest()
        == "12bd4494da97b3595da43a1f3f9e60fd924cac43b3f767a0d3436c2e8df5b7b5"
    )
