"""The worker's ``compare`` command: a C++ tensor against a reference, answered as text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tsr_worker import DEFAULT
from tsr_worker.protocol import check_reply_text

import tsr
import tsr.torch

from .worker_helpers import ask

torch = pytest.importorskip("torch")


def compare_via_worker(d: Path, a: Any, ref: Any) -> dict[str, Any]:
    (d / "r.tsr").unlink(missing_ok=True)  # another test's result in the shared session
    tsr.torch.save(d / "mine.tsr", a)
    tsr.torch.save(d / "ref.tsr", ref)
    reply = ask(d, json.dumps({"cmd": "compare", "params": "mine,ref"}))
    assert not (d / "mine.tsr").exists() and not (d / "ref.tsr").exists()
    assert not (d / "r.tsr").exists()  # a verdict, no tensor
    return reply


def test_registered_as_two_tags() -> None:
    cmd = DEFAULT.get("compare")
    assert cmd is not None and cmd.inputs == 2 and not cmd.is_text


def test_equal_tensors_reply_ok(sdir: Path) -> None:
    a = torch.arange(12.0).reshape(3, 4) * 0.5 - 3.25
    reply = compare_via_worker(sdir, a, a.reshape(1, 3, 4))
    want = tsr.compare(a, a.reshape(1, 3, 4)).summary()
    assert reply == {"cmd": "compare", "params": want}
    assert want.startswith("ok, (3, 4) float32 vs (1, 3, 4) float32, max_abs 0 ")


def test_different_tensors_reply_the_figures(sdir: Path) -> None:
    ref = torch.linspace(-2, 2, 20).reshape(4, 5)
    mine = ref.clone()
    mine[2, 3] += 0.01
    mine[0, 0] = float("nan")
    reply = compare_via_worker(sdir, mine, ref)
    c = tsr.compare(mine, ref)
    assert reply["params"] == c.summary() == check_reply_text(c.summary())
    assert reply["params"].startswith("DIFFERENT, (4, 5) float32 vs (4, 5) float32")
    assert "mismatches 2/20 (nan 1, inf 0)" in reply["params"]
    assert f"worst [2, 3] {float(mine[2, 3]):.8g} vs {float(ref[2, 3]):.8g}" in reply["params"]
    assert c.max_abs == pytest.approx(
        float(np.float32(ref[2, 3]) + np.float32(0.01)) - float(ref[2, 3])
    )


def test_shape_mismatch_and_ints(sdir: Path) -> None:
    reply = compare_via_worker(sdir, torch.zeros(2, 3), torch.zeros(3, 2))
    assert reply["params"] == (
        "DIFFERENT, (2, 3) float32 vs (3, 2) float32: shapes (2, 3) and (3, 2) differ "
        "(beyond leading 1s)"
    )
    ints = torch.tensor([1, 2, 3], dtype=torch.int32)
    reply = compare_via_worker(sdir, ints, ints)
    assert (
        reply["params"].startswith("ok, (3,) int32 vs (3,) int32") and "ulp" not in reply["params"]
    )


def test_one_tag_is_invalid(sdir: Path) -> None:
    tsr.torch.save(sdir / "mine.tsr", torch.zeros(3))
    reply = ask(sdir, json.dumps({"cmd": "compare", "params": "mine"}))
    assert reply["params"] == "invalid" and reply["error"]["code"] == "wrong_input_count"
    (sdir / "mine.tsr").unlink(missing_ok=True)
