"""The stripped-platform test mode: delete from the running interpreter what Linux has
and Windows or macOS lacks, so that the portable paths of ``tsr`` and ``tsr_worker`` run
(and are tested) on Linux.

Used through ``sitecustomize.py`` beside it: with ``TSR_STRIP_PLATFORM=1`` and this
directory on ``PYTHONPATH`` every interpreter strips itself at start-up, before anything
imports the packages: the pytest process and every worker or helper it starts. What goes:

- ``os``: ``pread``/``preadv``/``pwrite``/``pwritev``/``readv``/``writev``,
  ``sched_getaffinity``, ``register_at_fork``, ``pidfd_open``, ``set_blocking``/
  ``get_blocking``, ``getpgrp``/``getpgid``, ``mkfifo``, ``fwalk``, ``posix_fallocate``,
  ``O_NOFOLLOW``/``O_DIRECTORY``/``O_CLOEXEC``/``O_NONBLOCK``; ``dir_fd=``,
  ``src_dir_fd=`` and ``dst_dir_fd=`` refused with ``NotImplementedError`` (as on
  Windows), ``os.supports_dir_fd`` empty, ``scandir``/``listdir`` of a descriptor refused.
- ``select``: ``poll``, ``epoll``, ``devpoll``, ``kqueue`` and their constants.
- ``signal``: ``SIGHUP``, ``SIGUSR1``/``SIGUSR2``, ``SIGALRM``, ``SIGQUIT``, ``alarm``,
  ``setitimer``, ``pthread_kill``, ``pthread_sigmask``.
- ``ctypes``: the libc functions ``inotify_*``, ``fallocate``, ``renameat2`` cannot be
  looked up; ``tsr_platform`` is told there is no ``/proc`` and no Linux libc.

Third-party code that calls ``os.register_at_fork`` unguarded on every non-Windows
platform gets it back while it imports (``random`` is imported before the strip; ``torch``
through :class:`_ForkShim`); our packages never see it.

Kept because the standard library's POSIX code needs them at run time (``subprocess``
sends ``SIGKILL``, pytest reads ``getuid``): what ``mypy --platform win32`` proves absent
from our code instead.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import os
import select
import signal
import sys
from collections.abc import Callable
from typing import Any

STRIPPED = False
_os: Any = os  # assigned to without the type checker's view of os

OS_NAMES = (
    "pread", "preadv", "pwrite", "pwritev", "readv", "writev", "sched_getaffinity",
    "sched_setaffinity", "process_cpu_count", "register_at_fork", "pidfd_open",
    "set_blocking", "get_blocking", "getpgrp", "getpgid", "mkfifo", "fwalk",
    "posix_fallocate", "posix_fadvise", "O_NOFOLLOW", "O_DIRECTORY", "O_CLOEXEC",
    "O_NONBLOCK",
)  # fmt: skip
SELECT_NAMES = ("poll", "epoll", "devpoll", "kqueue", "kevent")
SIGNAL_NAMES = (
    "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGQUIT", "alarm", "setitimer",
    "getitimer", "pthread_kill", "pthread_sigmask",
)  # fmt: skip
LIBC_NAMES = frozenset(
    {"inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
     "fallocate", "renameat2"}
)  # fmt: skip
MODULES: tuple[str, ...] = ()
"""Modules whose import should fail. Not ``fcntl`` and ``resource``: the codec imports
them under ``try`` (``mypy --platform win32`` checks every use is guarded), and the suite
uses them as tools; tests/codec/test_platform.py runs the codec without them."""
DIR_FD_FUNCTIONS = (
    "open", "stat", "lstat", "unlink", "remove", "rename", "replace", "mkdir", "rmdir",
    "access", "chmod", "chown", "utime", "readlink", "symlink", "link", "mknod",
)  # fmt: skip
_DIR_FD_ARGS = ("dir_fd", "src_dir_fd", "dst_dir_fd")


def _refusing_dir_fd(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for key in _DIR_FD_ARGS:
            if kwargs.get(key) is not None:
                raise NotImplementedError(f"{fn.__name__}: {key} unavailable on this platform")
        return fn(*args, **kwargs)

    return wrapper


def _refusing_fd(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(path: Any = ".", *args: Any, **kwargs: Any) -> Any:
        if isinstance(path, int):
            raise NotImplementedError(f"{fn.__name__}: path should be string, bytes or os.PathLike")
        return fn(path, *args, **kwargs)

    return wrapper


class _ForkShim(importlib.abc.MetaPathFinder):
    """Puts ``os.register_at_fork`` back for the duration of ``import torch`` only."""

    def __init__(self, register_at_fork: Callable[..., None]) -> None:
        self._register = register_at_fork

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader, register = spec.loader, self._register
        real_exec = loader.exec_module

        def exec_module(module: Any) -> None:
            _os.register_at_fork = register
            try:
                real_exec(module)
            finally:
                del _os.register_at_fork

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def strip() -> None:
    """Strip this interpreter (idempotent)."""
    global STRIPPED
    if STRIPPED:
        return
    if "torch" not in sys.modules:
        sys.meta_path.insert(0, _ForkShim(os.register_at_fork))
    for mod, names in ((os, OS_NAMES), (select, SELECT_NAMES), (signal, SIGNAL_NAMES)):
        for name in names:
            if hasattr(mod, name):
                delattr(mod, name)
    for name in dir(select):
        if name.startswith(("POLL", "EPOLL", "KQ_")):
            delattr(select, name)
    wrapped = {}
    for name in DIR_FD_FUNCTIONS:
        fn = getattr(os, name, None)
        if fn is not None:
            wrapped[name] = _refusing_dir_fd(fn)
            setattr(os, name, wrapped[name])
    _os.scandir = _refusing_fd(os.scandir)
    _os.listdir = _refusing_fd(os.listdir)
    os.supports_dir_fd = set()
    os.supports_fd = {os.stat}
    os.supports_follow_symlinks = {os.stat}
    if "shutil" in sys.modules:  # decided at its import: use the path-based rmtree
        sys.modules["shutil"]._use_fd_functions = False  # type: ignore[attr-defined]

    for name in MODULES:  # import fails, as on Windows
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]

    import ctypes

    real_cdll = ctypes.CDLL

    class CDLL(real_cdll):  # type: ignore[valid-type, misc]
        def __getattr__(self, name: str) -> Any:
            if name in LIBC_NAMES:
                raise AttributeError(f"{name}: stripped (TSR_STRIP_PLATFORM)")
            return super().__getattr__(name)

        def __getitem__(self, name: Any) -> Any:
            if name in LIBC_NAMES:
                raise AttributeError(f"{name}: stripped (TSR_STRIP_PLATFORM)")
            return super().__getitem__(name)

    ctypes.CDLL = CDLL  # type: ignore[misc]
    ctypes.cdll._dlltype = CDLL  # type: ignore[attr-defined]

    import tsr_platform  # after the stripping: it reads what is left

    tsr_platform.PROCFS = False
    tsr_platform.LINUX_LIBC = False
    STRIPPED = True


def requested() -> bool:
    """Whether ``TSR_STRIP_PLATFORM=1`` asks for the stripped mode."""
    return os.environ.get("TSR_STRIP_PLATFORM") == "1"
