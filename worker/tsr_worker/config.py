"""Worker configuration: where the session lives, limits, time-outs, waiting mode."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Literal

from .protocol import LAYOUTS, SESSION_PREFIX, ProtocolError, check_tag

__all__ = [
    "DEFAULT_IDLE_TIMEOUT_S",
    "DEFAULT_SETTLE_S",
    "DEFAULT_WORKSPACE",
    "MAX_IDLE_TIMEOUT_S",
    "Limits",
    "WaitMode",
    "WorkerConfig",
    "check_idle_timeout",
    "resolve_workspace",
    "session_dir",
]

DEFAULT_WORKSPACE = "workspace"
"""Relative to the current directory, when neither ``--workspace`` nor ``TSR_WORKSPACE``."""
WORKSPACE_ENV = "TSR_WORKSPACE"
DEFAULT_IDLE_TIMEOUT_S = 12 * 3600.0
"""No request for this long ends the worker: long enough to outlast any plausible pause
of a live client (an overnight training epoch between two checks), short enough that a
worker whose client died unnoticed goes away the same day."""
MAX_IDLE_TIMEOUT_S = 7 * 24 * 3600.0
"""The longest idle time-out accepted (a week); 0 disables it instead. A finite bound keeps
every wait a plain ``poll`` time-out (``poll`` takes at most 2**31 - 1 ms, 24.8 days)."""

DEFAULT_SETTLE_S = 0.025
"""A request file whose completion the worker could not see (written in place while
polling, or there before the watch was set up) is read only once its size, modification
and change time have not changed for this long: an in-place writer that pauses longer
than this mid-request has its partial request read. A request renamed into place, or
closed after writing under inotify, is read at once."""

WaitMode = Literal["auto", "inotify", "poll", "upstream"]


@dataclass(frozen=True)
class Limits:
    """Bounds on what a request may make the worker read; each is checked before any
    allocation and a breach is answered with its own error code."""

    max_request_bytes: int = 64 * 1024
    """Size of ``request.json`` (``request_too_large``)."""
    max_params_chars: int = 4096
    """Length of the request's params (``params_too_long``)."""
    max_input_bytes: int = 1 << 30
    """Size of one input ``.tsr`` file, header included (``input_too_large``)."""
    max_inputs: int = 16
    """Tags in one request (``wrong_input_count``)."""
    max_result_bytes: int = 1 << 30
    """Size of one result ``.tsr`` file, header included, checked before it is written
    (``result_too_large``)."""

    def __post_init__(self) -> None:
        for name in (
            "max_request_bytes",
            "max_params_chars",
            "max_input_bytes",
            "max_inputs",
            "max_result_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def check_idle_timeout(seconds: float) -> float:
    """Return ``seconds`` if it is a valid idle time-out (0 to :data:`MAX_IDLE_TIMEOUT_S`,
    finite), else raise ``ValueError`` saying what is accepted."""
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_IDLE_TIMEOUT_S):
        raise ValueError(
            f"idle time-out must be 0 (never) or up to {MAX_IDLE_TIMEOUT_S:g} s (a week), "
            f"got {seconds!r}"
        )
    return seconds


def resolve_workspace(workspace: str | None = None) -> str:
    """The workspace directory, absolute: ``workspace``, else ``$TSR_WORKSPACE``, else
    ``./workspace``."""
    chosen = workspace or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
    return os.path.abspath(os.path.expanduser(chosen))


def session_dir(workspace: str, session_id: str, layout: str = LAYOUTS[0]) -> str:
    """``<workspace>/<layout>/tr_session_<session_id>``, absolute.

    The id follows the tag rules (1 to 64 of ``A-Z a-z 0-9 _ . -``, no leading dot, no
    ``..``); ``ValueError`` otherwise, or for an unknown layout.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    try:
        check_tag(session_id)
    except ProtocolError:
        raise ValueError(
            f"session id {session_id!r} is not 1 to 64 characters of A-Z a-z 0-9 _ . - "
            "(not starting with '.', no '..')"
        ) from None
    return os.path.join(os.path.abspath(workspace), layout, SESSION_PREFIX + session_id)


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a :class:`tsr_worker.worker.Worker` needs besides its commands."""

    session_dir: str
    """The session directory (created if missing)."""
    limits: Limits = field(default_factory=Limits)
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    """Leave after this long without a request; 0 disables."""
    client_pid: int | None = None
    """Leave when this process exits: ``None`` discovers the client, 0 watches none
    (see :mod:`tsr_worker.procwatch`)."""
    wait: WaitMode = "auto"
    """``inotify`` (event-driven), ``poll`` (fast while active, backing off when idle),
    ``upstream`` (the upstream worker's 32-1024 ms schedule, for comparison) or ``auto``
    (inotify on local filesystems where available, else poll: :func:`tsr_worker.waiting.choose`)."""
    preload: bool = True
    """Import torch in a background thread at start-up (else on the first tensor request)."""
    settle_s: float = DEFAULT_SETTLE_S
    """A request whose completion was not seen is read once unchanged this long."""
    threads: int = 0
    """Torch intra-op threads (``torch.set_num_threads``); 0 keeps torch's default. A
    worker beside a busy C++ program computes more steadily with 1."""

    def __post_init__(self) -> None:
        check_idle_timeout(self.idle_timeout_s)
        if not (math.isfinite(self.settle_s) and 0 <= self.settle_s <= 60):
            raise ValueError(f"settle_s must be 0 to 60 s, got {self.settle_s!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.wait not in ("auto", "inotify", "poll", "upstream"):
            raise ValueError(f"wait must be auto, inotify, poll or upstream, got {self.wait!r}")
