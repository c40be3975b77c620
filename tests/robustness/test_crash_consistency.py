"""tsr.save under SIGKILL: the target is never partial and a later save cleans up.

The full run is ``scripts/crash_consistency.py`` (200 trials per mode, 64 MiB); here a
smoke run (small files, default run) and a 20-trial 64 MiB run (slow).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import tsr

REPO = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    path = REPO / "scripts" / "crash_consistency.py"
    spec = importlib.util.spec_from_file_location("crash_consistency_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_next_save_removes_only_the_temps_of_dead_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_pid: int
) -> None:
    """Dead = nobody holds the temp's lock (its writer's lock died with it); a temp
    whose lock is held is a live writer's, whatever pid or host it runs under."""
    target = tmp_path / "x.tsr"
    mark = tsr._io._TMP_MARK
    names = {
        "dead": f".x.tsr{mark}0badc0de0badc0de",
        "live": f".x.tsr{mark}0000000000000001",
        "other_target": f".y.tsr{mark}0000000000000003",
        "legacy_young": f".x.tsr.tsr-tmp-{dead_pid}-00000004",  # tsr 0.1's: by age only
        "not_a_temp": ".x.tsr.tsr-tmp-abc-00000005",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    holder = os.open(tmp_path / names["live"], os.O_WRONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # what a writer does (another process, in effect)
    try:
        monkeypatch.setattr(tsr._io, "_scanned", {})  # the first save of a process scans
        tsr.save(target, np.arange(3, dtype=np.int32))
    finally:
        os.close(holder)
    left = {p.name for p in tmp_path.iterdir()}
    assert not {names["dead"], names["other_target"]} & left  # any target's, same directory
    assert {names[k] for k in ("live", "legacy_young", "not_a_temp")} <= left
    assert tsr.load(target).tolist() == [0, 1, 2]


def _check(summary: Any, trials: int, modes: int) -> None:
    assert len(summary.trials) == trials * modes
    assert not summary.failures, summary.to_dict()["failed_trials"]
    outcomes = {(t.mode, t.outcome) for t in summary.trials}
    assert ("replace", "old") in outcomes or ("replace", "new") in outcomes
    points = {t.kill_at for t in summary.trials}
    assert {"none", "before_rename"} <= points
    # the injected pause before the rename leaves a complete temp that the next save removes
    before = [t for t in summary.trials if t.kill_at == "before_rename"]
    assert all(t.left == "full_temp" and t.cleaned for t in before)
    for t in before:
        assert t.outcome == ("absent" if t.mode == "new" else "old")


def test_crash_consistency_smoke(tmp_path: Path) -> None:
    """8 kills on 4 MiB files, both modes (the script's machinery, quickly)."""
    script = _script()
    summary = script.run(
        trials=4, size_mib=4, modes=["new", "replace"], directory=tmp_path, seed=1,
        fsync=False, progress=False, calibration_runs=1,
    )  # fmt: skip
    _check(summary, 4, 2)
    assert list(tmp_path.iterdir()) == []  # the run cleans up after itself


@pytest.mark.slow
def test_crash_consistency_64mib(tmp_path: Path) -> None:
    """20 kills during saves of 64 MiB files, 10 to a new path and 10 over a file."""
    script = _script()
    summary = script.run(
        trials=10, size_mib=64, modes=["new", "replace"], directory=tmp_path, seed=2,
        fsync=False, progress=False,
    )  # fmt: skip
    _check(summary, 10, 2)
    after = [t for t in summary.trials if t.kill_at == "after_rename"]
    assert after and all(t.outcome == "new" and t.cleaned for t in after)
