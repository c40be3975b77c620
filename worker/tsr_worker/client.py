"""A Python client with the calls of the C++ ``PythonSession``, for tests and tools.

::

    import torch
    from tsr_worker import Session

    with Session("demo", workspace="/tmp/ws") as s:          # creates the directory
        s.start()                                            # a real worker subprocess
        print(s.fetch_response('{"cmd": "hello", "params": "world"}'))   # Hello World
        r = s.calculate("matmul", torch.full((4, 3), 1.5), torch.full((3, 5), 2.0))
    # leaving the block stops the worker and removes the session directory

The calls mirror the C++ client (same names, same files, same order of operations),
with these deliberate differences:

- Time-outs are in milliseconds as in C++, ``0`` meaning forever. The predicates
  (``wait_until_ready``, ``wait_until_ok``, ``join``) return ``False`` on a time-out as
  in C++; the calls that return data raise :class:`SessionTimeoutError` where C++
  returns ``""`` or throws.
- A reply ``invalid`` makes the tensor calls raise :class:`WorkerError` at once, with
  the worker's error code and message (C++ waits for ``invalid.tsr`` until its time-out).
- ``start()`` runs the worker with :class:`subprocess.Popen` (no shell), tells it this
  process's pid to watch, and returns once the worker reports ``running`` instead of
  sleeping a fixed second. ``close()`` (or leaving a ``with`` block) stops it politely,
  then firmly (status ``exit``, SIGTERM, SIGKILL), and removes the session directory.
- ``poll="backoff"`` polls like C++ (32 ms doubling to 1024 ms); ``poll="tight"`` checks
  every 0.1 ms, so that a benchmark sees the worker's own latency.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from . import protocol
from .config import resolve_workspace
from .config import session_dir as make_session_dir
from .protocol import ErrorInfo, check_tag

if TYPE_CHECKING:
    import torch

__all__ = ["Session", "SessionError", "SessionTimeoutError", "WorkerError"]

log = logging.getLogger("tsr_worker.client")

PollMode = Literal["backoff", "tight"]
TIGHT_POLL_S = 0.0001
FILE_POLL_S = 0.1  # the C++ client's wait_for_file
START_POLL_S = 0.002


class SessionError(RuntimeError):
    """The session cannot do what was asked (not started, worker died, ...)."""


class SessionTimeoutError(SessionError, TimeoutError):
    """A wait ran out of time."""


class WorkerError(SessionError):
    """The worker answered ``invalid``; ``code`` and ``message`` say why."""

    def __init__(self, request: str, info: ErrorInfo | None) -> None:
        self.code = info.code if info else "unknown"
        self.message = info.message if info else "the reply carries no error field"
        super().__init__(f"worker rejected {request[:200]!r}: {self.code}: {self.message}")


class Session:
    """One session directory and the worker serving it (see the module docstring)."""

    def __init__(
        self,
        session_id: str = "default",
        *,
        workspace: str | None = None,
        layout: str = protocol.LAYOUTS[0],
        session_dir: str | None = None,
        python: str | None = None,
        worker_args: Sequence[str] = (),
        poll: PollMode = "backoff",
    ) -> None:
        """Create the session directory and remove a stale request and response, as the
        C++ constructor does. ``python`` runs the worker (default: this interpreter);
        ``worker_args`` are extra ``tsr-worker`` options (e.g. ``["--idle-timeout", "5"]``).
        """
        if poll not in ("backoff", "tight"):
            raise ValueError(f"poll must be 'backoff' or 'tight', got {poll!r}")
        self._id = session_id
        self._dir = os.path.abspath(
            session_dir or make_session_dir(resolve_workspace(workspace), session_id, layout)
        )
        self._python = python or sys.executable
        self._worker_args = list(worker_args)
        self.poll: PollMode = poll
        self.process: subprocess.Popen[bytes] | None = None
        """The worker process, once started."""
        self.last_error: ErrorInfo | None = None
        """The ``error`` of the last response read, if it had one."""
        os.makedirs(self._dir, exist_ok=True)
        for name in (protocol.REQUEST, protocol.RESPONSE):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path(name))

    # ------------------------------------------------------------------ basics

    @property
    def session_id(self) -> str:
        """The session id."""
        return self._id

    @property
    def session_dir(self) -> str:
        """The session directory (absolute)."""
        return self._dir

    def _path(self, name: str) -> str:
        return os.path.join(self._dir, name)

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"Session({self._id!r}, session_dir={self._dir!r}, pid={pid})"

    # ------------------------------------------------------------------ process

    def start(self, *, warmup_ms: int = 0, timeout_ms: int = 30000) -> None:
        """Start the worker and wait until it reports ``running``; then write status
        ``ready`` as the C++ client does. Raises :class:`SessionError` if the worker
        exits first, :class:`SessionTimeoutError` after ``timeout_ms``."""
        if self.process is not None and self.process.poll() is None:
            return
        for stale in (protocol.STATUS, protocol.EXIT_FLAG):  # from an earlier worker
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path(stale))
        cmd = [
            self._python, "-m", "tsr_worker", self._id,
            "--session-dir", self._dir, "--client-pid", str(os.getpid()),
            *self._worker_args,
        ]  # fmt: skip
        try:
            self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        except OSError as exc:  # no such interpreter, not executable
            raise SessionError(
                f"cannot run the worker with python={self._python!r}: {exc.strerror}; pass "
                "the path of a Python that has tsr installed (default: this one)"
            ) from None
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else None
        while self._status() != protocol.RUNNING:
            code = self.process.poll()
            if code is not None:
                raise SessionError(f"worker exited with status {code} before running: {cmd}")
            if deadline is not None and time.monotonic() > deadline:
                raise SessionTimeoutError(f"worker not running after {timeout_ms} ms: {cmd}")
            time.sleep(START_POLL_S)
        self._write_status(protocol.READY)
        if warmup_ms:
            time.sleep(warmup_ms / 1000)

    def is_alive(self) -> bool:
        """False once the worker process has exited, or the status reads ``terminated``
        or starts with ``error:`` (as in C++)."""
        if self.process is None or self.process.poll() is not None:
            return False
        status = self._status()
        return status != protocol.TERMINATED and not status.startswith(protocol.ERROR_PREFIX)

    def terminate(self, grace_ms: int = 500) -> None:
        """Write status ``exit`` and give the worker ``grace_ms`` to leave (C++: sleeps
        500 ms; this returns as soon as the process has exited)."""
        if self.process is None:
            return
        self._write_status(protocol.EXIT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(grace_ms / 1000)

    def please_exit(self, timeout_ms: int = 10000, ensure: bool = True) -> None:
        """Wait until ready (``terminate()`` first if that times out and ``ensure``),
        then send ``{"cmd": "exit"}``."""
        if not self.wait_until_ready(timeout_ms) and ensure:
            log.warning("write timeout; terminating")
            self.terminate()
        self.send_request('{"cmd": "exit"}')

    def join(self, timeout_ms: int = 0) -> bool:
        """Wait until :meth:`is_alive` is false; False on a time-out."""
        return self._wait(lambda: not self.is_alive(), timeout_ms, backoff=False)

    def close(self, step_ms: int = 2000) -> None:
        """Stop the worker and remove the session directory. Idempotent.

        Politely, then firmly: status ``exit``; after ``step_ms`` SIGTERM (which still
        lets the current request finish); after ``step_ms`` more SIGKILL.
        """
        proc = self.process
        if proc is not None and proc.poll() is None:
            wait_s = step_ms / 1000
            steps: list[tuple[str, Callable[[], None], float]] = [
                ("status exit", lambda: self._write_status(protocol.EXIT), wait_s),
                ("SIGTERM", lambda: proc.send_signal(signal.SIGTERM), wait_s),
                ("SIGKILL", proc.kill, 10.0),
            ]
            for what, action, wait_s in steps:
                with contextlib.suppress(OSError):
                    action()
                try:
                    proc.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    log.warning("worker %d still running after %s", proc.pid, what)
        shutil.rmtree(self._dir, ignore_errors=True)

    # ------------------------------------------------------------------ probes and waits

    def is_ready(self) -> bool:
        """No ``request.json``: a request can be sent."""
        return not os.path.lexists(self._path(protocol.REQUEST))

    def is_busy(self) -> bool:
        """A ``request.json`` is waiting or being served."""
        return not self.is_ready()

    def new_response(self) -> bool:
        """A ``response.json`` is there."""
        return os.path.lexists(self._path(protocol.RESPONSE))

    def wait_until_ready(self, timeout_ms: int = 10000) -> bool:
        """Wait until :meth:`is_ready`; False on a time-out (0: wait forever)."""
        return self._wait(self.is_ready, timeout_ms)

    def wait_until_ok(self, timeout_ms: int = 10000) -> bool:
        """Wait until :meth:`new_response`; False on a time-out (0: wait forever)."""
        return self._wait(self.new_response, timeout_ms)

    def _wait(self, done: Callable[[], bool], timeout_ms: int, *, backoff: bool = True) -> bool:
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else None
        delays = protocol.backoff_delays_ms()
        while deadline is None or time.monotonic() < deadline:
            if done():
                return True
            if self.poll == "tight":
                time.sleep(TIGHT_POLL_S)
            elif backoff:
                time.sleep(next(delays) / 1000)
            else:
                time.sleep(FILE_POLL_S)
        return False

    # ------------------------------------------------------------------ text

    def send_request(self, msg: str) -> None:
        """Write ``msg`` to ``request.tmp`` and rename it to ``request.json``."""
        tmp = self._path(protocol.REQUEST_TMP)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(msg)
        os.replace(tmp, self._path(protocol.REQUEST))

    def read_response(self) -> str:
        """Read and delete ``response.json``; return its params as the C++ reader does
        (``""`` if there is none). Sets :attr:`last_error`."""
        path = self._path(protocol.RESPONSE)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            return ""
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        self.last_error = _error_of(text)
        return protocol.cpp_read_params(text)

    def wait_for_response(self, timeout_ms: int = 10000) -> str:
        """Wait for a response and read it; :class:`SessionTimeoutError` on a time-out."""
        if not self.wait_until_ok(timeout_ms):
            raise SessionTimeoutError(self._timeout_text("response.json", timeout_ms))
        return self.read_response()

    def fetch_response(self, msg: str, timeout_ms: int = 10000) -> str:
        """Wait until ready, send ``msg``, wait for the response and read it."""
        if not self.wait_until_ready(timeout_ms):
            raise SessionTimeoutError(self._timeout_text("request.json to go", timeout_ms))
        self.send_request(msg)
        return self.wait_for_response(timeout_ms)

    # ------------------------------------------------------------------ tensors

    def send_tensor(self, tensor: Any, tag: str) -> None:
        """Write a torch tensor or NumPy array as ``<tag>.tsr`` (atomically)."""
        check_tag(tag)
        path = self._path(tag + protocol.TENSOR_SUFFIX)
        if type(tensor).__module__.startswith("torch"):
            import tsr.torch

            tsr.torch.save(path, tensor)
        else:
            import tsr

            tsr.save(path, tensor)

    def fetch_tensor(self, msg: str, timeout_ms: int = 10000) -> torch.Tensor:
        """Send ``msg`` and return the one tensor its reply names."""
        return self._one(msg, self.fetch_response(msg, timeout_ms), timeout_ms)

    def fetch_tensors(self, msg: str, timeout_ms: int = 10000) -> list[torch.Tensor]:
        """Send ``msg`` and return every tensor its reply names (``r0,r1,...``)."""
        return self._tensors(msg, self.fetch_response(msg, timeout_ms), timeout_ms)

    def wait_for_tensor(self, timeout_ms: int = 10000) -> torch.Tensor:
        """Wait for a response and return the one tensor it names."""
        return self._one("(sent earlier)", self.wait_for_response(timeout_ms), timeout_ms)

    def calculate(
        self,
        op: str,
        a: Any,
        b: Any = None,
        c: Any = None,
        *,
        timeout_ms: int = 10000,
    ) -> torch.Tensor:
        """Send the inputs as tags ``a``, ``b``, ``c`` and return ``op``'s result."""
        tags = []
        for tag, tensor in (("a", a), ("b", b), ("c", c)):
            if tensor is not None:
                self.send_tensor(tensor, tag)
                tags.append(tag)
        msg = json.dumps({"cmd": op, "params": ",".join(tags)})
        return self.fetch_tensor(msg, timeout_ms)

    def _one(self, msg: str, params: str, timeout_ms: int) -> torch.Tensor:
        tensors = self._tensors(msg, params, timeout_ms)
        if len(tensors) != 1:
            raise SessionError(f"reply {params!r} names {len(tensors)} tensors; use fetch_tensors")
        return tensors[0]

    def _tensors(self, msg: str, params: str, timeout_ms: int) -> list[torch.Tensor]:
        if params == protocol.INVALID:
            raise WorkerError(msg, self.last_error)
        try:
            tags = protocol.split_tags(params)
        except protocol.ProtocolError:
            tags = []
        if not tags:
            raise SessionError(f"reply {params!r} to {msg[:200]!r} names no tensor")
        import tsr.torch

        out = []
        for tag in tags:
            path = self._path(tag + protocol.TENSOR_SUFFIX)
            if not self._wait(_nonempty_check(path), timeout_ms, backoff=False):
                raise SessionTimeoutError(self._timeout_text(path, timeout_ms))
            out.append(tsr.torch.load(path, mmap=False))
        return out

    # ------------------------------------------------------------------ status

    def _status(self) -> str:
        try:
            with open(self._path(protocol.STATUS), encoding="utf-8", errors="replace") as f:
                return f.readline().strip()
        except FileNotFoundError:
            return ""

    def _write_status(self, status: str) -> None:
        with open(self._path(protocol.STATUS), "w", encoding="utf-8") as f:
            f.write(status)

    def _timeout_text(self, what: str, timeout_ms: int) -> str:
        alive = "running" if self.process and self.process.poll() is None else "not running"
        return (
            f"no {what} within {timeout_ms} ms in {self._dir} "
            f"(worker {alive}, status {self._status()!r})"
        )


def _nonempty_check(path: str) -> Callable[[], bool]:
    """A check that ``path`` exists with a non-zero size (the C++ ``wait_for_file``)."""

    def check() -> bool:
        try:
            return os.path.getsize(path) > 0
        except OSError:
            return False

    return check


def _error_of(text: str) -> ErrorInfo | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict) and isinstance(err.get("code"), str):
        return ErrorInfo(err["code"], str(err.get("message", "")))
    return None
