"""A real FUSE mount (bindfs) with the client on the far side: it works in the backing
directory, as a remote machine writes to the server's disk, while the worker serves the
mount point. Writes made there pass no path of this kernel that inotify sees, and the
mount caches entries and attributes for a second (bindfs' defaults), as network
filesystems do. ``scripts/setup-fuse.sh`` (run by ``scripts/test.sh``) installs bindfs;
without it, FUSE or root these tests skip and say which is missing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import tsr

from .worker_helpers import (
    WorkerProc,
    ask,
    ctx_switches,
    read_status,
    send,
    spawn,
    take_response,
    wait_for,
)


def _fuse_unavailable() -> str:
    if not sys.platform.startswith("linux"):
        return "FUSE tests run on Linux"
    if shutil.which("bindfs") is None:
        return "bindfs is not installed (scripts/setup-fuse.sh installs it as root)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse in this machine"
    if not (os.access("/dev/fuse", os.R_OK | os.W_OK) and shutil.which("fusermount")):
        return "/dev/fuse not usable (no access or no fusermount)"
    return ""


@pytest.fixture(scope="module")
def mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """``(far side, mount point)``: the backing directory and its bindfs mount."""
    reason = _fuse_unavailable()
    if reason:
        pytest.skip(reason)
    far = tmp_path_factory.mktemp("far_side")
    mnt = tmp_path_factory.mktemp("fuse_mount")
    done = subprocess.run(
        ["bindfs", str(far), str(mnt)], check=False, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        pytest.skip(f"bindfs cannot mount here: {done.stderr.strip() or done.returncode}")
    try:
        yield far, mnt
    finally:
        unmount = subprocess.run(["fusermount", "-u", str(mnt)], check=False, capture_output=True)
        if unmount.returncode:
            subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


_counter = iter(range(1_000_000))


@pytest.fixture
def pair(mount: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    """A fresh session: ``(far side's directory, worker's directory, log path)``."""
    far, mnt = mount
    name = f"tr_session_f{next(_counter)}"
    (far / name).mkdir()  # the client creates the directory
    return far / name, mnt / name, tmp_path / "worker.log"


def serve(pair: tuple[Path, Path, Path], *args: str) -> WorkerProc:
    far, near, log = pair
    w = spawn(near, "--log-level", "info", *args, log=log, wait_running=False)
    wait_for(lambda: read_status(far) == "running", what="running, seen on the far side")
    wait_for(lambda: " serving " in w.log_text(), what="the waiter chosen")
    return w


def settled(w: WorkerProc, quiet_s: float = 0.3) -> None:
    """Wait until the worker's main thread has not woken for ``quiet_s``."""
    last, since = ctx_switches(w.proc.pid), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.02)
        now = ctx_switches(w.proc.pid)
        if now != last:
            last, since = now, time.monotonic()


def leaves(w: WorkerProc, reason: str, within_s: float = 15.0) -> None:
    assert w.wait_exit(within_s) == 0, w.log_text()
    assert f"leaving: {reason}" in w.log_text(), w.log_text()


def test_fuse_mount_hides_far_side_writes_from_inotify(pair: tuple[Path, Path, Path]) -> None:
    """Why the default polls: ``--wait inotify`` warns, and misses the far side."""
    far, _, _ = pair
    send(far, '{"cmd": "hello", "params": "early"}')  # there at start: found by the first scan
    w = serve(pair, "--wait", "inotify", "--client-pid", "0")
    try:
        assert json.loads(take_response(far))["params"] == "Hello Early"
        settled(w)  # it has read its own events (its answer's) and sleeps in poll()
        send(far, '{"cmd": "hello", "params": "x"}')  # now only events would tell
        time.sleep(1.0)
        assert (far / "request.json").exists() and not (far / "response.json").exists()
        text = w.log_text()
        assert "WARNING --wait inotify on fuse" in text and "raise no inotify event" in text
    finally:
        w.kill()


def test_default_mode_serves_the_far_side(pair: tuple[Path, Path, Path]) -> None:
    """The design scenario: C++ here (the far side), the worker there, the directory
    shared; hello and tensor calls answered, each exactly once, fast."""
    far, _, _ = pair
    w = serve(pair, "--client-pid", "0", "--idle-timeout", "0")
    try:
        assert "waiting by poll: session directory on fuse (fuse;" in w.log_text()
        assert ask(far, '{"cmd": "hello", "params": "far side"}')["params"] == "Hello Far Side"
        times = []
        for i in range(30):
            start = time.perf_counter()
            assert ask(far, f'{{"cmd": "hi", "params": "n{i}"}}')["params"] == f"Hi N{i}"
            times.append(time.perf_counter() - start)
        rng = np.random.default_rng(5)
        for i in range(4):  # inputs of the same names each time: never a stale one
            a = rng.integers(-9, 9, (8, 3)).astype(np.float32)  # exact in float32
            b = rng.integers(-9, 9, (3, 5)).astype(np.float32) + i
            tsr.save(far / "a.tsr", np.zeros((8, 3), np.float32))
            tsr.save(far / "a.tsr", a)  # replaced before the request: only this one counts
            tsr.save(far / "b.tsr", b)
            reply = ask(far, '{"cmd": "matmul", "params": "a,b"}')
            assert reply["params"] == "r", reply
            np.testing.assert_array_equal(tsr.load(far / "r.tsr", mmap=False), a @ b)
            assert not (far / "a.tsr").exists() and not (far / "b.tsr").exists()
            (far / "r.tsr").unlink()
        time.sleep(0.3)
        assert not (far / "response.json").exists()  # one answer each, no late second one
        print(
            f"\nFUSE hello round trip (far-side client): p50 "
            f"{statistics.median(times) * 1000:.1f} ms, worst {max(times) * 1000:.1f} ms"
        )
        # each answer waits for the previous response to be consumed: a cached stat
        # (entry cache, 1 s) instead of an open made every round trip take ~1 s
        assert statistics.median(times) < 0.25, times
        send(far, '{"cmd": "exit"}')
        leaves(w, "exit_command")
        assert read_status(far) == "terminated"
    finally:
        w.kill()


@pytest.mark.parametrize(
    "how", ["status_exit", "exit_flag", "signal", "dir_removed", "idle_timeout", "client_gone"]
)
def test_every_exit_from_the_far_side(pair: tuple[Path, Path, Path], how: str) -> None:
    far, near, _ = pair
    args = ["--idle-timeout", "1.5" if how == "idle_timeout" else "0"]
    client = subprocess.Popen(["sleep", "60"])
    args += ["--client-pid", str(client.pid) if how == "client_gone" else "0"]
    w = serve(pair, *args)
    try:
        assert ask(far, '{"cmd": "hi", "params": "x"}')["params"] == "Hi X"
        started = time.monotonic()
        if how == "status_exit":
            with open(far / "status.txt", "w") as f:  # in place, as C++ terminate() does
                f.write("exit")
        elif how == "exit_flag":
            (far / "exit.flag").touch()
        elif how == "signal":
            w.proc.send_signal(signal.SIGTERM)
        elif how == "dir_removed":
            shutil.rmtree(far)
        elif how == "client_gone":
            client.kill()
        leaves(w, how)
        took = time.monotonic() - started
        assert took < (1.5 if how != "idle_timeout" else 4.0), took
        if how == "dir_removed":
            assert not far.exists() and not near.exists()  # never re-created
        else:
            assert read_status(far) == "terminated"
    finally:
        client.kill()
        client.wait()
        w.kill()


FAR_CLIENT = """
import json, os, sys, time
d = sys.argv[1]
def send(msg):
    with open(os.path.join(d, "request.tmp"), "w") as f:
        f.write(msg)
    os.replace(os.path.join(d, "request.tmp"), os.path.join(d, "request.json"))
def status():
    try:
        return open(os.path.join(d, "status.txt")).read()
    except FileNotFoundError:
        return ""
while status() != "running":
    time.sleep(0.001)
send('{"cmd": "hi", "params": "one"}')
while not os.path.exists(os.path.join(d, "response.json")):
    time.sleep(0.001)
print(json.loads(open(os.path.join(d, "response.json")).read())["params"], flush=True)
os.remove(os.path.join(d, "response.json"))
send('{"cmd": "hi", "params": "two"}')
os._exit(0)  # dies with its second answer unread
"""


@pytest.mark.parametrize("watched", [True, False])
def test_far_side_client_that_dies(
    pair: tuple[Path, Path, Path], tmp_path: Path, watched: bool
) -> None:
    """The client dies mid-session, its last answer unread. Watched (a launcher beside
    the worker gave its pid): the worker leaves at once; not watchable (truly on another
    machine): the idle time-out ends it."""
    far, _, _ = pair
    script = tmp_path / "far_client.py"
    script.write_text(FAR_CLIENT)
    client = subprocess.Popen(
        [sys.executable, str(script), str(far)], stdout=subprocess.PIPE, text=True
    )
    args = ["--client-pid", str(client.pid)] if watched else ["--client-pid", "0"]
    args += ["--idle-timeout", "0" if watched else "2"]
    w = serve(pair, *args)
    try:
        out, _ = client.communicate(timeout=20)
        assert out.strip() == "Hi One"
        leaves(w, "client_gone" if watched else "idle_timeout")
        assert read_status(far) == "terminated"
        if watched:  # it may leave before or after serving the dead client's last request
            answered = (far / "response.json").exists()
            assert answered is not (far / "request.json").exists()
        else:
            assert json.loads((far / "response.json").read_text())["params"] == "Hi Two"
            assert not (far / "request.json").exists()
    finally:
        client.kill()
        w.kill()


def test_pending_answer_dropped_when_client_dies_before_consuming(
    pair: tuple[Path, Path, Path],
) -> None:
    """A dead far side leaves its response unread and a new request: the worker waits
    for the consumption that never comes, and still leaves on the idle time-out."""
    far, _, _ = pair
    w = serve(pair, "--client-pid", "0", "--idle-timeout", "2")
    try:
        send(far, '{"cmd": "hi", "params": "a"}')
        wait_for((far / "response.json").exists)
        wait_for(lambda: not (far / "request.json").exists())
        send(far, '{"cmd": "hi", "params": "b"}')  # and the client is gone
        leaves(w, "idle_timeout")
        assert "answer undelivered" in w.log_text()
        assert json.loads((far / "response.json").read_text())["params"] == "Hi A"
    finally:
        w.kill()


def _header_and_half(x: np.ndarray) -> tuple[bytes, bytes]:
    data = tsr.to_bytes(x)
    cut = 64 + (len(data) - 64) // 2
    return data[:cut], data[cut:]


def test_input_shorter_than_its_header_is_read_again(pair: tuple[Path, Path, Path]) -> None:
    """The far side's data arrives after its request (a rename visible before the data,
    attributes cached): the worker reads again for a bounded moment and answers right."""
    far, _, _ = pair
    w = serve(pair, "--client-pid", "0", "--idle-timeout", "0", "--commands",
              str(Path(__file__).with_name("plugin_commands.py")))  # fmt: skip
    try:
        x = np.arange(4096, dtype=np.float32).reshape(64, 64)
        head, rest = _header_and_half(x)
        with open(far / "x.tsr", "wb") as f:
            f.write(head)
            f.flush()
            send(far, '{"cmd": "relu", "params": "x"}')
            time.sleep(0.4)  # the worker has found it short by now
            f.write(rest)
        reply = json.loads(take_response(far))
        assert reply["params"] == "r", (reply, w.log_text())
        np.testing.assert_array_equal(tsr.load(far / "r.tsr", mmap=False), x)
        # truly short: invalid_input, once, after the bounded re-check
        (far / "x.tsr").write_bytes(head)
        start = time.monotonic()
        reply = ask(far, '{"cmd": "relu", "params": "x"}')
        took = time.monotonic() - start
        assert (
            reply["error"]["code"] == "invalid_input"
            and "(after 3.0 s)" in reply["error"]["message"]
        ), reply
        assert 2.5 < took < 10, took
        time.sleep(0.3)
        assert not (far / "response.json").exists() and not (far / "x.tsr").exists()
    finally:
        (far / "exit.flag").touch()
        w.wait_exit(10)
        w.kill()


def test_local_short_input_is_invalid_at_once(tmp_path: Path) -> None:
    """The contrast on a local filesystem: the client wrote its inputs before the request,
    so a short one is short (no re-check, no delay)."""
    d = tmp_path / "s"
    w = spawn(d, "--client-pid", "0", "--wait", "poll")
    try:
        head, _ = _header_and_half(np.ones((64, 64), np.float32))
        (d / "x.tsr").write_bytes(head)
        reply = ask(d, '{"cmd": "relu", "params": "x"}')
        assert reply["error"]["code"] == "invalid_input", reply
        assert "truncated" in reply["error"]["message"]
        assert " s)" not in reply["error"]["message"]  # not re-checked
    finally:
        (d / "exit.flag").touch()
        w.wait_exit(10)
        w.kill()


def test_saves_on_the_mount_stay_atomic(mount: tuple[Path, Path]) -> None:
    """A save over a file on the mount: a reader on the far side sees the old file or the
    new one, whole, never a mixture or a short one; no temporary file is left."""
    far, mnt = mount
    (far / "atomic").mkdir()
    versions = [np.full((256, 256), float(i), np.float32) for i in range(8)]
    tsr.save(mnt / "atomic" / "t.tsr", versions[0])
    stop = threading.Event()
    seen: list[float] = []
    bad: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                y = tsr.load(far / "atomic" / "t.tsr", mmap=False)
            except FileNotFoundError:
                bad.append("missing")
                continue
            except tsr.TSRError as exc:
                bad.append(str(exc))
                continue
            if not (y == y.flat[0]).all():
                bad.append("mixed")
            seen.append(float(y.flat[0]))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(5):
            for v in versions:
                tsr.save(mnt / "atomic" / "t.tsr", v)
    finally:
        stop.set()
        t.join(10)
    assert not bad, bad[:5]
    assert seen and set(seen) <= {float(i) for i in range(8)}
    assert sorted(p.name for p in (far / "atomic").iterdir()) == ["t.tsr"]


def test_a_mount_over_the_session_path_is_the_directory_going_away(tmp_path: Path) -> None:
    """Event-driven on a local directory; then something is mounted over its path: the
    path no longer leads to the directory the worker serves, and it leaves (the mount
    table's change wakes it: inotify says nothing of mounts)."""
    reason = _fuse_unavailable()
    if reason:
        pytest.skip(reason)
    d, other = tmp_path / "s", tmp_path / "other"
    other.mkdir()
    w = spawn(d, "--client-pid", "0", "--idle-timeout", "0", "--log-level", "info")
    mounted = False
    try:
        assert ask(d, '{"cmd": "hi", "params": "x"}')["params"] == "Hi X"
        assert "waiting by inotify" in w.log_text()
        settled(w)
        done = subprocess.run(
            ["bindfs", "-o", "nonempty", str(other), str(d)], check=False, capture_output=True
        )
        mounted = done.returncode == 0
        assert mounted, done.stderr
        leaves(w, "dir_removed", within_s=10)
        assert list(other.iterdir()) == []  # nothing written through the new mount
    finally:
        w.kill()
        if mounted:
            subprocess.run(["fusermount", "-u", str(d)], check=False, capture_output=True)
