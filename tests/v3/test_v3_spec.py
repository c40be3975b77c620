"""spec/tsr-v3.md agrees with the codec: its field table is the schema's, and
spec/vectors3/ is what scripts/gen_spec_vectors_v3.py generates from the rules."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import tsr
from tsr import v3

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "spec" / "tsr-v3.md"
VECTORS = REPO / "spec" / "vectors3"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_v3", REPO / "scripts" / "gen_spec_vectors_v3.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_v3"] = module
    spec.loader.exec_module(module)
    return module


def test_field_table_is_generated_from_the_schema() -> None:
    text = SPEC.read_text(encoding="utf-8")
    match = re.search(r"<!-- header-table:begin -->\n(.*?)\n<!-- header-table:end -->", text, re.S)
    assert match, "spec/tsr-v3.md lost its header-table markers"
    assert match.group(1).strip() == v3.LAYOUT.spec_table().strip()
    rows = re.findall(r"^\| (\d+) \| (\d+) \| `(\w+)` \|", match.group(1), re.M)
    assert [(int(o), int(s), n) for o, s, n in rows] == [
        (f.offset, f.size, f.name) for f in v3.LAYOUT.fields
    ]
    assert sum(f.size for f in v3.LAYOUT.fields) == 128


def test_generated_vectors_and_tables_are_up_to_date() -> None:
    assert _generator().main(["--check"]) == 0


def _index() -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = json.loads((VECTORS / "index.json").read_text())["files"]
    return files


@pytest.mark.parametrize("entry", _index(), ids=lambda e: e["file"])
def test_index_entry(entry: dict[str, Any]) -> None:
    path = VECTORS / entry["file"]
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["size"]
    report = tsr.validate(path, format="v3")
    assert report.ok is entry["valid"]
    assert tsr.validate(path, strict=False, format="v3").ok is entry["lenient_valid"]
    for v in report.cpp_paths:
        want = entry["cpp"][v.path]
        assert (v.accepts, v.check, bool(v.hazard)) == (want["accepts"], want["check"],
                                                        want["unsafe"])  # fmt: skip
    if entry["valid"]:
        arr = tsr.load(path)
        assert list(arr.shape) == entry["shape"] and arr.tobytes().hex() == entry["data_hex"]
    else:
        err = entry["error"]
        with pytest.raises(tsr.TSRError) as info:
            tsr.load(path)
        assert type(info.value).__name__ == err["class"] and info.value.field == err["field"]


def test_scalar_bytes_pinned() -> None:
    raw = bytes.fromhex("000050c0")  # -3.25
    expected = (
        b"TSR3" + bytes.fromhex("80000000" "03000000" "00000000")  # header_size, version, RAW
        + bytes.fromhex("01" "00" "0000")  # FP32, ndim 0, reserved_1
        + bytes(16)  # dims 0,0,0,0
        + (1).to_bytes(8, "little") + (256).to_bytes(8, "little")  # numel, data_offset
        + (4).to_bytes(8, "little") * 2  # payload_size, raw_data_size
        + zlib.crc32(raw).to_bytes(4, "little") + bytes(4 + 52)  # crc32, reserved_2, padding
        + bytes(128) + raw  # the RAW gap, then the data
    )  # fmt: skip
    assert (VECTORS / "fp32_scalar_raw.tsr").read_bytes() == expected
