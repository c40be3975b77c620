"""Robustness tests: bounded fuzzing, properties, crash consistency, worker stress.

Tests marked ``slow`` (crash consistency, stress) run with ``--run-slow`` or
``TSR_SLOW=1`` (the project-wide switch in ``tests/conftest.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the fuzz package lives at the repository root
    sys.path.insert(0, str(REPO))
