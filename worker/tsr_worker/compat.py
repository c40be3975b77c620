"""Users' own servers, written for upstream's ``tech_renaissance.py``, on this worker.

Upstream's framework lets users subclass ``TechRenaissanceServer`` and override
``main_logic(command, parameters) -> bool``; the subclass answers with
``write_response(cmd, params)``, reads tensors with ``get_tensors(params, n)`` and sends
results with ``send_tensors(*tensors)``. Such a script runs here unchanged but for its
import line::

    from tsr_worker.compat import TechRenaissanceServer, import_tsr, export_tsr

``run(session_id)`` serves the session on this project's worker loop
(:class:`tsr_worker.worker.Worker`): event-driven waiting, the session directory held open
(no tag reads or deletes outside it), the input limits, the exits (``exit``, ``exit.flag``,
status ``exit``, SIGTERM/SIGINT/SIGHUP, the directory removed, the client gone, the idle
time-out) and exactly one answer per request. Where upstream is broken, this is right:

- ``main_logic`` returning false, or raising, answers ``invalid`` (with an ``error``) and
  the server keeps serving (upstream writes ``error:...`` to ``status.txt``, gives no
  answer and leaves its loop, so the client times out and every later call fails);
- a request answers once: ``get_tensors`` with the wrong tag count answers ``invalid``,
  and the script's own ``write_response('', 'invalid')`` after it is dropped (upstream
  writes both, so every later reply is one request behind);
- several results are tagged ``r0,r1,...`` (upstream writes ``r0r``);
- ``get_tsr_info`` reports INT32 files as ``INT32`` (upstream says ``INT8``);
- the session directory is ``<workspace>/python_session/tr_session_<id>``, the workspace
  being the ``workspace=`` argument, else ``$TSR_WORKSPACE``, else ``<root>/workspace``
  when the script is at ``<root>/python/<dir>/<script>.py`` (where upstream's rule, three
  levels up from its module file, points in a framework checkout), else ``./workspace``.

The V3 PythonSession's base class, :class:`RenaissanceServer`, is here too (see
:mod:`tsr_worker.v3session`). Importing this module imports neither torch nor NumPy.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from . import protocol
from .config import WorkerConfig, resolve_workspace
from .config import session_dir as _session_dir
from .protocol import ErrorCode, ErrorInfo, ProtocolError, Request
from .signals import signals_call
from .v3session import RenaissanceServer
from .worker import ExitReason, Worker, _Answer, _describe

if TYPE_CHECKING:
    import torch

__all__ = [
    "RenaissanceServer",
    "TechRenaissanceServer",
    "export_tsr",
    "get_tsr_info",
    "import_tsr",
]

log = logging.getLogger("tsr_worker")

_ALLOWED_DTYPES = ("float32", "int8", "int32")  # what the framework's TSR v1 reader takes
_DTYPE_NAMES = {"float32": "FP32", "int8": "INT8", "int32": "INT32", "bfloat16": "BF16"}


def __getattr__(name: str) -> Any:
    if name == "TSRError":  # upstream's error class: the codec's (imported on demand)
        import tsr

        return tsr.TSRError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------- TSR files


def export_tsr(tensor: torch.Tensor, filename: str) -> None:
    """Write ``tensor`` to ``filename`` as TSR v1 (atomically; upstream wrote in place).

    As upstream: float32, int8 or int32, at most 4 dimensions; anything else raises
    ``TSRError``. Unlike upstream, a tensor on another device is copied to the host.
    """
    _check_result(tensor)
    import tsr.torch

    tsr.torch.save(filename, tensor)


def import_tsr(filename: str) -> torch.Tensor:
    """Read a TSR file as a (writable, CPU) torch tensor of its dtype and shape.

    Bad content raises ``TSRError`` as upstream; a missing file raises
    ``FileNotFoundError`` (upstream: ``TSRError``).
    """
    import tsr.torch

    return tsr.torch.load(filename, mmap=False)


def get_tsr_info(filename: str) -> dict[str, Any]:
    """Upstream's summary of a TSR file: ``filename``, ``shape`` (list), ``dtype``
    (``"FP32"``, ``"INT8"`` or ``"INT32"``; upstream called every non-FP32 file
    ``INT8``), ``ndim``, ``numel``, ``size_bytes``. The whole file is checked, as upstream."""
    t = import_tsr(filename)
    dtype = str(t.dtype).removeprefix("torch.")
    return {
        "filename": filename,
        "shape": list(t.shape),
        "dtype": _DTYPE_NAMES.get(dtype, dtype),
        "ndim": t.dim(),
        "numel": t.numel(),
        "size_bytes": t.numel() * t.element_size(),
    }


def _check_result(tensor: object) -> None:
    """Upstream's export checks, at the call (so a script's ``try`` sees them)."""
    import torch

    import tsr

    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(tensor).__name__}")
    name = str(tensor.dtype).removeprefix("torch.")
    if name not in _ALLOWED_DTYPES:
        raise tsr.UnsupportedDTypeError(
            f"unsupported data type {tensor.dtype}: TSR v1 takes float32, int8 or int32; "
            "convert first, e.g. tensor.float()",
            field="dtype",
            found=str(tensor.dtype),
            expected="torch.float32, torch.int8 or torch.int32",
        )
    if tensor.dim() > 4:
        raise tsr.BadArgumentError(
            f"tensor dimension {tensor.dim()} exceeds the 4-D limit of TSR",
            field="ndim",
            found=tensor.dim(),
            expected="0 to 4",
        )


# ----------------------------------------------------------------------------- the server


def default_workspace() -> str:
    """The workspace when neither ``workspace=`` nor ``$TSR_WORKSPACE`` is given:
    ``<root>/workspace`` if the main script is ``<root>/python/<dir>/<script>.py`` (a
    framework checkout, where upstream's module-relative rule points), else
    ``./workspace``."""
    main = getattr(sys.modules.get("__main__"), "__file__", None) or (sys.argv[0] or "")
    if main and not main.startswith("-"):
        scripts = os.path.dirname(os.path.abspath(main))
        python_dir = os.path.dirname(scripts)
        if os.path.basename(python_dir) == "python":
            return os.path.join(os.path.dirname(python_dir), "workspace")
    return resolve_workspace(None)


class TechRenaissanceServer:
    """Upstream's server base class (see the module docstring); override
    :meth:`main_logic`, then call :meth:`run` with the session id.

    ``workspace`` and ``layout`` (``python_session``, or ``pytorch_session`` for V1.20
    clients) are this project's additions; ``debug=True`` prints what upstream prints.
    """

    def __init__(
        self,
        debug: bool = False,
        *,
        workspace: str | None = None,
        layout: str = protocol.LAYOUTS[0],
    ) -> None:
        self.debug = debug
        self.running = True
        """Set it false (in ``main_logic``) to leave after the current request."""
        self.session_id: str | int = -1
        self.session_dir = ""
        self.status_file = ""
        # upstream's polling attributes; this loop waits on events and ignores them
        self.auto_check_frequency = True
        self.wait_counter = 0
        self.shortest_sleep_time = 32
        self.sleep_time = self.shortest_sleep_time
        self.default_sleep_time = 100
        self.workspace = workspace
        self.layout = layout
        self._worker: Worker | None = None
        self._request: Request | None = None
        self._answer: _Answer | None = None

    # ------------------------------------------------------------------ upstream's API

    def debug_message(self, *args: object) -> None:
        """``print(*args)`` when ``debug`` is on."""
        if self.debug:
            print(*args, flush=True)

    def init_session(self, session_id: str) -> None:
        """Resolve and create the session directory and write ``running`` to the status
        (unless it reads ``ready``), as upstream; ``ValueError`` for an unsafe id.
        (:meth:`run` calls it only where a subclass overrides it, as upstream's ``run``
        does, after taking the directory's lock; otherwise the worker writes ``running``
        itself once it holds the lock and watches the directory.)"""
        self._enter_session(session_id)
        try:
            with open(self.status_file, encoding="utf-8") as f:
                current = f.read().strip()
        except OSError:
            current = ""
        if current != protocol.READY:
            self.write_status(protocol.RUNNING)
        self._announce()

    def _enter_session(self, session_id: str) -> None:
        """Resolve and create the session directory (nothing written in it)."""
        if any(sep and sep in str(session_id) for sep in ("/", os.sep, os.altsep)):
            raise ValueError(
                f"session id {session_id!r} is a path: a V3 PythonSession passes the session "
                "directory; serve it with tsr_worker.compat.RenaissanceServer"
            )
        workspace = self.workspace or os.environ.get("TSR_WORKSPACE") or default_workspace()
        self.session_id = session_id
        self.session_dir = _session_dir(workspace, str(session_id), self.layout)
        os.makedirs(self.session_dir, exist_ok=True)
        self.status_file = os.path.join(self.session_dir, protocol.STATUS)

    def _announce(self) -> None:
        self.debug_message(
            f"[Python] Session {self.session_id} started, directory: {self.session_dir}"
        )
        self.debug_message("[Python] Waiting for requests...")

    def write_status(self, status_str: str) -> None:
        """Write ``status.txt`` (atomically; upstream wrote in place)."""
        tmp = os.path.join(self.session_dir, protocol.STATUS_TMP)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(status_str)
        os.replace(tmp, self.status_file)

    def write_response(self, command: str, parameters: str) -> None:
        """Answer the current request with ``{"cmd": command, "params": parameters}``.

        The answer is written when ``main_logic`` returns (results first). A request has
        one answer: a second call is dropped (logged). Text the C++ reader would not get
        back unchanged (``"``, ``\\``, control characters; UTF-8 is fine) answers
        ``invalid``.
        """
        self._require_request("write_response")
        if self._answered(f"write_response({command!r}, {parameters!r})"):
            return
        self.debug_message(f"[Python] response: {parameters}")
        try:
            cmd = protocol.check_reply_text(command)
            params = protocol.check_reply_text(parameters)
        except ProtocolError as exc:
            self._fail(exc.info)
            return
        self._answer = _Answer(cmd, params)

    def get_tensors(self, p: str, num_tensors: int) -> Any:
        """The ``num_tensors`` tensors that the comma-separated tags ``p`` name (a
        ``torch.Tensor`` for one, else a tuple); each input file is removed after it is read.

        On a wrong count, a bad tag, a missing or bad file or a limit exceeded: ``None``,
        and the request is answered ``invalid`` with the cause (once: the script's own
        ``write_response('', 'invalid')`` that usually follows is dropped).
        """
        worker = self._require_request("get_tensors")
        tags = p.split(",")
        limit = worker.config.limits.max_inputs
        try:
            if len(tags) != num_tensors or len(tags) > limit:
                raise ProtocolError(
                    ErrorCode.WRONG_INPUT_COUNT,
                    f"{num_tensors} tensor tag(s) expected, params {p[:100]!r} name {len(tags)}"
                    + (f" (limit {limit})" if len(tags) > limit else ""),
                )
            for tag in tags:
                protocol.check_tag(tag)
            tensors = worker._load_inputs(tags)
        except ProtocolError as exc:
            self.debug_message(f"[ERROR] get_tensors: {exc.info.message}")
            self._fail(exc.info)
            return None
        return tensors[0] if num_tensors == 1 else tuple(tensors)

    def send_tensors(self, *tensors: torch.Tensor) -> None:
        """Answer the current request with the results: one as ``r.tsr`` (params ``r``),
        several as ``r0.tsr, r1.tsr, ...`` (params ``r0,r1,...``).

        Each must be a float32, int8 or int32 tensor of at most 4 dimensions (else
        ``TSRError`` here, as upstream). A request has one answer: a second is dropped.
        """
        self._require_request("send_tensors")
        if not tensors:
            raise ValueError("send_tensors() needs at least one tensor")
        for t in tensors:
            _check_result(t)
        if self._answered("send_tensors"):
            return
        tags = ["r"] if len(tensors) == 1 else [f"r{i}" for i in range(len(tensors))]
        self._answer = _Answer("", ",".join(tags), tensors=dict(zip(tags, tensors, strict=True)))

    def main_logic(self, command: str, parameters: str) -> bool:
        """Serve one request (override it). Return true when it was handled; false (the
        default: an unknown command) answers ``invalid``."""
        self.debug_message(f"[Python] Unknown command: {command}")
        return False

    def detected_exit_flag(self) -> bool:
        """Whether ``exit.flag`` exists (the loop checks it itself)."""
        return os.path.exists(os.path.join(self.session_dir, protocol.EXIT_FLAG))

    def detected_exit_status(self) -> bool:
        """Whether ``status.txt`` reads ``exit`` (the loop checks it itself)."""
        try:
            with open(self.status_file, encoding="utf-8") as f:
                return f.read().strip() == protocol.EXIT
        except FileNotFoundError:
            return False
        except OSError:
            return True

    def counter_update(self) -> None:
        """Upstream's poll back-off step (kept for scripts that call it; unused here)."""
        level = self.wait_counter // 8
        if level >= 5:
            self.sleep_time = self.shortest_sleep_time * 32
        else:
            self.sleep_time = self.shortest_sleep_time * (1 << level)
            self.wait_counter += 1

    def counter_reset(self) -> None:
        """Upstream's poll back-off reset (kept for scripts that call it; unused here)."""
        self.wait_counter = 0
        self.sleep_time = self.shortest_sleep_time

    def run(self, session_id: str) -> None:
        """Serve session ``session_id`` until a reason to leave; ``terminated`` is the
        last status written. SIGTERM, SIGINT and SIGHUP end it after the current request
        (installed here, in the main thread, and restored on return)."""
        self._enter_session(session_id)
        config = WorkerConfig(self.session_dir)
        worker = Worker(config, handler=self._serve)
        worker.claim()  # refused (DirectoryBusyError) before anything is written
        if type(self).init_session is not TechRenaissanceServer.init_session:
            self.init_session(session_id)  # a user's hook runs, as under upstream's run
        else:
            self._announce()  # the worker writes "running" once it watches the directory
        self._worker = worker
        started = time.monotonic()
        try:
            with signals_call(lambda: self._on_signal(worker)):
                reason = worker.run()
        finally:
            self._worker = None
        self.debug_message(
            f"[Python] Session {session_id} terminated ({reason.value}, "
            f"{time.monotonic() - started:.1f} s)"
        )

    # ------------------------------------------------------------------ the bridge

    def _on_signal(self, worker: Worker) -> None:
        self.debug_message("[Python] Received a signal, preparing to exit...")
        self.running = False
        worker.stop(ExitReason.SIGNAL)

    def _serve(self, request: Request) -> _Answer:
        """The worker's handler: one request through ``main_logic``, one answer."""
        self._request, self._answer = request, None
        self.debug_message(f"[Python] Processing command: {request.cmd}, params: {request.params}")
        failure: ErrorInfo | None = None
        try:
            handled = self.main_logic(request.cmd, request.params)
        except Exception as exc:
            log.exception("main_logic(%r, %r) raised", request.cmd, request.params[:100])
            handled = False
            failure = ErrorInfo(
                ErrorCode.COMPUTATION_FAILED.value, f"main_logic raised {_describe(exc)}"
            )
        finally:
            self._request = None
        if not self.running and self._worker is not None:
            self._worker.stop()
        answer, self._answer = self._answer, None
        if answer is not None:
            if not handled:
                log.warning("main_logic(%r) answered, then failed: its answer stands", request.cmd)
            return answer
        if failure is None and not handled:
            failure = ErrorInfo(
                ErrorCode.COMPUTATION_FAILED.value,
                f"main_logic({request.cmd[:100]!r}, ...) returned {handled!r}: the server "
                "does not know the command or could not serve it",
            )
        if failure is None:
            failure = ErrorInfo(
                ErrorCode.BAD_RESULT.value,
                f"main_logic({request.cmd[:100]!r}, ...) returned {handled!r} without "
                "answering (call write_response or send_tensors)",
            )
        return _Answer("", protocol.INVALID, failure)

    def _require_request(self, what: str) -> Worker:
        if self._request is None or self._worker is None:
            raise RuntimeError(f"{what}() answers a request: call it from main_logic")
        return self._worker

    def _answered(self, what: str) -> bool:
        if self._answer is None:
            return False
        level = logging.DEBUG if self._answer.error is not None else logging.WARNING
        log.log(level, "request already answered (%s); %s dropped", self._answer.params, what)
        return True

    def _fail(self, info: ErrorInfo) -> None:
        log.warning("request failed: %s: %s", info.code, info.message)
        self._answer = _Answer("", protocol.INVALID, info)
