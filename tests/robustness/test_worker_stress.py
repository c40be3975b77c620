"""The worker under stress and at its limits, through ``scripts/stress_worker.py``.

Default run: the limits (each breach refused with its code, fast, RSS unchanged) and a
check that the canary watch sees a read. Slow: every scenario at reduced counts (the
full run is ``scripts/stress_worker.py``: 10,000 requests, 100 of each malformed kind,
8 parallel sessions).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    name = "stress_worker_script"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "stress_worker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_canary_watch_sees_a_read_and_a_change(tmp_path: Path) -> None:
    script = _script()
    ws = tmp_path / "ws"
    ws.mkdir()
    canaries = script.Canaries(tmp_path, ws)
    canaries.files["layout_dir"].read_bytes()  # a read...
    canaries.files["workspace"].write_bytes(b"changed")  # ...and a write
    problems = canaries.check()
    assert any("inotify" in p and "canary.txt" in p for p in problems)
    assert any("workspace: content changed" in p for p in problems)
    assert any("layout_dir: atime changed" in p for p in problems)


def test_limits_refuse_before_allocating(tmp_path: Path) -> None:
    """A 100 GB sparse input, an input one byte over the limit, a sparse 1 GB request,
    over-long params and too many tags: each answered with its own error code within a
    second and without the worker's RSS growing; an input of exactly the limit is read."""
    out = _script().run(scenarios=("limits",), directory=tmp_path, progress=False)
    limits = out["scenarios"]["limits"]
    assert out["ok"], out
    expected = {
        "input_100GB_sparse": "input_too_large",
        "input_limit_plus_1": "input_too_large",
        "request_1GB_sparse": "request_too_large",
        "params_65_chars": "params_too_long",
        "three_tags_limit_2": "wrong_input_count",
    }
    for probe, code in expected.items():
        assert limits[probe]["code"] == code
        assert limits[probe]["ms"] < 1000
        assert limits[probe]["rss_kb"] - limits["rss_kb_before"] < 2048
    assert limits["input_at_limit"]["code"] is None
    assert not out["canaries"]["problems"]


@pytest.mark.slow
def test_every_stress_scenario_reduced(tmp_path: Path) -> None:
    out = _script().run(
        requests=1500, malformed_per_kind=5, sessions=8, per_session=30, trials=2,
        directory=tmp_path, progress=False,
    )  # fmt: skip
    bad = {k: v["problems"] for k, v in out["scenarios"].items() if not v["ok"]}
    assert out["ok"], (bad, out["canaries"])
    steady = out["scenarios"]["steady"]
    assert steady["rss_growth_after_warmup_kb"] < 5 * 1024
    assert steady["fds"]["after_warmup"] == steady["fds"]["end"]
    assert steady["session_dir_at_end"] == ["r.tsr", "status.txt"]
    malformed = out["scenarios"]["malformed"]
    assert malformed["requests"] == 5 * malformed["kinds"] and malformed["worker_alive"]
    assert not malformed["duplicate_answers"]
    assert out["scenarios"]["kill_client"]["worker_exit_after_client_kill_s"]["max"] < 10
    assert out["scenarios"]["dir_removed"]["worker_exit_after_removal_s"]["max"] < 10
