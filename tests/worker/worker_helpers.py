"""Helpers for the worker tests: start real worker processes, speak the file protocol raw."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "plugin_commands.py"
"""Extra commands for the tests, loaded with ``--commands``."""

DEADLINE_S = 20.0


def wait_for(check: Callable[[], bool], timeout_s: float = DEADLINE_S, what: str = "") -> float:
    """Poll ``check`` every 0.5 ms until true; return the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or check}")
        time.sleep(0.0005)
    return time.monotonic() - start


def read_status(d: Path) -> str:
    try:
        return (d / "status.txt").read_text().strip()
    except FileNotFoundError:
        return ""


@dataclass
class WorkerProc:
    """A worker subprocess serving ``dir``; stderr goes to ``log``."""

    proc: subprocess.Popen[bytes]
    dir: Path
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_exit(self, timeout_s: float = DEADLINE_S) -> int:
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def spawn(
    session_dir: Path,
    *args: str,
    log: Path | None = None,
    wait_running: bool = True,
    preload: bool = False,
    env: dict[str, str] | None = None,
) -> WorkerProc:
    """Start ``python -m tsr_worker --session-dir DIR ARGS`` and wait for ``running``."""
    session_dir.parent.mkdir(parents=True, exist_ok=True)
    log = log or session_dir.parent / f"{session_dir.name}.log"
    cmd = [sys.executable, "-m", "tsr_worker", "--session-dir", str(session_dir), *args]
    if not preload:
        cmd.append("--no-preload")
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=err, env=env)
    w = WorkerProc(proc, session_dir, log)
    if wait_running:
        try:
            wait_for(lambda: read_status(session_dir) in ("running", "ready"), what="running")
        except AssertionError:
            w.kill()
            raise AssertionError(f"worker did not start: {w.log_text()}") from None
    return w


def send(d: Path, msg: str | bytes) -> None:
    """Write a request as the C++ client does (request.tmp renamed to request.json)."""
    data = msg.encode() if isinstance(msg, str) else msg
    (d / "request.tmp").write_bytes(data)
    os.replace(d / "request.tmp", d / "request.json")


def take_response(d: Path, timeout_s: float = DEADLINE_S) -> str:
    """Wait for response.json, read and delete it (read then burn); return its text."""
    path = d / "response.json"
    wait_for(path.exists, timeout_s, f"{path}")
    text = path.read_bytes().decode("utf-8")
    path.unlink()
    return text


def ask(d: Path, msg: str | bytes, timeout_s: float = DEADLINE_S) -> dict[str, Any]:
    """Send a request and return the parsed response."""
    wait_for(lambda: not (d / "request.json").exists(), timeout_s, "request.json gone")
    send(d, msg)
    reply: dict[str, Any] = json.loads(take_response(d, timeout_s))
    return reply


def tree(root: Path, skip: Sequence[Path] = ()) -> dict[str, tuple[int, int, bytes]]:
    """Every entry under ``root`` (not following links), with mode, size and content,
    except those under ``skip``."""
    out: dict[str, tuple[int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        if any(base == s or s in base.parents for s in skip):
            dirnames.clear()
            continue
        for name in dirnames + filenames:
            p = base / name
            st = p.lstat()
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, data)
    return out


def ctx_switches(pid: int) -> int:
    """Voluntary context switches of a process's main thread (each wake-up from a sleep)."""
    text = Path(f"/proc/{pid}/task/{pid}/status").read_text()
    for line in text.splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


@contextlib.contextmanager
def serving(config: Any, **kwargs: Any) -> Iterator[Any]:
    """An in-process :class:`tsr_worker.Worker` for ``config`` (``kwargs`` go to it) on a
    thread, running (waiter set up, ``running`` written) for the block; stopped after."""
    from tsr_worker import Worker

    worker = Worker(config, **kwargs)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: worker.waiter_name != "", what="worker running")
        yield worker
    finally:
        worker.stop()
        thread.join(10)


def without_directory_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on NFS: a directory itself cannot be locked, so the lock file is used."""
    from tsr_worker import sessiondir

    real = sessiondir._try_lock

    def no_directory_locks(fd: int) -> bool | None:
        return None if os.path.isdir(f"/proc/self/fd/{fd}") else real(fd)

    monkeypatch.setattr(sessiondir, "_try_lock", no_directory_locks)
