"""Signal handlers for the servers that users run themselves (:mod:`tsr_worker.compat`):
``tsr-worker`` installs its own in its entry point."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator

__all__ = ["SIGNALS", "signals_call"]

log = logging.getLogger("tsr_worker")

SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGBREAK")
    if hasattr(signal, name)
)


@contextlib.contextmanager
def signals_call(callback: Callable[[], None]) -> Iterator[None]:
    """While inside, SIGTERM, SIGINT and SIGHUP call ``callback`` (main thread only;
    elsewhere nothing is installed); the previous handlers are restored on leaving."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: leaving", signum)
        callback()

    previous = {sig: signal.signal(sig, on_signal) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
