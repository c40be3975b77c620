"""A request written in place is never acted on half-written: with events, not before
its writer closes it (the watch is set up before ``running``); where the close cannot be
seen (polling), not before it has been unchanged for the settle time."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tsr_worker import WorkerConfig
from tsr_worker.config import WaitMode
from tsr_worker.waiting import inotify_available

from .worker_helpers import read_status, serving, spawn, take_response, wait_for


def in_place(d: Path, parts: list[str], pause_s: float) -> None:
    """Write request.json directly, part by part, flushed, pausing between parts."""
    with open(d / "request.json", "w") as f:
        for i, part in enumerate(parts):
            if i:
                time.sleep(pause_s)
            f.write(part)
            f.flush()


@pytest.fixture
def worker_in(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    wait, settle_s = request.param
    d = tmp_path / "s"
    with serving(WorkerConfig(str(d), client_pid=0, preload=False, wait=wait, settle_s=settle_s)):
        yield d


@pytest.mark.parametrize("worker_in", [("poll", 0.6)], indirect=True)
def test_polling_waits_until_an_in_place_request_has_settled(worker_in: Path) -> None:
    """Pauses shorter than the settle time (the first parts seen by several polls): the
    whole request is read."""
    in_place(worker_in, ["hello ", "wor", "ld"], pause_s=0.15)
    assert json.loads(take_response(worker_in))["params"] == "Hello World"


@pytest.mark.parametrize("worker_in", [("poll", 0.05)], indirect=True)
def test_polling_reads_what_a_slower_writer_wrote(worker_in: Path) -> None:
    """What the spec says a writer pausing longer than the settle time gets: its partial
    request is read and answered once; the rest goes into the file already taken."""
    in_place(worker_in, ["hello wor", "ld"], pause_s=1.5)
    assert json.loads(take_response(worker_in))["params"] == "Hello Wor"
    time.sleep(0.3)
    assert not (worker_in / "response.json").exists()
    assert not (worker_in / "request.json").exists()


@pytest.mark.parametrize("worker_in", [("poll", 0.05)], indirect=True)
def test_polling_reads_a_renamed_request_without_settling(worker_in: Path) -> None:
    """A request renamed into place long enough ago (its time stamps say so) is read at
    the first look: one poll, not two."""
    d = worker_in
    (d / "request.tmp").write_text('{"cmd": "hi", "params": "fast"}')
    (d / "request.tmp").replace(d / "request.json")
    assert json.loads(take_response(d))["params"] == "Hi Fast"


@pytest.mark.skipif(not inotify_available(), reason="no inotify")
@pytest.mark.parametrize("worker_in", [("inotify", 0.05)], indirect=True)
def test_events_wait_for_the_close_however_long(worker_in: Path) -> None:
    in_place(worker_in, ["hello wor", "ld"], pause_s=0.5)  # ten settle times
    assert json.loads(take_response(worker_in))["params"] == "Hello World"


@pytest.mark.skipif(not inotify_available(), reason="no inotify")
def test_a_request_written_right_after_running_is_watched(tmp_path: Path) -> None:
    """The watch exists before ``running`` is written: a client that starts writing in
    place the moment it sees ``running`` is read only once it closes the file."""
    for i in range(3):
        d = tmp_path / f"s{i}"
        d.mkdir()
        w = spawn(d, preload=True, wait_running=False)
        try:
            wait_for(lambda d=d: read_status(d) == "running", what="running")  # type: ignore[misc]
            in_place(d, ["hello wor", "ld"], pause_s=0.3)
            assert json.loads(take_response(d))["params"] == "Hello World"
        finally:
            w.kill()


@pytest.mark.parametrize("wait", ["inotify", "poll"])
def test_a_request_there_before_the_worker_is_served(tmp_path: Path, wait: WaitMode) -> None:
    if wait == "inotify" and not inotify_available():
        pytest.skip("no inotify")
    d = tmp_path / "s"
    d.mkdir()
    (d / "request.json").write_text('{"cmd": "hi", "params": "early"}')
    w = spawn(d, "--wait", wait, wait_running=False)
    try:
        assert json.loads(take_response(d))["params"] == "Hi Early"
    finally:
        w.kill()
