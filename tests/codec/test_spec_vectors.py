"""spec/vectors/ is what scripts/gen_spec_vectors.py generates, and pins exact bytes."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import tsr

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "spec" / "vectors"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen", REPO / "scripts" / "gen_spec_vectors.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _index() -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = json.loads((VECTORS / "index.json").read_text())["files"]
    return files


def test_generated_vectors_are_up_to_date() -> None:
    assert _generator().main(["--check"]) == 0


def test_scalar_bytes_pinned() -> None:
    expected = bytes.fromhex(
        "54535221" "01000000" "40000000" "00000000"  # TSR!, version 1, header_size 64, reserved
        "01000000" "00000000"  # FP32, ndim 0
        "01000000" "01000000" "01000000" "01000000"  # dims 1,1,1,1
        "0100000000000000" "0000000000000000" "0000000000000000"  # total 1, reserved
        "000050c0"  # -3.25
    )  # fmt: skip
    assert (VECTORS / "fp32_scalar.tsr").read_bytes() == expected
    assert tsr.to_bytes(np.float32(-3.25)) == expected


@pytest.mark.parametrize("entry", _index(), ids=lambda e: e["file"])
def test_index_entry(entry: dict[str, Any]) -> None:
    data = (VECTORS / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    report = tsr.validate(VECTORS / entry["file"])
    assert report.ok is entry["valid"]
    assert report.cpp.accepts is entry["cpp"]["accepts"]
    assert report.cpp.check == entry["cpp"]["check"]
    if "error" in entry:
        with pytest.raises(tsr.TSRError) as info:
            tsr.load(VECTORS / entry["file"], reserved_dtypes=True)
        assert type(info.value).__name__ == entry["error"]["class"]
        assert info.value.field == entry["error"]["field"]
        assert info.value.offset == entry["error"]["offset"]
    elif entry["dtype"] == "BF16":
        torch = pytest.importorskip("torch")
        import tsr.torch as tt

        t = tt.load(VECTORS / entry["file"], reserved_dtypes=True)
        assert t.dtype == torch.bfloat16
        bits = t.view(torch.int16).numpy().view("<u2").tolist()
        assert [f"{b:04x}" for b in bits] == entry["bits_hex"]
    else:
        arr = tsr.load(VECTORS / entry["file"], reserved_dtypes=True)
        assert list(arr.shape) == entry["shape"]
        assert arr.dtype == getattr(tsr, entry["dtype"]).numpy
        flat = arr.reshape(-1)
        if entry["dtype"] == "FP32":
            assert [f"{b:08x}" for b in flat.view("<u4").tolist()] == entry["bits_hex"]
        else:
            want = [float("nan") if v == "nan" else v for v in entry["values"]]
            np.testing.assert_array_equal(flat, np.array(want, dtype=arr.dtype))
