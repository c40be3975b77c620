"""Worker harness: request text plus a session directory of arbitrary files.

A real :class:`tsr_worker.Worker` serves one session directory from a thread of this
process (its public API: ``Worker(config).run()`` and ``stop()``; the worker has no
in-process call that handles one request without its loop). For each input,
``TestOneInput`` decodes a request and up to three files (see :func:`decode`), puts the
files into the emptied session directory (regular files, or a symbolic link to a canary
outside the directory, a FIFO, a directory), writes ``request.json`` the way the C++
client does (``request.tmp`` renamed over it) and waits for the answer, as the client
would, then deletes the response. A crash is:

* no answer within :data:`ANSWER_TIMEOUT_S` (a hang), or the worker leaving its loop for
  any reason but an ``exit`` request;
* a response the C++ client cannot read back exactly (``cpp_read_params``), that is not
  JSON with string ``cmd`` and ``params``, or an error reply whose params are not
  ``invalid``, whose code is unknown, or is ``internal_error`` (an exception escaped a
  command path: the worker logs it with a trace, which is a crash too);
* a success whose result tensors are missing, invalid (strict ``tsr.validate``) or not
  readable by C++ (unless empty), or whose text is not what the command returns;
* ``request.json`` still there after the answer;
* an error given through ``status.txt`` with an unknown or ``internal_error`` code;
* any change outside the session directory: the canary files (one a valid ``.tsr``)
  must keep their bytes and inode, the workspace must hold nothing new;
* a descriptor leak (the process's open descriptors growing across inputs).

The worker runs with small limits (:data:`LIMITS`) so that every breach is reachable.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsr_worker import (
    DEFAULT,
    ErrorCode,
    ExitReason,
    Limits,
    Registry,
    Worker,
    WorkerConfig,
    protocol,
)

import tsr
from tsr import header as tsr_header

from .reader_harness import process_dir, zero_size_beyond_numpy

ANSWER_TIMEOUT_S = 10.0
LIMITS = Limits(
    max_request_bytes=2048, max_params_chars=256, max_input_bytes=16 * 1024, max_inputs=4
)
TOLERATE_KNOWN = os.environ.get("TSR_FUZZ_KNOWN", "fail") == "tolerate"
"""``TSR_FUZZ_KNOWN=tolerate`` counts internal errors explained by a known bug instead of
crashing: a zero-size input NumPy cannot index (fixed in 8dcabe9), a directory squatting a
result name (``r.tsr``, ``output.tsr``), answered ``internal_error`` (fixed in d473661)."""
STATS: Counter[str] = Counter()
ERROR_CODES = {c.value for c in ErrorCode}
RESULT_TAGS = {"r", "output", *(f"r{i}" for i in range(8))}
"""Names the worker writes results to."""
KINDS = ("file", "file", "file", "file", "file", "link_out", "link_in", "fifo", "dir")
"""What a file entry becomes (by its kind byte, modulo this length): mostly regular files;
a symbolic link to the canary outside the session, a link to another file inside it, a
FIFO, a directory."""


class WorkerCrash(AssertionError):
    """The worker broke a rule (see the module docstring)."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise WorkerCrash(message)


@dataclass(frozen=True)
class Entry:
    kind: str
    tag: bytes
    content: bytes


@dataclass(frozen=True)
class Case:
    request: bytes
    entries: tuple[Entry, ...] = field(default=())


def decode(data: bytes) -> Case:
    """``data`` as a request and files; any byte string decodes.

    Layout: ``u16 len`` + request bytes, then up to three entries of ``u8 kind``,
    ``u8 len`` + tag bytes (the file is ``<tag>.tsr``), ``u16 len`` + content. Lengths
    past the end are cut short.
    """
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        out = data[pos : pos + n]
        pos += len(out)
        return out

    def length(size: int) -> int:
        raw = take(size)
        return int.from_bytes(raw, "little") if raw else 0

    request = take(length(2))
    entries: list[Entry] = []
    while pos < len(data) and len(entries) < 3:
        kind = KINDS[take(1)[0] % len(KINDS)] if pos < len(data) else "file"
        tag = take(length(1))
        content = take(length(2))
        entries.append(Entry(kind, tag, content))
    return Case(request, tuple(entries))


def encode(case: Case) -> bytes:
    """The inverse of :func:`decode` (for writing seeds)."""
    out = len(case.request).to_bytes(2, "little") + case.request
    for e in case.entries:
        out += bytes([KINDS.index(e.kind)]) + bytes([len(e.tag)]) + e.tag
        out += len(e.content).to_bytes(2, "little") + e.content
    return out


class _Capture(logging.Handler):
    """Keeps the worker's log records that carry a trace (an internal error)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.traced: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.traced.append(record)


class Harness:
    """One worker thread on one session directory, and the canaries around it."""

    count = 0

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry
        Harness.count += 1
        self.root = Path(process_dir("tsr-fuzz-worker-", str(Harness.count)))
        atexit.register(self.close)
        self.workspace = self.root / "ws"
        self.session = self.workspace / "python_session" / "tr_session_fuzz"
        self.session.mkdir(parents=True)
        self.canary_tsr = self.root / "canary.tsr"
        self.canary_tsr.write_bytes(tsr.to_bytes(tsr.from_bytes(_VALID_FP32)))
        self.canary_txt = self.workspace / "outside.txt"
        self.canary_txt.write_bytes(b"outside the session: never touched\n")
        self.canaries = {p: (p.read_bytes(), p.stat().st_ino) for p in self._canary_paths()}
        self.outside = self._outside_listing()
        self.capture = _Capture()
        log = logging.getLogger("tsr_worker")
        log.addHandler(self.capture)
        self._log_state = (log.level, log.propagate)
        if log.getEffectiveLevel() > logging.WARNING:
            log.setLevel(logging.WARNING)
        self.worker: Worker | None = None
        self.thread: threading.Thread | None = None
        self.exit_reason: ExitReason | None = None
        self.fd_baseline: int | None = None
        self.inputs = 0
        self.start()

    def _canary_paths(self) -> list[Path]:
        return [self.canary_tsr, self.canary_txt]

    def _outside_listing(self) -> set[str]:
        out: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            if rel.startswith(os.path.relpath(self.session, self.root)):
                dirnames.clear()
                continue
            out.update(os.path.join(rel, n) for n in filenames + dirnames)
        return out

    def start(self) -> None:
        config = WorkerConfig(
            str(self.session), limits=LIMITS, idle_timeout_s=0, client_pid=0, wait="inotify",
            preload=False,
        )  # fmt: skip
        self.worker = Worker(config, self.registry)
        self.exit_reason = None
        worker = self.worker

        def run() -> None:
            self.exit_reason = worker.run()

        self.thread = threading.Thread(target=run, name="fuzz-worker", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        status = self.session / protocol.STATUS
        while not (status.exists() and status.read_text() == protocol.RUNNING):
            require(time.monotonic() < deadline, "worker did not start")
            time.sleep(0.001)
        STATS["worker_starts"] += 1

    def close(self) -> None:
        if self.worker is not None and self.thread is not None and self.thread.is_alive():
            self.worker.stop()
            self.thread.join(ANSWER_TIMEOUT_S)
        log = logging.getLogger("tsr_worker")
        log.removeHandler(self.capture)
        log.setLevel(self._log_state[0])
        log.propagate = self._log_state[1]
        shutil.rmtree(self.root, ignore_errors=True)

    # ----------------------------------------------------------------- one input

    def reset_session(self) -> None:
        for entry in os.scandir(self.session):
            if entry.name == protocol.STATUS:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        tmp = self.session / protocol.STATUS_TMP
        tmp.write_text(protocol.RUNNING)
        os.replace(tmp, self.session / protocol.STATUS)

    def plant(self, entries: tuple[Entry, ...]) -> list[str]:
        """Create the entries; returns the tags whose files hold a zero-size tensor
        that NumPy cannot index (known bug 1) and the result names a directory blocks
        (known bug 2)."""
        planted: list[str] = []
        for e in entries:
            try:
                tag = e.tag.decode("ascii")
            except UnicodeDecodeError:
                continue
            name = tag + ".tsr"
            if not tag or "/" in tag or "\0" in tag or len(name.encode()) > 255:
                continue
            path = self.session / name
            if os.path.lexists(path):
                continue
            if e.kind == "file":
                path.write_bytes(e.content)
                if len(e.content) >= 64:
                    h = tsr_header.decode_raw(e.content[:64])
                    if zero_size_beyond_numpy(h):
                        planted.append(tag)
            elif e.kind == "link_out":
                os.symlink(self.canary_tsr, path)
            elif e.kind == "link_in":
                os.symlink("a.tsr", path)
            elif e.kind == "fifo":
                os.mkfifo(path)
            else:
                path.mkdir()
                if tag in RESULT_TAGS:
                    planted.append(f"blocked:{tag}")
        return planted

    def send(self, request: bytes) -> None:
        tmp = self.session / protocol.REQUEST_TMP
        tmp.write_bytes(request)
        os.replace(tmp, self.session / protocol.REQUEST)

    def wait_answer(self, expect_exit: bool) -> str | None:
        """The response text; None when answered through the status or by exiting."""
        response = self.session / protocol.RESPONSE
        request = self.session / protocol.REQUEST
        status = self.session / protocol.STATUS
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        delay = 0.00005
        while True:
            if response.exists():
                text = response.read_bytes()
                response.unlink()
                try:
                    decoded: str = text.decode("utf-8")
                    return decoded
                except UnicodeDecodeError:
                    raise WorkerCrash(f"response is not UTF-8: {text[:200]!r}") from None
            assert self.thread is not None
            if not self.thread.is_alive():
                require(
                    expect_exit and self.exit_reason is ExitReason.EXIT_COMMAND,
                    f"worker left its loop: {self.exit_reason}",
                )
                return None
            if not request.exists() and status.exists():
                text_status = status.read_text(errors="replace")
                if text_status == protocol.DONE or text_status.startswith(protocol.ERROR_PREFIX):
                    return None
            require(time.monotonic() < deadline, f"no answer in {ANSWER_TIMEOUT_S} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.002)

    def run_case(self, case: Case) -> None:
        self.inputs += 1
        self.reset_session()
        planted = self.plant(case.entries)
        try:
            parsed: protocol.Request | None = protocol.parse_request(
                case.request, max_params_chars=LIMITS.max_params_chars
            )
        except protocol.ProtocolError:
            parsed = None
        oversize = len(case.request) > LIMITS.max_request_bytes
        expect_exit = parsed is not None and parsed.name == "exit" and not oversize
        traced_before = len(self.capture.traced)
        self.send(case.request)
        text = self.wait_answer(expect_exit)
        if text is None:
            if expect_exit:
                STATS["exit"] += 1
                self.start()
            else:
                STATS["status_answer"] += 1
                if self.check_status_answer(parsed, planted):
                    del self.capture.traced[traced_before:]
        else:
            known = self.check_response(text, parsed, oversize, planted)
            if known:
                del self.capture.traced[traced_before:]
        require(not (self.session / protocol.REQUEST).exists(), "request.json left behind")
        new_traces = self.capture.traced[traced_before:]
        require(
            not new_traces,
            "worker logged an error: " + "; ".join(r.getMessage()[:300] for r in new_traces[:3]),
        )
        self.check_outside()
        self.check_fds()

    def known_bug(self, planted: list[str], message: str) -> bool:
        """An internal error explained by a known bug, when tolerated (counted)."""
        if not TOLERATE_KNOWN:
            return False
        if any(p.startswith("blocked:") for p in planted) and "cannot write" in message:
            STATS["known:result_name_blocked"] += 1
            return True
        if any(not p.startswith("blocked:") for p in planted):
            STATS["known:zero_size_beyond_numpy"] += 1
            return True
        return False

    def check_status_answer(self, parsed: protocol.Request | None, planted: list[str]) -> bool:
        """Check an answer given through status.txt; True when it is a known bug's."""
        require(parsed is not None, "a malformed request was answered through the status")
        status = (self.session / protocol.STATUS).read_text(errors="replace")
        if status == protocol.DONE:
            out = self.session / "output.tsr"
            require(out.exists() and tsr.validate(out).ok, "status done without a valid output")
            return False
        code = status[len(protocol.ERROR_PREFIX) :].split(":", 1)[0]
        require(code in ERROR_CODES, f"status {status!r}")
        if code == ErrorCode.INTERNAL_ERROR.value:
            if self.known_bug(planted, status):
                return True
            raise WorkerCrash(f"internal error: {status}")
        return False

    def check_response(
        self, text: str, parsed: protocol.Request | None, oversize: bool, planted: list[str]
    ) -> bool:
        """Check one response; True when it is a known bug's answer (tolerated)."""
        try:
            obj = json.loads(text)
        except ValueError:
            raise WorkerCrash(f"response is not JSON: {text[:200]!r}") from None
        require(isinstance(obj, dict), "response is not an object")
        cmd, params = obj.get("cmd"), obj.get("params")
        require(isinstance(cmd, str) and isinstance(params, str), f"bad response {text[:200]}")
        require(protocol.cpp_read_params(text) == params, f"C++ reads other params: {text}")
        error = obj.get("error")
        if error is not None:
            require(params == protocol.INVALID, f"error reply with params {params!r}")
            require(isinstance(error, dict), "error is not an object")
            code, message = error.get("code"), error.get("message")
            require(code in ERROR_CODES, f"unknown error code {code!r}")
            require(isinstance(message, str) and bool(message), "error without message")
            STATS[f"error:{code}"] += 1
            if code == ErrorCode.INTERNAL_ERROR.value:
                if self.known_bug(planted, message):
                    return True
                raise WorkerCrash(f"internal error: {message}")
            if oversize:
                require(code == ErrorCode.REQUEST_TOO_LARGE.value, f"oversize answered {code}")
            return False
        require(parsed is not None and not oversize, f"a bad request succeeded: {text[:200]}")
        assert parsed is not None
        STATS[f"ok:{parsed.name}"] += 1
        if parsed.name in ("hello", "hi"):
            want = f"{parsed.name.capitalize()} {parsed.params.title()}"
            require(params == want, f"{parsed.name} answered {params!r}, not {want!r}")
            return False
        known = (self.registry or DEFAULT).get(parsed.name)
        require(known is not None, f"unknown command {parsed.name!r} succeeded")
        if known is not None and known.is_text:
            return False
        for tag in params.split(","):
            path = self.session / f"{tag}.tsr"
            require(path.is_file() and not path.is_symlink(), f"result {tag}.tsr missing")
            report = tsr.validate(path)
            require(report.ok, f"result {tag}.tsr invalid: {report.errors}")
            require(  # an empty result is answered bad_result, never handed to C++
                report.cpp.accepts or report.header is None,
                f"result {tag}.tsr not readable by C++: {report.cpp.message}",
            )
        return False

    def check_outside(self) -> None:
        for path, (data, ino) in self.canaries.items():
            require(path.exists() and not path.is_symlink(), f"canary {path} removed")
            require(path.read_bytes() == data, f"canary {path} changed")
            require(path.stat().st_ino == ino, f"canary {path} replaced")
        require(self._outside_listing() == self.outside, "files appeared outside the session")

    def check_fds(self) -> None:
        count = len(os.listdir("/proc/self/fd"))
        if self.inputs == 50:
            self.fd_baseline = count
        elif self.fd_baseline is not None:
            require(count <= self.fd_baseline + 4, f"descriptor leak: {count} > {self.fd_baseline}")


_VALID_FP32 = struct.pack("<4siiiii4iqqq", b"TSR!", 1, 64, 0, 1, 1, 1, 1, 1, 2, 2, 0, 0)
_VALID_FP32 += struct.pack("<2f", 1.5, -2.0)
_HARNESS: Harness | None = None


def harness() -> Harness:
    """The process's one harness (created on first use)."""
    global _HARNESS
    if _HARNESS is None:
        _HARNESS = Harness()
    return _HARNESS


def prepare() -> None:
    """Called once before fuzzing: torch imported, the worker thread started, and the
    worker's log kept off stderr (the harness reads it through its own handler)."""
    logging.getLogger("tsr_worker").propagate = False
    with contextlib.suppress(ImportError):
        import tsr.torch  # noqa: F401
    harness()


def TestOneInput(data: bytes) -> None:
    """The atheris entry point."""
    harness().run_case(decode(data))


def run_request(request: bytes, files: dict[str, bytes] | None = None) -> Any:
    """Run one request with regular files ``{tag: content}`` (for tests)."""
    entries = tuple(Entry("file", t.encode(), c) for t, c in (files or {}).items())
    harness().run_case(Case(request, entries))
