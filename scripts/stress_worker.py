#!/usr/bin/env python3
"""The reference worker under stress, driven through its files like the C++ client.

Usage (from the repository root)::

    .venv/bin/python scripts/stress_worker.py [--requests 10000] [--malformed 100]
        [--sessions 8] [--trials 5] [--scenarios steady,malformed,...] [--json FILE]

Every worker is the real entry point (``python -m tsr_worker ID --workspace WS``) in its
own process; the client side writes tensors straight into the session directory and
requests as ``request.tmp`` renamed over ``request.json``, as the C++ client does.
Scenarios (all by default):

``steady``     ``--requests`` requests back to back (hello, relu, add, matmul; results
               checked): worker RSS growth after warm-up < 5 MB, the same descriptors
               before and after, nothing left in the session directory; latency figures.
``malformed``  ``--malformed`` requests of every kind of bad request and bad input file
               (garbage, empty, non-UTF-8, wrong types, unknown command, bad tags, missing,
               truncated, garbage, reserved-dtype, 100 GB-declaring and over-limit inputs,
               a symbolic link to a file outside, a FIFO, a directory, an over-size
               request, over-long params, a request half-written in place, request.json
               as a link or a directory, a directory where the result goes, ...): each
               answered exactly once with its error code; the worker alive and serving.
``parallel``   ``--sessions`` workers served in parallel by as many client threads.
``kill_client`` the client process killed with SIGKILL mid-request, ``--trials`` times:
               the worker notices and exits, leaving no temporary file.
``dir_removed`` the session directory deleted mid-run, ``--trials`` times: the worker exits
               and never re-creates it.
``limits``     a 100 GB sparse input, a sparse 1 GB ``request.json``, over-long params, too
               many tags: each refused with its code in milliseconds, RSS unchanged.

Throughout, canary files outside every session directory (in the workspace, the layout
directory, a sibling session, beside the workspace; one is the target of the planted
link) are watched with inotify (any open, read, write or delete is a failure) and
checked at the end (bytes, inode, mtime, and atime, set older than mtime so that any read
would update it). Prints a JSON summary; exit status 1 if anything failed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import math
import os
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import tsr  # noqa: E402

LAYOUT = "python_session"
ANSWER_TIMEOUT_S = 30.0
RSS_GROWTH_LIMIT_KB = 5 * 1024
HEADER = struct.Struct("<4siiiii4iqqq")


# ----------------------------------------------------------------------------- processes


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> list[str]:
    """What the process's descriptors point to (sorted)."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return sorted(out)


def stable_fds(fds: list[str]) -> list[str]:
    """Descriptors minus anonymous ones whose inode numbers change (pipes, inotify)."""
    return sorted(f.split(":[")[0] if ":[" in f else f for f in fds)


class WorkerProc:
    """One worker process on one session directory of ``workspace``."""

    def __init__(
        self,
        workspace: Path,
        session_id: str,
        *,
        extra: list[str] | None = None,
        client_pid: int | None = None,
        log: Path | None = None,
    ) -> None:
        self.dir = workspace / LAYOUT / f"tr_session_{session_id}"
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "tsr_worker", session_id, "--workspace", str(workspace),
            "--idle-timeout", "0", "--client-pid", str(client_pid or os.getpid()),
            "--wait", "inotify", *(extra or []),
        ]  # fmt: skip
        self.log_path = log or (workspace / f"worker-{session_id}.log")
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=self._log, env=env, cwd=REPO)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 60
        status = self.dir / "status.txt"
        while not (status.exists() and status.read_text() == "running"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.005)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        if self.alive():
            with contextlib.suppress(OSError):
                (self.dir / "exit.flag").write_bytes(b"")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Client:
    """The C++ client's file operations on one session directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.latencies: list[float] = []

    def put(self, tag: str, data: bytes) -> None:
        """``send_tensor``: a plain write straight into ``<tag>.tsr``."""
        with open(self.dir / f"{tag}.tsr", "wb") as f:
            f.write(data)

    def send(self, request: bytes) -> None:
        tmp = self.dir / "request.tmp"
        tmp.write_bytes(request)
        os.replace(tmp, self.dir / "request.json")

    def wait_response(self, timeout_s: float = ANSWER_TIMEOUT_S) -> str:
        path = self.dir / "response.json"
        deadline = time.monotonic() + timeout_s
        delay = 0.00005
        while True:
            try:
                text = path.read_bytes()
            except FileNotFoundError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no response in {timeout_s} s") from None
                time.sleep(delay)
                delay = min(2 * delay, 0.001)
                continue
            path.unlink()
            return text.decode("ascii")

    def request(self, request: bytes, timeout_s: float = ANSWER_TIMEOUT_S) -> dict[str, Any]:
        start = time.perf_counter()
        self.send(request)
        text = self.wait_response(timeout_s)
        self.latencies.append(time.perf_counter() - start)
        obj: dict[str, Any] = json.loads(text)
        return obj


def req(cmd: str, params: str | None = None) -> bytes:
    if params is None:
        return json.dumps({"cmd": cmd}).encode()
    return json.dumps({"cmd": cmd, "params": params}).encode()


def f32(shape: tuple[int, ...], value: float = 1.5) -> bytes:
    return tsr.to_bytes(np.full(shape, value, np.float32))


def latency_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ms = sorted(v * 1000 for v in values)
    return {
        "n": len(ms),
        "p50": round(statistics.median(ms), 3),
        "p90": round(ms[int(0.9 * (len(ms) - 1))], 3),
        "p99": round(ms[int(0.99 * (len(ms) - 1))], 3),
        "max": round(ms[-1], 3),
    }


# ----------------------------------------------------------------------------- canaries

IN_ACCESS, IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x1, 0x2, 0x4, 0x8
IN_OPEN, IN_MOVED_FROM, IN_DELETE = 0x20, 0x40, 0x200
WATCH_MASK = (
    IN_ACCESS | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_OPEN | IN_MOVED_FROM | IN_DELETE
)
EVENT = struct.Struct("iIII")


class Canaries:
    """Files outside every session directory, watched with inotify and checked at the
    end: nothing may open, read, change or delete them."""

    def __init__(self, root: Path, workspace: Path) -> None:
        sibling = workspace / LAYOUT / "tr_session_sibling"
        sibling.mkdir(parents=True, exist_ok=True)
        self.files = {
            "workspace": workspace / "canary.tsr",
            "layout_dir": workspace / LAYOUT / "canary.txt",
            "sibling_session": sibling / "a.tsr",
            "beside_workspace": root / "secret.tsr",
        }
        for name, path in self.files.items():
            path.write_bytes(f32((2, 2)) if path.suffix == ".tsr" else f"canary {name}\n".encode())
        self.link_target = self.files["beside_workspace"]
        self.before = {n: self._facts(p, set_atime=True) for n, p in self.files.items()}
        self.events: list[str] = []
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.watches: dict[int, Path] = {}
        names = {p.name for p in self.files.values()}
        self.names = names
        for directory in {p.parent for p in self.files.values()}:
            wd = libc.inotify_add_watch(self.fd, os.fsencode(directory), WATCH_MASK)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
            self.watches[wd] = directory

    @staticmethod
    def _facts(path: Path, *, set_atime: bool = False) -> tuple[str, int, int, int]:
        """(sha256, inode, mtime, atime), the times taken before our own read."""
        if set_atime:  # atime older than mtime: any read updates it, even under relatime
            st = path.stat()
            os.utime(path, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
        st = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if set_atime:
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # undo our own read
        return digest, st.st_ino, st.st_mtime_ns, st.st_atime_ns

    def drain(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            pos = 0
            while pos < len(data):
                wd, mask, _cookie, length = EVENT.unpack_from(data, pos)
                name = data[pos + EVENT.size : pos + EVENT.size + length].rstrip(b"\0").decode()
                pos += EVENT.size + length
                if name in self.names:
                    self.events.append(f"{self.watches.get(wd)}/{name}: mask {mask:#x}")

    def check(self) -> list[str]:
        """Problems found (events seen, facts changed); closes the watch first."""
        self.drain()
        os.close(self.fd)
        problems = [f"inotify: {e}" for e in self.events]
        for name, path in self.files.items():
            if not path.exists():
                problems.append(f"canary {name} deleted")
                continue
            now = self._facts(path)
            was = self.before[name]
            for label, a, b in zip(("content", "inode", "mtime", "atime"), was, now, strict=True):
                if a != b:
                    problems.append(f"canary {name}: {label} changed")
        return problems


# ----------------------------------------------------------------------------- scenarios


@dataclass
class Result:
    name: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def fail(self, message: str) -> None:
        self.ok = False
        if len(self.problems) < 50:
            self.problems.append(message)


def session_leftovers(directory: Path, allowed: set[str]) -> list[str]:
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name not in allowed)


def steady(ws: Path, n: int, res: Result) -> None:
    w = WorkerProc(ws, "steady")
    c = Client(w.dir)
    a, b = np.full((4, 3), 1.5, np.float32), np.full((3, 5), 2.0, np.float32)
    small = np.arange(-6, 6, dtype=np.float32).reshape(3, 4)
    mix: list[tuple[bytes, dict[str, bytes], Callable[[dict[str, Any]], bool]]] = [
        (req("hello", "world"), {}, lambda r: r["params"] == "Hello World"),
        (req("relu", "x"), {"x": tsr.to_bytes(small)},
         lambda r: np.array_equal(tsr.load(w.dir / "r.tsr"), np.maximum(small, 0))),
        (req("add", "a,a"), {"a": tsr.to_bytes(a)},
         lambda r: np.array_equal(tsr.load(w.dir / "r.tsr"), a + a)),
        (req("matmul", "a,b"), {"a": tsr.to_bytes(a), "b": tsr.to_bytes(b)},
         lambda r: np.array_equal(tsr.load(w.dir / "r.tsr"), np.full((4, 5), 9.0, np.float32))),
    ]  # fmt: skip
    warmup = min(500, n // 10)
    rss: dict[str, int] = {"start": rss_kb(w.pid)}
    fds_before: list[str] = []
    start = time.monotonic()
    for i in range(n):
        if i == warmup:
            rss["after_warmup"] = rss_kb(w.pid)
            fds_before = open_fds(w.pid)
            c.latencies.clear()
        request, files, check = mix[i % len(mix)]
        for tag, data in files.items():
            c.put(tag, data)
        reply = c.request(request)
        if "error" in reply or not check(reply):
            res.fail(f"request {i} {request!r}: {reply}")
    elapsed = time.monotonic() - start
    rss["end"] = rss_kb(w.pid)
    fds_after = open_fds(w.pid)
    growth = rss["end"] - rss["after_warmup"]
    if growth >= RSS_GROWTH_LIMIT_KB:
        res.fail(f"RSS grew by {growth} kB after warm-up")
    if stable_fds(fds_before) != stable_fds(fds_after):
        res.fail(f"descriptors changed: {fds_before} -> {fds_after}")
    left = session_leftovers(w.dir, {"status.txt", "r.tsr"})
    if left:
        res.fail(f"left in the session directory: {left}")
    if not w.alive():
        res.fail("worker died")
    listing = sorted(p.name for p in w.dir.iterdir())
    w.stop()
    res.figures = {
        "requests": n,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(n / elapsed, 1),
        "rss_kb": rss,
        "rss_growth_after_warmup_kb": growth,
        "fds": {"after_warmup": len(fds_before), "end": len(fds_after), "list": fds_after},
        "latency_ms": latency_ms(c.latencies),
        "session_dir_at_end": listing,
    }


def malformed_kinds(outside: Path) -> dict[str, tuple[str, Callable[[Client], bytes | None]]]:
    """Every kind of bad request: name -> (expected error code, setup returning the
    request bytes, or None when the setup wrote request.json itself)."""
    good = f32((3, 4))
    big = HEADER.pack(b"TSR!", 1, 64, 0, 1, 4, 1000, 1000, 1000, 25, 25 * 10**9, 0, 0)

    def files(request: bytes, **tensors: bytes) -> Callable[[Client], bytes]:
        def setup(c: Client) -> bytes:
            for tag, data in tensors.items():
                c.put(tag, data)
            return request

        return setup

    def link(c: Client) -> bytes:
        os.symlink(outside, c.dir / "s.tsr")
        return req("relu", "s")

    def fifo(c: Client) -> bytes:
        os.mkfifo(c.dir / "p.tsr")
        return req("relu", "p")

    def directory(c: Client) -> bytes:
        (c.dir / "d.tsr").mkdir()
        return req("relu", "d")

    def sparse_100gb(c: Client) -> bytes:
        with open(c.dir / "a.tsr", "wb") as f:
            f.write(big)
            f.truncate(64 + 100 * 10**9)
        return req("relu", "a")

    def request_symlink(c: Client) -> None:
        os.symlink(outside, c.dir / "request.json")  # a link planted as request.json

    def request_directory(c: Client) -> None:
        (c.dir / "request.json").mkdir()

    def result_name_taken(c: Client) -> bytes:
        c.put("a", good)
        (c.dir / "r.tsr").mkdir()  # where the result goes
        return req("relu", "a")

    def half_written_garbage(c: Client) -> None:
        with open(c.dir / "request.json", "wb") as f:  # in place, never completed
            f.write(b'{"cmd": "relu", "par')

    return {
        "garbage_json": ("bad_request", files(b'{"cmd": "relu", "params": ')),
        "empty": ("empty_request", files(b"")),
        "whitespace": ("empty_request", files(b" \n\t ")),
        "not_utf8": ("bad_request", files(b'{"cmd": "\xff\xfe"}')),
        "json_array": ("bad_request", files(b'["relu", "a"]')),
        "cmd_not_string": ("bad_request", files(b'{"cmd": 42}')),
        "params_not_string": ("bad_request", files(b'{"cmd": "relu", "params": ["a"]}')),
        "deeply_nested": ("bad_request", files(b"{" + b'"a":[' * 400 + b"]" * 400 + b"}")),
        "unknown_command": ("unknown_command", files(req("frobnicate", "a"))),
        "bad_tag_parent": ("bad_tag", files(req("relu", "../../outside"))),
        "bad_tag_absolute": ("bad_tag", files(req("relu", "/etc/passwd"))),
        "bad_tag_hidden": ("bad_tag", files(req("relu", ".hidden"))),
        "missing_input": ("missing_input", files(req("relu", "nothere"))),
        "wrong_input_count": ("wrong_input_count", files(req("matmul", "a"), a=good)),
        "truncated_input": ("invalid_input", files(req("relu", "a"), a=good[:-3])),
        "trailing_bytes_input": ("invalid_input", files(req("relu", "a"), a=good + b"\0")),
        "garbage_input": ("invalid_input", files(req("relu", "a"), a=b"\x00" * 100)),
        "bad_magic_input": ("invalid_input", files(req("relu", "a"), a=b"TSR?" + good[4:])),
        "reserved_dtype_input": ("invalid_input", files(
            req("relu", "a"), a=tsr.to_bytes(np.ones(3), reserved_dtypes=True))),
        "declares_100GB_64B_file": ("invalid_input", files(req("relu", "a"), a=big)),
        "sparse_100GB_input": ("input_too_large", sparse_100gb),
        "symlink_to_outside": ("invalid_input", link),
        "fifo_input": ("invalid_input", fifo),
        "directory_input": ("invalid_input", directory),
        "computation_fails": ("computation_failed", files(req("matmul", "a,a"), a=good)),
        "unsafe_reply_text": ("unsafe_reply", files(req("hello", 'a "quote"'))),
        "request_too_large": ("request_too_large", files(req("hello", "x" * 70_000))),
        "params_too_long": ("params_too_long", files(req("hello", "x" * 5000))),
        "half_written_never_completed": ("bad_request", half_written_garbage),
        "request_is_symlink_to_outside": ("bad_request", request_symlink),
        "request_is_directory": ("bad_request", request_directory),
        "result_name_is_directory": ("result_unwritable", result_name_taken),
    }  # fmt: skip


QUIET_S = 0.002
"""After each answer, how long to watch for a second one before cleaning up."""


def malformed(
    ws: Path, per_kind: int, outside: Path, res: Result, exclude: frozenset[str] = frozenset()
) -> None:
    w = WorkerProc(ws, "malformed")
    c = Client(w.dir)
    c.put("x", f32((2,)))
    c.request(req("relu", "x"))  # warm: torch loaded
    c.latencies.clear()
    kinds = {k: v for k, v in malformed_kinds(outside).items() if k not in exclude}
    seen: Counter[str] = Counter()
    duplicates: Counter[str] = Counter()
    order = [k for k in kinds for _ in range(per_kind)]
    random.Random(5).shuffle(order)
    start = time.monotonic()
    for i, kind in enumerate(order):
        code, setup = kinds[kind]
        for p in w.dir.iterdir():  # a clean directory, as after the previous request
            if p.name not in ("status.txt",):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        request = setup(c)
        t0 = time.perf_counter()
        try:
            if request is not None:
                c.send(request)
            reply = json.loads(c.wait_response())
        except (TimeoutError, ValueError) as exc:
            res.fail(f"{kind} #{i}: no valid answer: {exc}")
            continue
        c.latencies.append(time.perf_counter() - t0)
        got = (reply.get("error") or {}).get("code")
        seen[f"{kind}={got}"] += 1
        if reply.get("params") != "invalid" or got != code:
            res.fail(f"{kind}: expected {code}, got {reply}")
        quiet_until = time.monotonic() + QUIET_S
        while time.monotonic() < quiet_until:  # exactly one answer per request
            with contextlib.suppress(FileNotFoundError):
                (w.dir / "response.json").unlink()
                duplicates[kind] += 1
                res.fail(f"{kind}: a second answer to one request")
            time.sleep(0.0002)
    # one good request afterwards: alive and serving, and exactly one answer each
    time.sleep(0.2)
    if (w.dir / "response.json").exists():
        res.fail("an extra response appeared")
    half_ok = half_written_then_completed(c, res)
    for p in w.dir.iterdir():
        if p.name != "status.txt":
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    c.put("x", f32((2, 2), -1.0))
    reply = c.request(req("relu", "x"))
    if "error" in reply or not np.array_equal(tsr.load(w.dir / "r.tsr"), np.zeros((2, 2))):
        res.fail(f"worker not serving after the malformed requests: {reply}")
    if not w.alive():
        res.fail("worker died")
    status = (w.dir / "status.txt").read_text()
    res.figures = {
        "kinds": len(kinds),
        "per_kind": per_kind,
        "requests": len(order),
        "seconds": round(time.monotonic() - start, 2),
        "answers": dict(sorted(seen.items())),
        "duplicate_answers": dict(sorted(duplicates.items())),
        "excluded_kinds": sorted(exclude),
        "half_written_then_completed_ok": half_ok,
        "latency_ms": latency_ms(c.latencies),
        "worker_alive": w.alive(),
        "status": status,
    }
    w.stop()


def half_written_then_completed(c: Client, res: Result, trials: int = 20) -> int:
    """A request written in place in two parts 30 ms apart gets the full request's answer."""
    ok = 0
    for _ in range(trials):
        with open(c.dir / "request.json", "wb") as f:
            f.write(b'{"cmd": "hello", "par')
            f.flush()
            time.sleep(0.03)
            f.write(b'ams": "world"}')
        reply = json.loads(c.wait_response())
        if reply.get("params") == "Hello World":
            ok += 1
        else:
            res.fail(f"half-written request answered {reply}")
    return ok


def parallel(ws: Path, sessions: int, per_session: int, res: Result) -> None:
    workers = [WorkerProc(ws, f"par{i}") for i in range(sessions)]
    errors: list[str] = []
    lat: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(sessions + 1)

    def drive(i: int, w: WorkerProc) -> None:
        c = Client(w.dir)
        x = np.arange(12, dtype=np.float32).reshape(3, 4) * (i + 1)
        c.put("a", f32((2,)))
        c.request(req("relu", "a"))  # warm: torch loaded
        c.latencies.clear()
        barrier.wait()
        for k in range(per_session):
            c.put("a", tsr.to_bytes(x + k))
            c.put("b", tsr.to_bytes(x.T.copy()))
            reply = c.request(req("matmul", "a,b"))
            if "error" in reply:
                errors.append(f"session {i}: {reply}")
                continue
            got = tsr.load(w.dir / "r.tsr", mmap=False)
            if not np.allclose(got, (x + k) @ x.T):
                errors.append(f"session {i} request {k}: wrong result")
        with lock:
            lat.extend(c.latencies)

    threads = [threading.Thread(target=drive, args=(i, w)) for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    barrier.wait()  # every worker warm: measure from here
    start = time.monotonic()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    for e in errors[:20]:
        res.fail(e)
    for i, w in enumerate(workers):
        if not w.alive():
            res.fail(f"worker {i} died")
        w.stop()
    res.figures = {
        "sessions": sessions,
        "requests": sessions * per_session,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(sessions * per_session / elapsed, 1),
        "latency_ms": latency_ms(lat),
    }


CLIENT = r"""
import json, os, sys, time, subprocess
ws, sid = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.environ["TSR_STRESS_REPO"])
from scripts.stress_worker import WorkerProc, Client, req, f32
from pathlib import Path
w = WorkerProc(Path(ws), sid, client_pid=os.getpid())
c = Client(w.dir)
for _ in range(3):  # warm: torch loaded, requests flowing
    c.put("a", f32((300, 300)))
    c.put("b", f32((300, 300)))
    c.request(req("matmul", "a,b"))
print(w.pid, flush=True)
while True:
    c.put("a", f32((300, 300)))
    c.put("b", f32((300, 300)))
    c.request(req("matmul", "a,b"))
"""


def kill_client(ws: Path, trials: int, res: Result) -> None:
    exits: list[float] = []
    rng = random.Random(9)
    env = {**os.environ, "TSR_STRESS_REPO": str(REPO)}
    for t in range(trials):
        sid = f"killed{t}"
        client = subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(ws), sid], stdout=subprocess.PIPE, env=env,
            cwd=REPO, start_new_session=True,
        )  # fmt: skip
        assert client.stdout is not None
        pid = int(client.stdout.readline())
        time.sleep(rng.uniform(0.01, 0.3))  # requests in flight
        client.send_signal(signal.SIGKILL)
        client.wait()
        killed = time.monotonic()
        while _pid_running(pid) and time.monotonic() - killed < 20:
            time.sleep(0.01)
        if _pid_running(pid):
            res.fail(f"trial {t}: worker {pid} still running 20 s after its client died")
            os.kill(pid, signal.SIGKILL)
            continue
        exits.append(time.monotonic() - killed)
        directory = ws / LAYOUT / f"tr_session_{sid}"
        temps = [p.name for p in directory.iterdir() if "tmp" in p.name]
        if temps:
            res.fail(f"trial {t}: temporary files left: {temps}")
        status = (directory / "status.txt").read_text()
        if status != "terminated":
            res.fail(f"trial {t}: final status {status!r}")
        shutil.rmtree(directory)
    res.figures = {
        "trials": trials,
        "worker_exit_after_client_kill_s": {
            "median": round(statistics.median(exits), 3) if exits else None,
            "max": round(max(exits), 3) if exits else None,
        },
    }


def _pid_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def dir_removed(ws: Path, trials: int, res: Result) -> None:
    exits: list[float] = []
    for t in range(trials):
        w = WorkerProc(ws, f"removed{t}")
        c = Client(w.dir)
        stop = threading.Event()

        c.put("a", f32((64, 64)))
        c.request(req("relu", "a"))  # warm: torch loaded, the loop steady

        def drive(c: Client = c, stop: threading.Event = stop) -> None:
            with contextlib.suppress(OSError, TimeoutError, ValueError):
                while not stop.is_set():
                    c.put("a", f32((64, 64)))
                    c.request(req("relu", "a"), timeout_s=2)

        th = threading.Thread(target=drive)
        th.start()
        time.sleep(0.05 + 0.1 * t)
        shutil.rmtree(w.dir, ignore_errors=True)
        while w.dir.exists():  # the client thread may have re-created a file in between
            shutil.rmtree(w.dir, ignore_errors=True)
        removed = time.monotonic()
        stop.set()
        try:
            w.proc.wait(10)
            exits.append(time.monotonic() - removed)
        except subprocess.TimeoutExpired:
            res.fail(f"trial {t}: worker still running 10 s after its directory went")
        th.join()
        time.sleep(0.2)
        if w.dir.exists():
            res.fail(f"trial {t}: the session directory was re-created")
        w.stop()
    res.figures = {
        "trials": trials,
        "worker_exit_after_removal_s": {
            "median": round(statistics.median(exits), 3) if exits else None,
            "max": round(max(exits), 3) if exits else None,
        },
    }


def limits(ws: Path, res: Result) -> None:
    """Each breach refused with its own code before any allocation: RSS unchanged."""
    max_input = 1 << 20
    w = WorkerProc(ws, "limits", extra=["--max-input-bytes", str(max_input),
                                        "--max-params-chars", "64", "--max-inputs", "2",
                                        "--max-request-bytes", "1024"])  # fmt: skip
    c = Client(w.dir)
    c.put("x", f32((2,)))
    c.request(req("relu", "x"))  # warm: torch loaded
    base = rss_kb(w.pid)
    figures: dict[str, Any] = {"rss_kb_before": base}

    def probe(name: str, code: str, setup: Callable[[], bytes | None]) -> None:
        request = setup()
        t0 = time.perf_counter()
        if request is not None:
            c.send(request)
        reply = json.loads(c.wait_response())
        ms = (time.perf_counter() - t0) * 1000
        got = (reply.get("error") or {}).get("code")
        figures[name] = {"code": got, "ms": round(ms, 2), "rss_kb": rss_kb(w.pid)}
        if got != code:
            res.fail(f"{name}: expected {code}, got {reply}")
        if rss_kb(w.pid) - base > 2048:
            res.fail(f"{name}: RSS grew by {rss_kb(w.pid) - base} kB")

    def sparse_input(size: int) -> Callable[[], bytes]:
        def setup() -> bytes:
            n = size - 64  # INT8 elements
            dims = (1, 1, 1, n) if n < 2**31 else (1, 1, n // 10**9, 10**9)
            head = HEADER.pack(b"TSR!", 1, 64, 0, 2, 4, *dims, math.prod(dims), 0, 0)
            with open(w.dir / "a.tsr", "wb") as f:
                f.write(head)
                f.truncate(size)
            return req("relu", "a")

        return setup

    def sparse_request() -> None:
        with open(w.dir / "request.tmp", "wb") as f:
            f.write(b'{"cmd": "hello", "params": "')
            f.truncate(1 << 30)
        os.replace(w.dir / "request.tmp", w.dir / "request.json")

    probe("input_100GB_sparse", "input_too_large", sparse_input(100 * 10**9))
    probe("input_limit_plus_1", "input_too_large", sparse_input(max_input + 1))
    probe("request_1GB_sparse", "request_too_large", sparse_request)
    probe("params_65_chars", "params_too_long", lambda: req("hello", "p" * 65))
    probe("three_tags_limit_2", "wrong_input_count", lambda: req("add", "a,b,c"))
    # at the limit exactly: accepted (an INT8 tensor of max_input - 64 elements)
    sparse_input(max_input)()
    reply = c.request(req("relu", "a"))
    figures["input_at_limit"] = {"code": (reply.get("error") or {}).get("code")}
    if "error" in reply:
        res.fail(f"an input of exactly the limit was refused: {reply}")
    figures["rss_kb_after"] = rss_kb(w.pid)
    if not w.alive():
        res.fail("worker died")
    w.stop()
    res.figures = figures


# ----------------------------------------------------------------------------- main

SCENARIOS = ("steady", "malformed", "parallel", "kill_client", "dir_removed", "limits")


def run(
    *,
    scenarios: tuple[str, ...] = SCENARIOS,
    requests: int = 10_000,
    malformed_per_kind: int = 100,
    sessions: int = 8,
    per_session: int = 250,
    trials: int = 5,
    directory: Path | None = None,
    progress: bool = True,
    exclude_kinds: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="tsr-stress-", dir=directory))
    ws = root / "workspace"
    ws.mkdir()
    canaries = Canaries(root, ws)
    results: list[Result] = []
    start = time.monotonic()
    try:
        for name in scenarios:
            res = Result(name)
            t0 = time.monotonic()
            try:
                if name == "steady":
                    steady(ws, requests, res)
                elif name == "malformed":
                    malformed(ws, malformed_per_kind, canaries.link_target, res, exclude_kinds)
                elif name == "parallel":
                    parallel(ws, sessions, per_session, res)
                elif name == "kill_client":
                    kill_client(ws, trials, res)
                elif name == "dir_removed":
                    dir_removed(ws, trials, res)
                elif name == "limits":
                    limits(ws, res)
            except Exception as exc:  # a scenario that breaks is a failure, with its cause
                res.fail(f"{type(exc).__name__}: {exc}")
            res.figures["scenario_seconds"] = round(time.monotonic() - t0, 2)
            canaries.drain()
            results.append(res)
            if progress:
                verdict = "ok" if res.ok else "FAILED"
                took = res.figures["scenario_seconds"]
                print(f"  {name}: {verdict} in {took} s", file=sys.stderr, flush=True)
        canary_problems = canaries.check()
        outside = sorted(
            str(p.relative_to(root)) for p in root.rglob("*")
            if "tr_session_" not in str(p.relative_to(root)) and p.suffix != ".log"
        )  # fmt: skip
        return {
            "ok": all(r.ok for r in results) and not canary_problems,
            "seconds": round(time.monotonic() - start, 1),
            "canaries": {"files": len(canaries.files), "problems": canary_problems},
            "outside_session_dirs": outside,
            "scenarios": {
                r.name: {"ok": r.ok, "problems": r.problems, **r.figures} for r in results
            },
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--malformed", type=int, default=100, help="requests per malformed kind")
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--per-session", type=int, default=250)
    ap.add_argument("--trials", type=int, default=5, help="kill_client and dir_removed trials")
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--exclude-kinds", default="", help="malformed kinds to leave out")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    chosen = tuple(s for s in args.scenarios.split(",") if s)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    out = run(
        scenarios=chosen, requests=args.requests, malformed_per_kind=args.malformed,
        sessions=args.sessions, per_session=args.per_session, trials=args.trials,
        directory=args.dir, exclude_kinds=frozenset(k for k in args.exclude_kinds.split(",") if k),
    )  # fmt: skip
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print("OK" if out["ok"] else "FAIL", file=sys.stderr)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
