"""The shared schema machinery: a Layout derived from a construct Struct agrees with construct."""

from __future__ import annotations

from typing import Any

import construct as cs
import pytest

from tsr._layout import Layout

SAMPLE = cs.Struct(
    "magic" / cs.Const(b"ABCD") * "signature",
    "major" / cs.Int16ul * "major version",
    "flags" / cs.Int8ul,
    "kind" / cs.Int8sl,
    "count" / cs.Int32ul,
    "dims" / cs.Array(4, cs.Int32sl) * "shape",
    "big" / cs.Int64ul,
    "signed" / cs.Int64sl,
    "reserved" / cs.Bytes(7) * "zero",
)
LAYOUT = Layout("sample", SAMPLE)

VALUES: dict[str, Any] = {
    "magic": b"ABCD",
    "major": 0xFFFE,
    "flags": 255,
    "kind": -3,
    "count": 2**32 - 1,
    "dims": (1, -2, 3, 2**31 - 1),
    "big": 2**64 - 1,
    "signed": -(2**63),
    "reserved": b"\x00\x01\x02\x03\x04\x05\x06",
}


def test_offsets_and_size_match_construct() -> None:
    assert LAYOUT.size == SAMPLE.sizeof() == 4 + 2 + 1 + 1 + 4 + 16 + 8 + 8 + 7
    offset = 0
    for f, sub in zip(LAYOUT.fields, SAMPLE.subcons, strict=True):
        assert (f.name, f.offset, f.size) == (sub.name, offset, sub.sizeof())
        offset += f.size
    assert LAYOUT.offset_of("dims", 2) == 4 + 2 + 1 + 1 + 4 + 8
    assert LAYOUT.by_name["dims"].type_name == "int32×4"
    assert LAYOUT.by_name["reserved"].kind == "bytes"


def test_fast_path_agrees_with_construct_both_ways() -> None:
    blob = LAYOUT.pack(VALUES)
    assert blob == SAMPLE.build({k: list(v) if k == "dims" else v for k, v in VALUES.items()})
    parsed = SAMPLE.parse(blob)
    unpacked = LAYOUT.unpack(blob)
    assert unpacked == VALUES
    for name, value in unpacked.items():
        assert (tuple(parsed[name]) if name == "dims" else parsed[name]) == value
    assert LAYOUT.unpack(b"xx" + blob, 2) == VALUES


def test_spec_table_lists_every_field_with_its_doc() -> None:
    rows = LAYOUT.spec_table().splitlines()[2:]
    assert [r.split("|")[3].strip() for r in rows] == [f"`{f.name}`" for f in LAYOUT.fields]
    assert "| 0 | 4 | `magic` | bytes | signature |" in rows


@pytest.mark.parametrize(
    "field",
    [cs.Int32ub, cs.Float32l, cs.Array(cs.this.n, cs.Int8ul), cs.GreedyBytes],
)
def test_unsupported_fields_are_refused_at_build_time(field: Any) -> None:
    with pytest.raises((TypeError, cs.SizeofError)):
        Layout("bad", cs.Struct("n" / cs.Int8ul, "x" / field))
