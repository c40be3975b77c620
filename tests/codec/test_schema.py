"""The construct schema is the single source of truth: the fast path, the header model,
the spec's table and the writer must all agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import construct as cs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tsr
from tsr import _schema, header

REPO = Path(__file__).resolve().parents[2]


def known_blobs() -> list[bytes]:
    """Headers of every dtype and rank, plus hostile ones."""
    blobs = [
        tsr.to_bytes(np.zeros(shape, dt), reserved_dtypes=True)[:64]
        for dt in ("<f4", "i1", "<i4", "<f2", "<f8", "<i2", "u1")
        for shape in [(), (5,), (3, 4), (2, 3, 4), (2, 3, 4, 5), (0, 3)]
    ]
    hostile = {
        "magic": b"TSR!",
        "version": -1,
        "header_size": 2**31 - 1,
        "reserved_1": -(2**31),
        "dtype": 0,
        "ndim": 99,
        "dims": (-1, 2**31 - 1, 0, -(2**31)),
        "total_elements": -(2**63),
        "reserved_2": 2**63 - 1,
        "reserved_3": 1,
    }
    blobs.append(_schema.pack(hostile))
    return blobs


@pytest.mark.parametrize("blob", known_blobs(), ids=lambda b: b[16:28].hex())
def test_parse_build_sizeof_and_compiled_agree(blob: bytes) -> None:
    parsed = _schema.HEADER.parse(blob)
    compiled = _schema.HEADER.compile().parse(blob)
    fast = _schema.unpack(blob)
    for name in fast:
        assert parsed[name] == compiled[name]
        value = parsed[name]
        assert (tuple(value) if name == "dims" else value) == fast[name]
    assert _schema.HEADER.build(parsed) == blob == _schema.pack(fast)
    assert _schema.HEADER.sizeof() == len(blob) == tsr.HEADER_SIZE == 64
    h = header.decode_raw(blob)
    built = {"dtype_code" if k == "dtype" else k: v for k, v in fast.items()}
    assert h == header.Header(**built)  # the fast constructor builds the same dataclass
    assert h.to_bytes() == blob
    assert h.dims == fast["dims"] and h.dtype_code == fast["dtype"]


@settings(max_examples=300)
@given(st.binary(min_size=64, max_size=64))
def test_fast_path_matches_construct_on_any_bytes(blob: bytes) -> None:
    fast = _schema.unpack(blob)
    if blob[:4] != _schema.MAGIC:
        with pytest.raises(cs.ConstError):
            _schema.HEADER.parse(blob)
        return
    parsed = _schema.HEADER.parse(blob)
    for name, value in fast.items():
        assert (tuple(parsed[name]) if name == "dims" else parsed[name]) == value


def test_field_offsets_derive_from_schema() -> None:
    offsets = {f.name: (f.offset, f.size) for f in _schema.FIELDS}
    assert offsets == {
        "magic": (0, 4),
        "version": (4, 4),
        "header_size": (8, 4),
        "reserved_1": (12, 4),
        "dtype": (16, 4),
        "ndim": (20, 4),
        "dims": (24, 16),
        "total_elements": (40, 8),
        "reserved_2": (48, 8),
        "reserved_3": (56, 8),
    }
    assert sum(f.size for f in _schema.FIELDS) == _schema.HEADER_SIZE


def test_spec_table_matches_schema() -> None:
    spec = (REPO / "spec" / "tsr-v1.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- header-table:begin -->\n(.*?)\n<!-- header-table:end -->", spec, re.S)
    assert match, "spec/tsr-v1.md lost its header-table markers"
    assert match.group(1).strip() == _schema.spec_table().strip()


def test_spec_field_rows_parse_back_to_schema() -> None:
    """Independently of the generator: read each row's offset, size, name and type."""
    rows = re.findall(r"^\| (\d+) \| (\d+) \| `(\w+)` \| ([\w×]+) \|", _schema.spec_table(), re.M)
    assert [(int(o), int(s), n) for o, s, n, _ in rows] == [
        (f.offset, f.size, f.name) for f in _schema.FIELDS
    ]
    assert [t for *_, t in rows] == [
        "bytes", "int32", "int32", "int32", "int32", "int32",
        "int32×4", "int64", "int64", "int64",
    ]  # fmt: skip
