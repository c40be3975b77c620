"""TSR4 test set-up: the repository's copy of the C++-written TSR-V4.20 vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

VECTORS4 = Path(__file__).resolve().parent.parent / "data" / "vectors4"
"""A copy of ``../shared/vectors4`` (files written and judged by the real C++ code)."""


def manifest4() -> list[dict[str, Any]]:
    """The entries of ``vectors4/manifest.json``."""
    files: list[dict[str, Any]] = json.loads((VECTORS4 / "manifest.json").read_text())["files"]
    return files


def malformed4() -> list[dict[str, Any]]:
    """The entries of ``vectors4/malformed/index.json``."""
    path = VECTORS4 / "malformed" / "index.json"
    files: list[dict[str, Any]] = json.loads(path.read_text())["files"]
    return files


@pytest.fixture(scope="session")
def vectors4() -> Path:
    return VECTORS4
