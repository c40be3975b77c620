"""Project-wide test set-up: where the C++-written vectors are (``tests/data/``, copies of
the shared ones), the slow-test switch, and a pid that no process has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
VECTORS = DATA / "vectors1"
"""Copy of ../shared/vectors: TSR v1 files written by the C++ framework."""
VECTORS3 = DATA / "vectors3"
"""Copy of ../shared/vectors3 (without python_session/): TSR3 files and malformed ones."""

if os.environ.get("TSR_STRIP_PLATFORM") == "1":  # the stripped mode (tests/platform_strip)
    _strip_dir = str(REPO / "tests" / "platform_strip")
    _paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if _strip_dir not in {os.path.abspath(p) for p in _paths if p}:
        raise pytest.UsageError(
            "TSR_STRIP_PLATFORM=1 needs PYTHONPATH=tests/platform_strip, so that every "
            "interpreter strips itself at start-up (scripts/test.sh does this)"
        )
    import tsr_strip_platform

    assert tsr_strip_platform.STRIPPED, "sitecustomize did not strip this interpreter"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run tests marked slow (or set TSR_SLOW=1)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selected = "slow" in (config.getoption("markexpr") or "")  # -m slow asks for them
    if config.getoption("--run-slow") or os.environ.get("TSR_SLOW") == "1" or selected:
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow or TSR_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The C++-written TSR v1 vectors (tests/data/vectors1)."""
    return VECTORS


@pytest.fixture(scope="session")
def manifest(vectors_dir: Path) -> list[dict[str, Any]]:
    """The entries of tests/data/vectors1/manifest.json."""
    files: list[dict[str, Any]] = json.loads((vectors_dir / "manifest.json").read_text())["files"]
    return files


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
