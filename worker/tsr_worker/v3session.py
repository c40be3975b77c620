"""The V3 PythonSession (framework V3.6.11 to V4.0.0): its server, kept alive.

That C++ client makes a directory, writes ``input_0.tsr, input_1.tsr, ...`` (TSR3 RAW)
and ``request.json`` (``{"method": ..., "parameters": {...}}``, values strings), starts
``<python> <server_script> <session_dir>`` on its first ``send()`` only, sleeps 100 ms,
then polls for ``response.json`` (``{"success", "message", "result"}``) every 100 ms for
10 s and reads ``output_0.tsr`` (``output_0.txt`` for ``print_tensor``). It never deletes
a file; ``stop()`` sends SIGTERM (SIGKILL 5 s later) and removes the directory.

Upstream's server answered once and exited, so a second ``calculate()`` found the old
``response.json`` and returned the first call's output. :class:`V3Loop` stays for the
session instead: when ``request.json`` appears it removes the previous ``response.json``
and ``output_*`` at once (well inside the client's 100 ms), serves the request, removes
it and its inputs, writes the outputs and then ``response.json`` (atomically: the client
only checks that it exists). It leaves on SIGTERM (at once, even mid-computation), when
the directory goes, when the C++ process exits, or after the idle time-out.

:class:`RenaissanceServer` is upstream's V3 base class (``main_logic(method, parameters)
-> (success, message, result)``, ``load_input_tensor(i)``, ``save_output_tensor(t, i)``);
its default ``main_logic`` serves the worker's built-in commands and ``print_tensor``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import fstype
from .config import DEFAULT_IDLE_TIMEOUT_S, Limits, WaitMode
from .procwatch import ProcessWatch
from .registry import DEFAULT, Registry
from .sessiondir import SessionDir, TooLargeError, identity
from .signals import signals_call
from .waiting import StopPipe, Waiter, WakeKind
from .worker import Claim, ExitReason, _describe, claim_session, open_waiter, wake_exit

if TYPE_CHECKING:
    import torch

__all__ = [
    "Handler",
    "RenaissanceServer",
    "RequestError",
    "V3Loop",
    "encode_response",
    "parse_request",
]

log = logging.getLogger("tsr_worker")

REQUEST = "request.json"
RESPONSE = "response.json"
RECHECK_S = 0.05
"""A request that does not parse and was not seen complete is read again after this long
before it is answered as malformed: its writer may still be writing it in place."""
POLL_CAP_S = 0.05
"""Polling (network or FUSE filesystems, no inotify), a request is looked for at least
this often even when idle: the client reads the response 100 ms after its request, and
the previous one must be gone by then."""
_INPUT_RE = re.compile(r"input_\d+\.tsr\Z")
_OUTPUT_RE = re.compile(r"output_\d+\.(tsr|txt)\Z")

Result = tuple[bool, str, dict[str, Any]]
Handler = Callable[[str, dict[str, Any]], Result]
"""``main_logic``: (method, parameters) to (success, message, result)."""


class RequestError(ValueError):
    """A ``request.json`` that cannot be served; the message is upstream's wording."""


class _Terminated(BaseException):
    """Raised by the SIGTERM handler inside a computation: the client is stopping us."""


def parse_request(data: bytes) -> tuple[str, dict[str, Any]]:
    """(method, parameters) of ``request.json``'s bytes; :class:`RequestError` with
    upstream's message (the JSON error's text, or ``Request missing 'method' field``)."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RequestError(f"request.json is not UTF-8: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise RequestError(str(exc)) from None
    if not isinstance(obj, dict):
        raise RequestError(f"request.json holds a JSON {type(obj).__name__}, not an object")
    method = obj.get("method")
    if method is None:
        raise RequestError("Request missing 'method' field")
    parameters = obj.get("parameters", {})
    if not isinstance(method, str) or not isinstance(parameters, dict):
        raise RequestError("'method' must be a string and 'parameters' an object")
    return method, parameters


def encode_response(success: bool, message: str, result: dict[str, Any]) -> bytes:
    """``response.json`` as upstream writes it (``json.dump(..., indent=2)``, ASCII, no
    final newline). The C++ reader finds ``true`` after ``"success"`` and takes the
    message up to its next ``"`` without unescaping; ``result`` it ignores."""
    text = json.dumps({"success": bool(success), "message": message, "result": result}, indent=2)
    return text.encode("ascii")


class V3Loop:
    """Serves one V3 session directory with ``handler`` (see the module docstring)."""

    def __init__(
        self,
        session_dir: str | os.PathLike[str],
        handler: Handler,
        *,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        client_pid: int | None = None,
        wait: WaitMode = "auto",
        limits: Limits | None = None,
    ) -> None:
        self.path = os.path.abspath(session_dir)
        self.handler = handler
        self.idle_timeout_s = idle_timeout_s
        self.client_pid = client_pid
        self.wait_mode = wait
        self.limits = limits or Limits()
        self.dir: SessionDir | None = None
        """The open session directory while running."""
        self.busy = False
        """True while the handler runs."""
        self.served = 0
        self._stop = StopPipe()
        self._stop_reason: ExitReason | None = None
        self._unremovable: tuple[int, ...] | None = None  # served, could not be removed
        self._cleared = False  # the stale answer is gone for the request at hand
        self._malformed_seen: tuple[int, ...] | None = None
        self._claimed: Claim | None = None

    def stop(self, reason: ExitReason = ExitReason.STOPPED) -> None:
        """Leave after the current request (thread- and signal-safe)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop.set()

    def claim(self) -> None:
        """Open the session directory and take its worker lock (``SessionDir.lock``),
        writing nothing: :class:`~tsr_worker.sessiondir.DirectoryBusyError` if another
        server holds it (the loop is then spent). :meth:`run` does this itself; call it
        first to be refused before doing anything else."""
        if self._claimed is not None:
            return
        try:
            self._claimed = claim_session(self.path, create=False, client_pid=self.client_pid)
        except BaseException:
            self._stop.close()
            raise

    def run(self) -> ExitReason:
        """Serve until a reason to leave. The directory must exist (the client makes it);
        :class:`~tsr_worker.sessiondir.DirectoryBusyError` if another server holds it."""
        self.claim()
        assert self._claimed is not None
        client, self.dir, lock = self._claimed
        self._claimed = None
        if lock == "none":
            log.warning("%s cannot be locked here: a second server would not be refused", self.path)
        waiter: Waiter | None = None
        try:
            waiter = self._make_waiter(self.dir, client)
            log.info("serving V3 session %s (wait: %s, lock: %s)", self.path, waiter.name, lock)
            reason = self._loop(waiter)
            log.info("leaving: %s", reason.value)
            return reason
        finally:
            if waiter is not None:
                waiter.close()
            client.close()
            self.dir.close()
            self._stop.close()

    def _make_waiter(self, d: SessionDir, client: ProcessWatch) -> Waiter:
        return open_waiter(d, self._stop, client, self.wait_mode, fstype.detect(d.fd, d.path))

    def _loop(self, waiter: Waiter) -> ExitReason:
        assert self.dir is not None
        last = time.monotonic()
        hint, complete = True, False
        recheck_at: float | None = None
        while True:
            if self._stop_reason is not None:
                return self._stop_reason
            if self.dir.gone():
                return ExitReason.DIR_REMOVED
            if hint:
                hint = False
                outcome = self._take(complete)
                if outcome == "served":
                    last = time.monotonic()
                    waiter.activity()
                    hint = True  # another may be there already
                    continue
                recheck_at = time.monotonic() + RECHECK_S if outcome == "recheck" else None
            now = time.monotonic()
            deadlines = [at for at in (recheck_at,) if at is not None]
            if waiter.name != "inotify":  # a poller looks at least this often
                deadlines.append(now + POLL_CAP_S)
            if self.idle_timeout_s:
                deadlines.append(last + self.idle_timeout_s)
            wake = waiter.wait(max(0.0, min(deadlines) - now) if deadlines else None)
            reason = wake_exit(wake, self._stop_reason)
            if reason is not None:
                return reason
            now = time.monotonic()
            if self.idle_timeout_s and now >= last + self.idle_timeout_s:
                return ExitReason.IDLE_TIMEOUT
            if recheck_at is not None and now >= recheck_at:
                hint, recheck_at = True, None
            if wake.kind is WakeKind.CHANGES and REQUEST in wake.names:
                if REQUEST in wake.writing:
                    self._clear_stale()  # a request is being written: the old answer goes now
                else:
                    hint, complete = True, REQUEST in wake.complete

    # ------------------------------------------------------------------ one request

    def _clear_stale(self) -> None:
        """Remove ``response.json`` and ``output_*`` once per new request.

        Keyed by "not yet since the last answer", not by the request file's identity: a
        request made again at once can have the same inode and (coarse) times."""
        assert self.dir is not None
        if self._cleared:
            return
        self._cleared = True
        self.dir.unlink(RESPONSE)
        for name in self._names(_OUTPUT_RE):
            self.dir.unlink(name)

    def _names(self, pattern: re.Pattern[str]) -> list[str]:
        assert self.dir is not None
        try:
            return [n for n in os.listdir(self.dir.proc_path(".")) if pattern.match(n)]
        except OSError:
            return []

    def _take(self, complete: bool) -> str:
        """Serve ``request.json`` if there is a new one: ``served``, ``recheck`` (it may
        be half written) or ``none``."""
        assert self.dir is not None
        st = self.dir.lstat(REQUEST)
        if st is None or identity(st) == self._unremovable:
            return "none"
        self._unremovable = None
        self._clear_stale()
        try:
            data, st = self.dir.read_small(REQUEST, self.limits.max_request_bytes)
            method, parameters = parse_request(data)
        except FileNotFoundError:
            return "none"
        except TooLargeError as exc:
            result: Result = (False, f"Server error: {exc.strerror}", {})
        except OSError as exc:
            result = (False, f"Server error: cannot read request.json: {exc.strerror}", {})
        except RequestError as exc:
            key = (*identity(st), st.st_size)
            if not complete and key != self._malformed_seen:
                self._malformed_seen = key  # perhaps still being written: look again
                return "recheck"
            result = (False, f"Server error: {exc}", {})
        else:
            result = self._call(method, parameters)
        self._malformed_seen = None
        if not self.dir.unlink(REQUEST, expect=st):
            now = self.dir.lstat(REQUEST)  # gone, rewritten (served next), or unremovable
            if now is not None and identity(now) == identity(st) and not self.dir.unlink(REQUEST):
                log.error("%s cannot be removed; ignored until it changes", REQUEST)
                self._unremovable = identity(st)
        for name in self._names(_INPUT_RE):
            self.dir.unlink(name)
        self._answer(*result)
        self._cleared = False
        self.served += 1
        return "served"

    def _call(self, method: str, parameters: dict[str, Any]) -> Result:
        started = time.perf_counter()
        self.busy = True
        try:
            out = self.handler(method, parameters)
            success, message, result = out
            if not isinstance(result, dict):
                raise TypeError(f"main_logic's result is a {type(result).__name__}, not a dict")
            json.dumps(result)  # serializable, or the error below
        except Exception as exc:
            log.exception("main_logic(%r) failed", method)
            return False, f"Server error: {exc}", {}
        finally:
            self.busy = False
        log.debug("%s -> %s in %.2f ms", method, success, (time.perf_counter() - started) * 1e3)
        return bool(success), str(message), result

    def _answer(self, success: bool, message: str, result: dict[str, Any]) -> None:
        assert self.dir is not None
        if not success:
            log.warning("request failed: %s", message)
        try:
            self.dir.write_atomic(RESPONSE, encode_response(success, message, result))
        except OSError as exc:
            log.error("cannot write %s: %s", RESPONSE, exc)


class RenaissanceServer:
    """Upstream's V3 server base class, served for the whole session (see the module
    docstring). Override :meth:`main_logic`; ``super().main_logic(...)`` serves the
    built-in commands. ``run()`` returns when the session ends."""

    def __init__(
        self,
        session_dir: str | os.PathLike[str],
        *,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        client_pid: int | None = None,
        wait: WaitMode = "auto",
        limits: Limits | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.session_dir = Path(session_dir)
        self.request_path = self.session_dir / REQUEST
        self.response_path = self.session_dir / RESPONSE
        self.registry = DEFAULT if registry is None else registry
        self.limits = limits or Limits()
        self._options: dict[str, Any] = {
            "idle_timeout_s": idle_timeout_s,
            "client_pid": client_pid,
            "wait": wait,
        }
        self._loop: V3Loop | None = None

    def run(self) -> ExitReason:
        """Serve the session until SIGTERM, the directory's removal, the client's exit or
        the idle time-out; :class:`~tsr_worker.sessiondir.DirectoryBusyError`, nothing
        written, if another server serves the directory. SIGTERM, SIGINT and SIGHUP end
        it at once, even during a computation (the C++ ``stop()`` kills 5 s later anyway,
        then removes the directory); the handlers are installed in the main thread only."""
        loop = V3Loop(self.session_dir, self.main_logic, limits=self.limits, **self._options)
        loop.claim()  # refused (DirectoryBusyError) before anything starts or is written
        self._loop = loop
        # torch in the background: the client gives each call 10 s, the first one included
        threading.Thread(target=_preload_torch, name="tsr-v3-preload", daemon=True).start()

        def on_signal() -> None:
            loop.stop(ExitReason.SIGNAL)
            if loop.busy:
                raise _Terminated

        try:
            with signals_call(on_signal):
                return loop.run()
        except _Terminated:
            log.info("leaving: signal during a computation")
            return ExitReason.SIGNAL
        finally:
            self._loop = None

    def main_logic(self, method: str, parameters: dict[str, Any]) -> Result:
        """Serve one request (override it): the built-in tensor commands (inputs
        ``input_0..``, results ``output_0..``, message ``"tsr"``) and ``print_tensor``
        (``output_0.txt``, message ``"txt"``)."""
        del parameters  # the built-in commands take none
        if method == "print_tensor":
            self._save_text(f"{self.load_input_tensor(0)}\n", 0)
            return True, "txt", {"output_count": 1}
        cmd = self.registry.get(method)
        if cmd is None or cmd.inputs is None:
            return False, f"Unknown method: {method}", {}
        count = cmd.inputs if isinstance(cmd.inputs, int) else len(cmd.inputs)
        try:
            inputs = [self.load_input_tensor(i) for i in range(count)]
            out = cmd.func(*inputs)
            results = list(out) if isinstance(out, (list, tuple)) else [out]
            for i, t in enumerate(results):
                self.save_output_tensor(t, i)
        except Exception as exc:
            return False, f"{method} failed: {_describe(exc)}", {}
        return True, "tsr", {"output_count": len(results)}

    def load_input_tensor(self, index: int) -> torch.Tensor:
        """``input_<index>.tsr`` as a torch tensor (TSR3; the codec also reads TSR v1);
        ``FileNotFoundError`` if it is missing. Links and non-regular files are refused."""
        import tsr.torch

        name = f"input_{_index(index)}.tsr"
        with self._open(name) as f:
            size = os.fstat(f.fileno()).st_size
            if size > self.limits.max_input_bytes:
                raise ValueError(
                    f"{name} has {size} bytes, the limit is {self.limits.max_input_bytes}"
                )
            return tsr.torch.load(f, mmap=False, reserved_dtypes=True)

    def save_output_tensor(self, tensor: torch.Tensor, index: int) -> None:
        """Write ``output_<index>.tsr`` (TSR3 RAW, what the C++ reader takes), atomically."""
        import tsr.torch

        name = f"output_{_index(index)}.tsr"
        tsr.torch.save(self._path(name), tensor, format="v3", follow_symlinks=False)

    def _save_text(self, text: str, index: int) -> None:
        name = f"output_{_index(index)}.txt"
        d = self._dir()
        if d is None:
            (self.session_dir / name).write_text(text, encoding="utf-8")
        else:
            d.write_atomic(name, text.encode("utf-8"))

    @contextlib.contextmanager
    def _open(self, name: str) -> Iterator[Any]:
        d = self._dir()
        try:
            f = d.open_regular(name) if d is not None else (self.session_dir / name).open("rb")
        except FileNotFoundError:
            raise FileNotFoundError(
                f"Input tensor file not found: {self.session_dir / name}"
            ) from None
        with f:
            yield f

    def _dir(self) -> SessionDir | None:
        return None if self._loop is None else self._loop.dir

    def _path(self, name: str) -> str:
        d = self._dir()
        return d.proc_path(name) if d is not None else str(self.session_dir / name)


def _preload_torch() -> None:
    with contextlib.suppress(Exception):  # a request that needs it reports the failure
        import tsr.torch  # noqa: F401


def _index(index: int) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"tensor index must be an int >= 0, got {index!r}")
    return index
