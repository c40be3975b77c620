"""Fixtures of the worker tests: one shared worker with torch and the test commands."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tsr_worker.sessiondir import LOCK_NAME

from .worker_helpers import PLUGIN, WorkerProc, spawn

SHARED_LIMITS = (
    "--max-request-bytes", "4096",
    "--max-params-chars", "256",
    "--max-input-bytes", "300000",
    "--max-inputs", "4",
    "--max-result-bytes", "100000",
)  # fmt: skip
"""Small limits on the shared worker, so that each breach is cheap to provoke."""


@pytest.fixture(scope="session")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProc]:
    """A worker (torch preloaded, test commands, small limits) shared by the tests that
    need no worker of their own (importing torch is most of a worker's start-up cost).

    Its workspace has a sentinel file beside the session directory, for the tests that
    check nothing outside the session is touched.
    """
    ws = tmp_path_factory.mktemp("ws")
    d = ws / "python_session" / "tr_session_shared"
    d.mkdir(parents=True)
    (ws / "python_session" / "sentinel.tsr").write_bytes(b"do not touch")
    log = tmp_path_factory.mktemp("logs") / "shared.log"
    w = spawn(
        d, "--commands", str(PLUGIN), "--idle-timeout", "600", *SHARED_LIMITS,
        log=log, preload=True,
    )  # fmt: skip
    try:
        yield w
    finally:
        (d / "exit.flag").touch()
        try:
            w.wait_exit(10)
        finally:
            w.kill()


@pytest.fixture
def sdir(shared: WorkerProc) -> Iterator[Path]:
    """The shared worker's session directory, checked clean after each test, and made
    clean again whatever the test left (a failed test must not take the shared worker's
    later tests with it: a squatting ``request.json`` directory would time out each)."""
    yield shared.dir
    assert shared.proc.poll() is None, shared.log_text()
    request = shared.dir / "request.json"
    squatted = request.is_dir() and not request.is_symlink()
    left_request = request.exists() or request.is_symlink()
    leftovers = sorted(  # the lock file stays where the directory itself cannot be locked
        p.name for p in shared.dir.iterdir() if p.name.startswith(".") and p.name != LOCK_NAME
    )
    for p in shared.dir.iterdir():  # squatting directories of any test, then the request
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
    if left_request and not squatted:
        request.unlink(missing_ok=True)
    for name in leftovers:
        path = shared.dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    assert not left_request, "request.json left behind"
    assert leftovers == []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Cases of a worker run with ``--wait inotify`` are skipped where there is none
    (macOS, Windows, the stripped mode)."""
    from tsr_worker.waiting import inotify_available

    if inotify_available():
        return
    skip = pytest.mark.skip(reason="no inotify here (the poll case of the test runs)")
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("wait") == "inotify":
            item.add_marker(skip)
