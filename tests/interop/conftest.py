"""Fixtures for the C++ interop tests: the kit is compiled once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from .kitlib import MALFORMED, VECTORS, BuildError, CppKit, KitBuild, build_kit, find_cxx


@pytest.fixture(scope="session")
def kit_build(tmp_path_factory: pytest.TempPathFactory) -> KitBuild:
    cxx = find_cxx()
    if cxx is None:
        pytest.skip("no C++ compiler found ($CXX, c++, g++, clang++): C++ interop kit not built")
    try:
        return build_kit(cxx, tmp_path_factory.mktemp("cppkit"))
    except BuildError as exc:  # a compiler that cannot build the kit is a failure, not a skip
        pytest.fail(f"the C++17 interop kit failed to compile with {cxx}:\n{exc}")


@pytest.fixture(scope="session")
def kit(kit_build: KitBuild) -> CppKit:
    return CppKit(kit_build)


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    return VECTORS


@pytest.fixture(scope="session")
def malformed_dir() -> Path:
    return MALFORMED
