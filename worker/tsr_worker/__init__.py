"""tsr_worker: the reference worker for the Tech Renaissance C++ ``PythonSession``, and a
Python client with the same calls.

The C++ framework drives a Python process through files in a session directory
(``<workspace>/python_session/tr_session_<id>/``): ``request.json`` in, ``response.json``
and ``.tsr`` tensors out, ``status.txt`` both ways. The protocol is specified in
``spec/session-protocol.md``.

- Run the worker: ``tsr-worker [SESSION_ID] --workspace DIR`` (see :mod:`tsr_worker.cli`);
  give the C++ client a launcher from ``tsr-worker --write-launcher PATH``.
- Add a command: ``@tsr_worker.command("name", inputs=1)`` on a function (see
  :mod:`tsr_worker.registry`).
- Drive a worker from Python: :class:`tsr_worker.Session` (see :mod:`tsr_worker.client`).
- Run a server written for upstream's ``tech_renaissance.py``: change its import to
  :mod:`tsr_worker.compat`.
- Embed the loop: :class:`tsr_worker.Worker` with a :class:`tsr_worker.WorkerConfig`.

Importing this package does not import torch or NumPy.
"""

from . import commands as _commands  # noqa: F401  (registers the built-in commands)
from .client import Session, SessionError, SessionTimeoutError, WorkerError
from .config import Limits, WorkerConfig, resolve_workspace, session_dir
from .protocol import ErrorCode, ErrorInfo
from .registry import DEFAULT, Command, Registry, command
from .worker import ExitReason, Worker

__all__ = [
    "DEFAULT",
    "Command",
    "ErrorCode",
    "ErrorInfo",
    "ExitReason",
    "Limits",
    "Registry",
    "Session",
    "SessionError",
    "SessionTimeoutError",
    "Worker",
    "WorkerConfig",
    "WorkerError",
    "command",
    "resolve_workspace",
    "session_dir",
]
