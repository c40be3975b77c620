"""``tsr-worker``: run the reference worker on one session, or write a launcher script.

Usage::

    tsr-worker [SESSION_ID] [--workspace DIR] [--layout python_session|pytorch_session]
               [--session-dir DIR] [--idle-timeout S] [--client-pid PID]
               [--wait auto|inotify|poll|upstream] [--commands MODULE_OR_FILE ...]
               [--max-request-bytes N] [--max-params-chars N] [--max-input-bytes N]
               [--max-inputs N] [--threads N] [--no-preload] [--log-level LEVEL]
    tsr-worker --write-launcher PATH [--workspace DIR] [--layout ...] [worker options]
    tsr-worker --write-launcher PATH --server SCRIPT [--workspace DIR]

A first argument that is a path ending in ``python_session_id<N>`` is the V3
PythonSession's ``<server_script> <session_dir>``: that directory is served with the
built-in commands (:mod:`tsr_worker.v3session`). Otherwise the session directory is
``<WORKSPACE>/<layout>/tr_session_<SESSION_ID>`` (workspace:
``--workspace``, else ``$TSR_WORKSPACE``, else ``./workspace``; session ``default``), or
``--session-dir``. This entry point is the only place of the worker that installs signal
handlers (users' servers, :mod:`tsr_worker.compat`, install theirs in ``run``): SIGTERM,
SIGINT and SIGHUP (where they exist: Windows has no SIGHUP, and adds SIGBREAK) end the worker
after the current request.

The C++ client runs ``python3 "<script_path>" <session_id>``. ``--write-launcher PATH``
writes such a script: run by any ``python3``, it re-executes the interpreter tsr is
installed in (this one) as ``-m tsr_worker`` with the session id and the options given
here (the workspace made absolute). With ``--server SCRIPT`` it runs a user's server
script (:mod:`tsr_worker.compat`) with that interpreter instead, ``--workspace`` passed
as ``$TSR_WORKSPACE``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from . import protocol
from .config import (
    DEFAULT_IDLE_TIMEOUT_S,
    MAX_IDLE_TIMEOUT_S,
    Limits,
    WorkerConfig,
    check_idle_timeout,
    resolve_workspace,
    session_dir,
)
from .sessiondir import DirectoryBusyError
from .signals import SIGNALS

__all__ = ["build_parser", "load_commands", "main", "write_launcher"]

EXIT_BUSY = 3
"""Exit status when another worker already serves the session directory."""
LOG_FORMAT = "%(asctime)s tsr-worker[%(process)d] %(levelname)s %(message)s"
_V3_DIR_RE = re.compile(r"python_session_id[0-9]+\Z")
_LIMIT_OPTIONS = {
    "max_request_bytes": "largest request.json, bytes",
    "max_params_chars": "longest params, characters",
    "max_input_bytes": "largest input .tsr file, bytes",
    "max_inputs": "most tensor tags in one request",
    "max_result_bytes": "largest result .tsr file, bytes",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tsr-worker``."""
    p = argparse.ArgumentParser(
        prog="tsr-worker",
        description="Serve a Tech Renaissance PythonSession directory (the reference worker).",
    )
    p.add_argument("session_id", nargs="?", default="default", help="session id (default: default)")
    p.add_argument(
        "--workspace", help="workspace directory (default: $TSR_WORKSPACE or ./workspace)"
    )
    p.add_argument(
        "--layout",
        choices=protocol.LAYOUTS,
        default=protocol.LAYOUTS[0],
        help="directory layout: python_session (current C++) or pytorch_session (V1.20)",
    )
    p.add_argument("--session-dir", help="serve this directory instead (overrides the above)")
    p.add_argument(
        "--idle-timeout",
        type=_idle_seconds,
        metavar="S",
        help=f"leave after S seconds without a request, at most {MAX_IDLE_TIMEOUT_S:g}; "
        f"0: never (default {DEFAULT_IDLE_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--client-pid",
        type=int,
        metavar="PID",
        help="leave when this process exits; 0: watch none (default: discover it)",
    )
    p.add_argument(
        "--wait",
        choices=("auto", "inotify", "poll", "upstream"),
        help="inotify (event-driven), poll (fast while active, backing off when idle), "
        "upstream (the upstream 32-1024 ms schedule); default auto: inotify on local "
        "filesystems, poll on network and FUSE ones",
    )
    p.add_argument(
        "--commands",
        action="append",
        metavar="MODULE",
        help="import this module (or .py file) to register extra commands; repeatable",
    )
    defaults = Limits()
    for name, what in _LIMIT_OPTIONS.items():
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            metavar="N",
            help=f"{what} (default {getattr(defaults, name)})",
        )
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch intra-op threads (default: torch's choice)",
    )
    p.add_argument(
        "--no-preload",
        action="store_true",
        default=None,
        help="import torch on the first tensor request, not in the background at start-up",
    )
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="log level on stderr (default warning)",
    )
    p.add_argument(
        "--write-launcher",
        metavar="PATH",
        help="write a launcher script for the C++ client at PATH and exit",
    )
    p.add_argument(
        "--server",
        metavar="SCRIPT",
        help="with --write-launcher: the launcher runs this server script of yours (a "
        "tsr_worker.compat server) instead of the worker; only --workspace applies",
    )
    return p


def _idle_seconds(text: str) -> float:
    """``--idle-timeout``: a number of seconds, 0 to a week (inf, nan, 1e300 and negative
    values are usage errors)."""
    try:
        return check_idle_timeout(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 0 (never) or a number of seconds up to {MAX_IDLE_TIMEOUT_S:g} "
            "(a week)"
        ) from None


def load_commands(spec: str) -> None:
    """Import a module name or a ``.py`` file, so that its ``@command``s register."""
    import importlib
    import importlib.util

    if spec.endswith(".py") or os.sep in spec:
        path = os.path.abspath(spec)
        mod_name = "tsr_worker_commands_" + os.path.splitext(os.path.basename(path))[0]
        loader = importlib.util.spec_from_file_location(mod_name, path)
        if loader is None or loader.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(loader)
        sys.modules[mod_name] = module
        loader.loader.exec_module(module)
    else:
        importlib.import_module(spec)


def _worker_options(args: argparse.Namespace) -> list[str]:
    """The options a launcher passes on: workspace (absolute), layout, and the others
    given explicitly."""
    out = ["--workspace", resolve_workspace(args.workspace), "--layout", args.layout]
    if args.idle_timeout is not None:
        out += ["--idle-timeout", repr(args.idle_timeout)]
    if args.wait is not None:
        out += ["--wait", args.wait]
    for spec in args.commands or ():
        out += ["--commands", os.path.abspath(spec) if spec.endswith(".py") else spec]
    for name in _LIMIT_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            out += ["--" + name.replace("_", "-"), str(value)]
    if args.threads is not None:
        out += ["--threads", str(args.threads)]
    if args.no_preload:
        out.append("--no-preload")
    if args.log_level is not None:
        out += ["--log-level", args.log_level]
    return out


_LAUNCHER = """#!/usr/bin/env python3
# Launcher for the tsr reference worker, written by `tsr-worker --write-launcher`.
# The C++ PythonSession runs: python3 "<this file>" <session_id>
# (the V3 PythonSession: <python> "<this file>" <session_dir>).
# Whichever python3 runs it, it re-executes the Python that has tsr installed.
import os
import sys

PYTHON = {python!r}
WORKER_ARGS = {args!r}
SERVER_SCRIPT = {script!r}
ENVIRONMENT = {env!r}

if __name__ == "__main__":
    if SERVER_SCRIPT is None:
        argv = [PYTHON, "-m", "tsr_worker"] + sys.argv[1:] + WORKER_ARGS
    else:
        argv = [PYTHON, SERVER_SCRIPT] + sys.argv[1:]
    os.environ.update(ENVIRONMENT)
    try:
        if os.name == "nt":  # Windows' execv neither quotes arguments nor replaces us
            import subprocess

            sys.exit(subprocess.call(argv))
        os.execv(PYTHON, argv)
    except OSError as exc:
        sys.stderr.write("tsr-worker launcher: cannot run %s: %s\\n" % (PYTHON, exc))
        sys.exit(127)
"""


def write_launcher(
    path: str,
    worker_args: Sequence[str],
    python: str | None = None,
    *,
    server: str | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Write the launcher script at ``path`` (mode 0755, atomically, parent directories
    created); return its absolute path. ``python`` defaults to this interpreter
    (``sys.executable``). With ``server`` (a script path, made absolute) the launcher runs
    that script with the client's arguments instead of the worker, ``env`` set."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = _LAUNCHER.format(
        python=python or sys.executable,
        args=list(worker_args),
        script=None if server is None else os.path.abspath(server),
        env=dict(env or {}),
    )
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    return path


def main(argv: Sequence[str] | None = None, *, exit_process: bool = True) -> int:
    """Entry point of ``tsr-worker``; returns the exit status.

    Once a worker has run, ``exit_process`` ends the process at once with ``os._exit``
    after flushing the logs: tearing down torch takes about half a second that a client
    waiting for the process to end has no use for (every file is already closed).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(args.log_level or "warning").upper(), format=LOG_FORMAT, stream=sys.stderr
    )
    if is_v3_session_path(args.session_id) and not (args.write_launcher or args.server):
        return _serve_v3(parser, args, exit_process=exit_process)
    try:  # the same checks whether the worker runs now or from a launcher later
        limits = Limits(
            **{n: getattr(args, n) for n in _LIMIT_OPTIONS if getattr(args, n) is not None}
        )
        directory = args.session_dir or session_dir(
            resolve_workspace(args.workspace), args.session_id, args.layout
        )
        idle_s = DEFAULT_IDLE_TIMEOUT_S if args.idle_timeout is None else args.idle_timeout
        config = WorkerConfig(
            os.path.abspath(directory),
            limits=limits,
            idle_timeout_s=idle_s,
            client_pid=args.client_pid,
            wait=args.wait or "auto",
            preload=not args.no_preload,
            threads=args.threads or 0,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.write_launcher:
        if args.session_dir or args.client_pid is not None or args.session_id != "default":
            parser.error("--write-launcher takes no session id, --session-dir or --client-pid")
        if args.server:
            return _write_server_launcher(parser, args)
        written = write_launcher(args.write_launcher, _worker_options(args))
        print(written)
        return 0
    if args.server:
        parser.error("--server goes with --write-launcher")
    from .worker import ExitReason, Worker  # after argument errors, which need nothing of it

    worker = Worker(config)
    if not _load_all(args.commands or ()):
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("tsr_worker").info("signal %d: leaving after the current request", signum)
        worker.stop(ExitReason.SIGNAL)

    for sig in SIGNALS:  # those the platform has (no SIGHUP on Windows)
        signal.signal(sig, on_signal)
    return _serve(worker.run, "", exit_process=exit_process)


def _load_all(specs: Sequence[str]) -> bool:
    """Load every ``--commands`` module; on a failure say which and return False."""
    for spec in specs:
        try:
            load_commands(spec)
        except Exception as exc:
            print(f"tsr-worker: cannot load commands from {spec}: {exc}", file=sys.stderr)
            return False
    return True


def _serve(run: Callable[[], object], what: str, *, exit_process: bool) -> int:
    """Run a serving loop to its end: :data:`EXIT_BUSY` when another worker serves the
    directory, 1 on a system error (``what`` prefixes its message), else :func:`_leave`."""
    try:
        run()
    except DirectoryBusyError as exc:
        print(f"tsr-worker: {exc.strerror}", file=sys.stderr)
        return EXIT_BUSY
    except OSError as exc:
        print(f"tsr-worker: {what}{exc}", file=sys.stderr)
        return 1
    return _leave(exit_process)


def _leave(exit_process: bool) -> int:
    """0, or with ``exit_process`` the process ended at once (logs flushed)."""
    if exit_process:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


# ----------------------------------------------------------------------------- users' servers


def is_v3_session_path(arg: str) -> bool:
    """Whether the one argument is the V3 PythonSession's session directory
    (``<TR_WORKSPACE>/python_session_id<N>``: a path, never a valid session id, whose last
    component is ``python_session_id`` and digits) rather than a session id."""
    has_sep = any(sep and sep in arg for sep in ("/", os.sep, os.altsep))
    return has_sep and _V3_DIR_RE.match(os.path.basename(os.path.normpath(arg))) is not None


def _write_server_launcher(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    given = [o for o in _worker_options(args)[4:] if o.startswith("--")]
    if given or args.layout != protocol.LAYOUTS[0]:
        parser.error(f"--server takes only --workspace (got {' '.join(given) or '--layout'})")
    if not os.path.isfile(args.server):
        parser.error(f"--server {args.server}: no such file")
    env = {"TSR_WORKSPACE": resolve_workspace(args.workspace)} if args.workspace else {}
    print(write_launcher(args.write_launcher, [], server=args.server, env=env))
    return 0


def _serve_v3(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *, exit_process: bool
) -> int:
    """Serve a V3 PythonSession directory with the built-in commands (see
    :mod:`tsr_worker.v3session`); ``--workspace`` and ``--layout`` do not apply."""
    from .v3session import RenaissanceServer

    if args.session_dir:
        parser.error("a V3 session directory argument and --session-dir exclude each other")
    try:
        limits = Limits(
            **{n: getattr(args, n) for n in _LIMIT_OPTIONS if getattr(args, n) is not None}
        )
        idle_s = DEFAULT_IDLE_TIMEOUT_S if args.idle_timeout is None else args.idle_timeout
        server = RenaissanceServer(
            args.session_id,
            idle_timeout_s=idle_s,
            client_pid=args.client_pid,
            wait=args.wait or "auto",
            limits=limits,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if not _load_all(args.commands or ()):
        return 1
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return _serve(server.run, f"V3 session {args.session_id}: ", exit_process=exit_process)
