"""Nothing outside the session directory is ever read, written or deleted; links in it are
never followed; odd files cannot hang the worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tsr
import tsr.torch

from .worker_helpers import WorkerProc, ask, spawn, tree, wait_for

torch = pytest.importorskip("torch")

RELU = '{{"cmd": "relu", "params": "{}"}}'


def outside(shared: WorkerProc) -> Path:
    """The workspace holding the shared session (with a sentinel file beside it)."""
    return shared.dir.parent.parent


@pytest.mark.parametrize(
    "tag",
    [
        "../sentinel",
        "../../python_session/sentinel",
        "..",
        "../tr_session_shared/g",
        "/etc/passwd",
        ".hidden",
        "a/../../x",
        "a\\b",
    ],
)
def test_path_tags_are_refused_and_nothing_outside_is_touched(
    shared: WorkerProc, sdir: Path, tag: str
) -> None:
    before = tree(outside(shared), skip=[sdir])
    reply = ask(sdir, RELU.format(tag.replace("\\", "\\\\")))
    assert reply["params"] == "invalid" and reply["error"]["code"] == "bad_tag", reply
    assert tree(outside(shared), skip=[sdir]) == before


def test_symlinked_input_is_not_followed_nor_its_target_deleted(sdir: Path, tmp_path: Path) -> None:
    target = tmp_path / "precious.tsr"
    tsr.torch.save(target, torch.ones(3))
    content = target.read_bytes()
    os.symlink(target, sdir / "a.tsr")
    reply = ask(sdir, RELU.format("a"))
    assert (
        reply["error"]["code"] == "invalid_input" and "symbolic link" in reply["error"]["message"]
    )
    assert target.read_bytes() == content
    assert (sdir / "a.tsr").is_symlink(), "a link that was not read is not removed either"
    (sdir / "a.tsr").unlink()


def test_symlinked_result_and_temp_names_are_replaced_not_followed(
    sdir: Path, tmp_path: Path
) -> None:
    victims = {name: tmp_path / f"victim_{name}" for name in ("r.tsr", "response.tmp")}
    for name, victim in victims.items():
        victim.write_bytes(b"original")
        (sdir / name).unlink(missing_ok=True)
        os.symlink(victim, sdir / name)
    tsr.torch.save(sdir / "a.tsr", torch.ones(2, 2))
    assert ask(sdir, RELU.format("a")) == {"cmd": "relu", "params": "r"}
    for victim in victims.values():
        assert victim.read_bytes() == b"original"
    assert not (sdir / "r.tsr").is_symlink()
    assert torch.equal(tsr.torch.load(sdir / "r.tsr"), torch.ones(2, 2))


def test_symlinked_status_is_replaced_not_followed(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("original")
    os.symlink(victim, d / "status.txt")
    os.symlink(victim, d / "status.tmp")
    w = spawn(d)
    assert victim.read_text() == "original"
    assert (d / "status.txt").read_text() == "running" and not (d / "status.txt").is_symlink()
    (d / "exit.flag").touch()
    assert w.wait_exit(5) == 0
    assert victim.read_text() == "original"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs (Windows, stripped mode)")
def test_fifo_input_does_not_hang_the_worker(sdir: Path) -> None:
    os.mkfifo(sdir / "a.tsr")
    start = time.monotonic()
    reply = ask(sdir, RELU.format("a"), timeout_s=5)
    assert time.monotonic() - start < 2
    assert (
        reply["error"]["code"] == "invalid_input"
        and "not a regular file" in reply["error"]["message"]
    )
    (sdir / "a.tsr").unlink()


def test_directory_named_like_an_input(sdir: Path) -> None:
    (sdir / "a.tsr").mkdir()
    reply = ask(sdir, RELU.format("a"))
    assert reply["error"]["code"] == "invalid_input"
    assert (sdir / "a.tsr").is_dir()
    (sdir / "a.tsr").rmdir()


def test_oversized_input_is_refused_before_reading(sdir: Path) -> None:
    """A header declaring 1 TB in a small file is refused on its size, nothing allocated."""
    head = bytearray(tsr.to_bytes(torch.ones(1).numpy()))
    (sdir / "a.tsr").write_bytes(bytes(head[:64]) + b"\0" * 400_000)  # over the 300 kB limit
    reply = ask(sdir, RELU.format("a"))
    assert reply["error"]["code"] == "input_too_large"
    assert not (sdir / "a.tsr").exists()


def test_session_dir_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "python_session" / "tr_session_x"
    link.parent.mkdir()
    os.symlink(real, link)
    out = subprocess.run(
        [sys.executable, "-m", "tsr_worker", "--session-dir", str(link), "--no-preload"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 1 and "symbolic link" in out.stderr
    assert list(real.iterdir()) == []


def test_bad_session_id_is_a_usage_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tsr_worker", "../../escape", "--workspace", str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 2 and "session id" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_run_of_bad_requests_leaves_the_workspace_untouched(
    shared: WorkerProc, sdir: Path
) -> None:
    before = tree(outside(shared), skip=[sdir])
    for msg in [
        "matmul ../sentinel ../sentinel",
        '{"cmd": "relu", "params": "../python_session/sentinel"}',
        '{"cmd": "tensor_square"}',  # input.tsr missing: answered through the status
        json.dumps({"cmd": "add", "params": "a," + "b" * 70}),
    ]:
        if "tensor_square" in msg:
            (sdir / "request.json").write_text(msg)
            wait_for(lambda: (sdir / "status.txt").read_text().startswith("error:"), 10)
            assert (sdir / "status.txt").read_text().startswith("error:missing_input")
            assert not (sdir / "request.json").exists()
            (sdir / "status.txt").write_text("running")
            continue
        assert ask(sdir, msg)["params"] == "invalid"
    assert tree(outside(shared), skip=[sdir]) == before
