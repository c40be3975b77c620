"""No name a client can squat (a directory, a FIFO, a link at a temporary, response,
status or result name) keeps a request from its one answer."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tsr_worker import WorkerConfig

from .worker_helpers import ask, read_status, serving, take_response, wait_for

Squat = Callable[[Path], None]


def directory(p: Path) -> None:
    p.mkdir()


def full_directory(p: Path) -> None:
    p.mkdir()
    (p / "keep.txt").write_text("the client's")


def fifo(p: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs (Windows, stripped mode)")
    os.mkfifo(p)


def dangling_link(p: Path) -> None:
    os.symlink("/nonexistent/target", p)


SQUATS: dict[str, Squat] = {
    "directory": directory,
    "full_directory": full_directory,
    "fifo": fifo,
    "dangling_link": dangling_link,
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "s"
    with serving(WorkerConfig(str(d), client_pid=0, preload=False, idle_timeout_s=0)):
        yield d


@pytest.mark.parametrize("name", ["response.tmp", "status.tmp"])
@pytest.mark.parametrize("squat", list(SQUATS))
def test_temporary_names_cannot_be_squatted(served: Path, name: str, squat: str) -> None:
    SQUATS[squat](served / name)
    for word in ("one", "two"):
        assert ask(served, json.dumps({"cmd": "hi", "params": word}), 10)["params"] == (
            "Hi " + word.title()
        )


@pytest.mark.parametrize("squat", list(SQUATS))
def test_a_squatted_response_name_is_cleared_and_answered(
    served: Path, tmp_path: Path, squat: str
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched")
    if squat == "dangling_link":
        os.symlink(outside, served / "response.json")  # a link to a real file outside
    else:
        SQUATS[squat](served / "response.json")
    (served / "request.tmp").write_text('{"cmd": "hi", "params": "through"}')
    os.replace(served / "request.tmp", served / "request.json")
    response = served / "response.json"
    wait_for(lambda: response.is_file() and not response.is_symlink(), 10, "the answer")
    assert json.loads(take_response(served))["params"] == "Hi Through"
    assert outside.read_text() == "untouched"
    if squat == "full_directory":  # moved aside, content kept
        (aside,) = [p for p in served.iterdir() if p.name.startswith(".response.json.moved-")]
        assert (aside / "keep.txt").read_text() == "the client's"
    assert ask(served, '{"cmd": "hi", "params": "again"}')["params"] == "Hi Again"


def test_a_squatted_status_name_does_not_stop_the_worker(served: Path) -> None:
    os.unlink(served / "status.txt")
    full_directory(served / "status.txt")
    assert ask(served, '{"cmd": "hi", "params": "x"}')["params"] == "Hi X"


@pytest.mark.parametrize("squat", ["fifo", "dangling_link"])
def test_a_squatted_result_name_is_replaced(served: Path, tmp_path: Path, squat: str) -> None:
    torch = pytest.importorskip("torch")
    import tsr.torch

    outside = tmp_path / "outside.tsr"
    outside.write_bytes(b"untouched")
    if squat == "fifo":
        fifo(served / "r.tsr")
    else:
        os.symlink(outside, served / "r.tsr")
    tsr.torch.save(served / "a.tsr", torch.tensor([-1.0, 2.0]))
    assert ask(served, '{"cmd": "relu", "params": "a"}', 30)["params"] == "r"
    assert not (served / "r.tsr").is_symlink()
    assert tsr.torch.load(served / "r.tsr").tolist() == [0.0, 2.0]
    assert outside.read_bytes() == b"untouched"
    assert read_status(served) == "running"
