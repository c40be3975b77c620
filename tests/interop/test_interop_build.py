"""How the kit is found and skipped: $CXX first (flags allowed), then c++, g++, clang++;
no compiler means a clean skip with a reason, never a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .kitlib import HERE, REPO, find_cxx

pytestmark = pytest.mark.interop


def _fake_compiler(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_find_cxx_honours_cxx_with_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = _fake_compiler(tmp_path / "my-c++")
    monkeypatch.setenv("CXX", f"{fake} -stdlib=libc++")
    assert find_cxx() == [str(fake), "-stdlib=libc++"]


def test_find_cxx_falls_back_in_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_cxx() is None
    clang = _fake_compiler(tmp_path / "clang++")
    assert find_cxx() == [str(clang)]
    gxx = _fake_compiler(tmp_path / "g++")
    assert find_cxx() == [str(gxx)]
    cxx = _fake_compiler(tmp_path / "c++")
    assert find_cxx() == [str(cxx)]


def test_kit_tests_skip_cleanly_without_a_compiler(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CXX"}
    env["PATH"] = str(tmp_path)  # no compiler (and nothing else) on PATH
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(HERE / "test_interop_kit.py"), "-q", "-rs",
         "-p", "no:cacheprovider"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "no C++ compiler found ($CXX, c++, g++, clang++)" in out, out
    assert " skipped" in out and "failed" not in out and "error" not in out.lower(), out
