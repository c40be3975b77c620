"""One answer per request, even for a request.json the worker cannot remove."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tsr_worker import Worker, WorkerConfig


@pytest.fixture
def worker_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A worker thread serving ``tmp_path/session``, waiting in mode ``request.param``."""
    directory = tmp_path / "session"
    worker = Worker(
        WorkerConfig(str(directory), idle_timeout_s=0, client_pid=0, wait=request.param,
                     preload=False)
    )  # fmt: skip
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    while not (directory / "status.txt").exists():
        time.sleep(0.005)
    yield directory
    worker.stop()
    thread.join(10)


def count_answers(directory: Path, seconds: float) -> int:
    """Consume responses like the client does, for ``seconds``."""
    answers = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            (directory / "response.json").unlink()
            answers += 1
        except FileNotFoundError:
            time.sleep(0.002)
    return answers


def wait_answer(directory: Path, timeout_s: float) -> bool:
    """Consume one response, waiting up to ``timeout_s`` for it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            (directory / "response.json").unlink()
            return True
        except FileNotFoundError:
            time.sleep(0.0005)
    return False


@pytest.mark.parametrize("worker_dir", ["poll", "inotify"], indirect=True)
def test_unremovable_request_is_answered_once(worker_dir: Path) -> None:
    """Found by the stress script (fixed in d473661): a request.json the worker cannot
    remove (a directory) was answered again on every poll, about 20 answers a second,
    each read by the client as the reply to its next request."""
    (worker_dir / "request.json").mkdir()
    assert count_answers(worker_dir, 0.6) == 1


def test_unremovable_request_right_after_an_answer(tmp_path: Path) -> None:
    """Found by the stress script (fixed in d473661 and c573206): with inotify, a
    directory request.json made right after an answer was taken at once and answered
    again when its queued event was read (or, reusing the removed request's inode,
    taken as already answered)."""
    directory = tmp_path / "session"
    worker = Worker(WorkerConfig(str(directory), idle_timeout_s=0, client_pid=0,
                                 wait="inotify", preload=False))  # fmt: skip
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        while not (directory / "status.txt").exists():
            time.sleep(0.005)
        extra = 0
        for _ in range(20):
            tmp = directory / "request.tmp"
            tmp.write_bytes(b"{not json")
            tmp.replace(directory / "request.json")
            while not (directory / "response.json").exists():
                time.sleep(0.0001)
            (directory / "response.json").unlink()
            (directory / "request.json").mkdir()  # at once: the worker is still warm
            # its one answer, however slow a loaded machine makes it; then no second one
            assert wait_answer(directory, 10.0), "the directory request was never answered"
            extra += count_answers(directory, 0.05)
            (directory / "request.json").rmdir()
            extra += count_answers(directory, 0.02)
        assert extra == 0
    finally:
        worker.stop()
        thread.join(10)


@pytest.mark.parametrize("worker_dir", ["poll", "inotify"], indirect=True)
def test_regular_request_is_answered_once(worker_dir: Path) -> None:
    """The neighbour that works: a garbage request file is answered once and removed."""
    tmp = worker_dir / "request.tmp"
    tmp.write_bytes(b"{not json")
    tmp.replace(worker_dir / "request.json")
    assert count_answers(worker_dir, 0.6) == 1
    assert not (worker_dir / "request.json").exists()
