"""The worker loop: serve one session directory until a reason to leave.

One request at a time: read ``request.json``, run the command, wait until the previous
``response.json`` has been consumed, write the result tensors, remove the request, write
the response atomically. Every request gets exactly one answer, and a bad one (malformed,
unknown, missing or invalid input, failing computation, over a limit) is answered
``invalid`` with an ``error`` beside it and a log line; the loop never dies of a request.

:meth:`Worker.run` returns an :class:`ExitReason`; :meth:`Worker.stop` (thread- and
signal-safe) ends it after the current request. The worker installs no signal handler:
that is the entry point's business (:mod:`tsr_worker.cli`).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import select
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any, BinaryIO

from . import commands as _builtins  # noqa: F401  (registers the built-in commands)
from . import fstype, protocol
from .config import WorkerConfig
from .procwatch import ProcessWatch, discover_client
from .protocol import ErrorCode, ErrorInfo, ProtocolError, Reply, Request
from .registry import DEFAULT, Command, Registry
from .sessiondir import NotRegularFileError, SessionDir, TooLargeError, identity
from .waiting import (
    InotifyUnavailableError,
    InotifyWaiter,
    PollWaiter,
    StopPipe,
    UpstreamPollWaiter,
    Waiter,
    Wake,
    WakeKind,
    choose,
    inotify_available,
)

if TYPE_CHECKING:
    import torch

__all__ = ["ExitReason", "Worker"]

log = logging.getLogger("tsr_worker")

REMOTE_RECHECK_S = 3.0
"""On a network or FUSE filesystem an input shorter than its header declares is read again
for this long before it is answered ``invalid_input``: attribute caches (FUSE 1 s, CIFS
1 s by default) may show a file the far side has finished as still short."""
TIMESTAMP_SLACK_S = 0.02
"""How far a file's time stamps may lag the clock (the kernel stamps files with a coarse
clock, one tick behind at most): a request is judged settled by its time stamps only if
they are older than the settle time by this much more."""
MAX_MESSAGE_CHARS = 1000


class ExitReason(str, enum.Enum):
    """Why :meth:`Worker.run` returned."""

    EXIT_COMMAND = "exit_command"
    STATUS_EXIT = "status_exit"
    EXIT_FLAG = "exit_flag"
    SIGNAL = "signal"
    STOPPED = "stopped"
    DIR_REMOVED = "dir_removed"
    IDLE_TIMEOUT = "idle_timeout"
    CLIENT_GONE = "client_gone"


@dataclass
class _Answer:
    cmd: str
    params: str
    error: ErrorInfo | None = None
    tensors: dict[str, Any] = field(default_factory=dict)
    via_status: bool = False


def _failure(cmd: str, info: ErrorInfo) -> _Answer:
    return _Answer(cmd, protocol.INVALID, info)


Claim = tuple[ProcessWatch, SessionDir, str]
"""A served directory's client watch, open directory and lock kind (``SessionDir.lock``)."""


def claim_session(path: str, *, create: bool, client_pid: int | None) -> Claim:
    """Watch the client, open the session directory and take its one-server lock, writing
    nothing: :class:`~tsr_worker.sessiondir.DirectoryBusyError` if another server holds
    it. Whatever was opened is closed again when a step fails."""
    # The client first: before anything else can let it think we are up and go away.
    client = ProcessWatch(discover_client(client_pid))
    session: SessionDir | None = None
    try:
        session = SessionDir.open(path, create=create)
        # one server per directory: two would both act on each request
        return client, session, session.lock()
    except BaseException:
        if session is not None:
            session.close()
        client.close()
        raise


class Worker:
    """Serves one session directory (see the module docstring)."""

    def __init__(
        self,
        config: WorkerConfig,
        registry: Registry | None = None,
        *,
        handler: Callable[[Request], _Answer] | None = None,
    ) -> None:
        self.config = config
        self.registry = DEFAULT if registry is None else registry
        self.handler = handler
        """Serves every request but ``exit`` in place of the registry: the user servers
        of :mod:`tsr_worker.compat` (``main_logic``). It returns the one answer."""
        self._stop = StopPipe()
        self._stop_reason: ExitReason | None = None
        self._preload_thread: threading.Thread | None = None
        self._preload_error: BaseException | None = None
        self._torch: ModuleType | None = None
        self.waiter_name = ""
        """``inotify``, ``poll`` or ``upstream`` once running."""
        self.fs: fstype.FsType | None = None
        """The session directory's filesystem, once running."""
        self.client_pids: tuple[int, ...] = ()
        """The processes watched for the client's death, once running."""
        # What the loop has to look at; all true at start (an initial scan).
        self._check_flag = self._check_status = self._request_hint = True
        self._request_complete = False  # request.json was seen fully written
        self._recheck_at: float | None = None  # when to look at a settling request again
        self._settling: tuple[tuple[int, ...], float] | None = None  # (signature, since)
        self._held: _Held | None = None  # a request.json answered that cannot be removed
        self._last_request = time.monotonic()
        self._claimed: Claim | None = None

    # ------------------------------------------------------------------ control

    def stop(self, reason: ExitReason = ExitReason.STOPPED) -> None:
        """Ask the loop to leave after the current request (thread- and signal-safe)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop.set()

    def run(self) -> ExitReason:
        """Serve until a reason to leave; ``terminated`` is the last status written
        (unless the directory is gone, which is never re-created)."""
        try:
            client, self._dir, lock = self._claimed or self._claim()
        except BaseException:
            self._stop.close()
            raise
        self._claimed = None
        if lock == "none":
            log.warning(
                "%s cannot be locked here: a second worker would not be refused", self._dir.path
            )
        reason = ExitReason.STOPPED
        waiter: Waiter | None = None
        try:
            # Watch first, then announce: a request written after "running" is seen
            # being written (and waited for) from its first byte.
            waiter = self._make_waiter(client)
            self._waiter = waiter
            if (self._dir.read_text(protocol.STATUS) or "").strip() != protocol.READY:
                try:
                    self._write_status(protocol.RUNNING)
                except OSError as exc:  # e.g. the directory removed meanwhile: the loop sees
                    log.error("cannot write %s: %s", protocol.STATUS, exc)
            self.waiter_name = waiter.name
            if self.config.preload:
                self._preload_thread = threading.Thread(
                    target=self._preload, name="tsr-worker-preload", daemon=True
                )
                self._preload_thread.start()
            log.info(
                "serving %s (wait: %s, lock: %s, client pids: %s, idle timeout: %s s)",
                self._dir.path,
                waiter.name,
                lock,
                list(client.pids) or "none",
                self.config.idle_timeout_s or "off",
            )
            reason = self._loop()
            log.info("leaving: %s", reason.value)
        finally:
            if reason is not ExitReason.DIR_REMOVED and not self._dir.gone():
                with contextlib.suppress(OSError):
                    self._write_status(protocol.TERMINATED)
            if waiter is not None:
                waiter.close()
            if self._held is not None:
                self._held.close()
            client.close()
            self._dir.close()
            self._stop.close()
        return reason

    def claim(self) -> None:
        """Open the session directory and take its worker lock, writing nothing:
        :class:`~tsr_worker.sessiondir.DirectoryBusyError` if another worker serves it.
        :meth:`run` does this itself; call it first to be refused before doing anything
        else (the user servers of :mod:`tsr_worker.compat` do)."""
        if self._claimed is None:
            self._claimed = self._claim()

    def _claim(self) -> Claim:
        config = self.config
        claimed = claim_session(config.session_dir, create=True, client_pid=config.client_pid)
        self.client_pids = claimed[0].pids
        return claimed

    def _make_waiter(self, client: ProcessWatch) -> Waiter:
        self.fs = fstype.detect(self._dir.fd, self._dir.path)
        return open_waiter(self._dir, self._stop, client, self.config.wait, self.fs)

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> ExitReason:
        self._last_request = time.monotonic()
        if self._dir.gone():  # removed before the watch was in place
            return ExitReason.DIR_REMOVED
        while True:
            reason = self._pending_exit()
            if reason is not None:
                return reason
            if self._request_hint:
                try:
                    reason = self._take_request()
                except Exception:  # a bug of ours; the worker outlives it
                    log.exception("unexpected error while serving a request")
                    self._request_hint = False
                    reason = None
                if reason is not None:
                    return reason
                if self._request_hint:
                    continue  # served one: look for the next at once
            reason = self._on_wake(self._waiter.wait(self._timeout_s()))
            if reason is not None:
                return reason

    def _pending_exit(self) -> ExitReason | None:
        """The exit signalled by a stop, ``exit.flag`` or status ``exit``, if any."""
        if self._stop_reason is not None:
            return self._stop_reason
        if self._check_flag:
            self._check_flag = False
            if self._dir.exists(protocol.EXIT_FLAG):
                return ExitReason.EXIT_FLAG
        if self._check_status:
            self._check_status = False
            if (self._dir.read_text(protocol.STATUS) or "").strip() == protocol.EXIT:
                return ExitReason.STATUS_EXIT
        return None

    def _timeout_s(self) -> float | None:
        now = time.monotonic()
        candidates = []
        if self.config.idle_timeout_s:
            candidates.append(self._last_request + self.config.idle_timeout_s - now)
        if self._recheck_at is not None:
            candidates.append(self._recheck_at - now)
        return max(0.0, min(candidates)) if candidates else None

    def _on_wake(self, wake: Wake) -> ExitReason | None:
        """Record what a wake means; return the exit it calls for, if any."""
        reason = wake_exit(wake, self._stop_reason)
        if reason is not None:
            return reason
        now = time.monotonic()
        if self.config.idle_timeout_s and now >= self._last_request + self.config.idle_timeout_s:
            return ExitReason.IDLE_TIMEOUT
        if self._recheck_at is not None and now >= self._recheck_at:
            self._recheck_at = None
            self._request_hint = True
        if wake.kind is WakeKind.CHANGES:
            self._check_flag |= protocol.EXIT_FLAG in wake.names
            self._check_status |= protocol.STATUS in wake.names
            if protocol.REQUEST in wake.writing and self._being_written(protocol.REQUEST):
                # created in place and still open: its writer's close will be seen
                self._request_hint = self._request_complete = False
                self._recheck_at = self._settling = None
            elif protocol.REQUEST in wake.names:
                self._request_hint = True
                self._request_complete = protocol.REQUEST in wake.complete
        return None

    def _being_written(self, name: str) -> bool:
        """A regular file seen created and not yet closed. A hard link (created, never
        opened) has more than one name: it is complete or settles like an unseen file."""
        st = self._dir.lstat(name)
        return st is not None and stat.S_ISREG(st.st_mode) and st.st_nlink == 1

    # ------------------------------------------------------------------ one request

    def _take_request(self) -> ExitReason | None:
        """Serve ``request.json`` if it is there and complete; leaves ``_request_hint``
        set if a request was answered (there may be another)."""
        complete, self._request_complete = self._request_complete, False
        self._request_hint = False
        found = self._dir.lstat(protocol.REQUEST)
        if found is None:
            self._settling = None
            return None
        if self._held is not None:
            if self._held.answered(found):
                return None  # answered already; it stays until it changes
            self._held.close()
            self._held = None
        if stat.S_ISREG(found.st_mode) and not complete and not self._settled(found):
            return None  # maybe still being written in place: look again shortly
        self._settling = self._recheck_at = None
        return self._serve(found)

    def _settled(self, st: os.stat_result) -> bool:
        """Whether a request file whose completion was not seen (polling, or there before
        the watch) has been unchanged (inode, size, modification and change time) for
        ``settle_s``: by its time stamps, or by two looks that far apart."""
        settle = self.config.settle_s
        signature = (*identity(st), st.st_size)
        now = time.monotonic()
        if self._settling is None or self._settling[0] != signature:
            if _unchanged_for(st, settle):
                return True
            self._settling = (signature, now)
        elif now >= self._settling[1] + settle:
            return True
        self._recheck_at = self._settling[1] + settle
        return False

    def _serve(self, found: os.stat_result) -> ExitReason | None:
        """Consume the request file ``found``, then execute and answer it.

        The request is removed from ``request.json`` before it is acted on, so a file
        found there later is by construction another request: nothing of an answered
        request is remembered to tell them apart (inode numbers are reused at once, time
        stamps are coarse). Only a request.json that cannot be removed is remembered, by a
        descriptor held on it, until it changes.
        """
        if not stat.S_ISREG(found.st_mode):
            info = ErrorInfo(
                ErrorCode.BAD_REQUEST.value,
                f"{protocol.REQUEST} is {_kind(found.st_mode)}, not a regular file; it is not read",
            )
            self._consume(found, None)
            return self._answer_malformed(_failure("", info), protocol.REQUEST)
        try:
            f = self._dir.open_regular(protocol.REQUEST)
        except FileNotFoundError:
            return None
        except NotRegularFileError:  # replaced meanwhile: look again
            self._request_hint = True
            return None
        except OSError as exc:
            info = ErrorInfo(
                ErrorCode.BAD_REQUEST.value, f"{protocol.REQUEST} cannot be read: {exc.strerror}"
            )
            self._consume(found, None)
            return self._answer_malformed(_failure("", info), protocol.REQUEST)
        with f:
            st = os.fstat(f.fileno())
            try:
                data = _read_bounded(f, st, self.config.limits.max_request_bytes)
            except TooLargeError as exc:
                self._consume(st, f.fileno())
                info = ErrorInfo(ErrorCode.REQUEST_TOO_LARGE.value, str(exc.strerror))
                return self._answer_malformed(_failure("", info), protocol.REQUEST)
            self._consume(st, f.fileno())
        try:
            request = protocol.parse_request(
                data, max_params_chars=self.config.limits.max_params_chars
            )
        except ProtocolError as exc:
            return self._answer_malformed(_failure("", exc.info), data[:200])
        self._arrived()
        if request.name == "exit":
            log.info("exit requested")
            return ExitReason.EXIT_COMMAND
        started = time.perf_counter()
        try:
            answer = self._execute(request)
        except Exception as exc:  # a bug of ours: the request is taken, so still answer it
            log.exception("internal error on %r", request)
            answer = _failure("", ErrorInfo(ErrorCode.INTERNAL_ERROR.value, _describe(exc)))
        log.debug(
            "%s %r -> %r in %.2f ms",
            request.cmd,
            request.params[:100],
            answer.params[:100],
            (time.perf_counter() - started) * 1000,
        )
        if answer.error is not None:
            self._log_failure(answer, data[:200])
        return self._deliver(answer)

    def _consume(self, st: os.stat_result, fd: int | None) -> None:
        """Remove the request file ``st`` (open as ``fd``, if it is) from request.json;
        if it cannot be removed (a directory, no permission), remember it
        (:class:`_Held`), so that it is answered once and not again until it changes.

        It is held open where it can be (``O_PATH`` opens anything on Linux; a regular
        file opens everywhere), so its inode cannot be reused meanwhile; what cannot be
        opened without following it or at all (a link without ``O_NOFOLLOW``, a
        directory on Windows) is removed or remembered by its :func:`identity` alone."""
        held = os.dup(fd) if fd is not None else self._dir.hold(protocol.REQUEST, st)
        try:
            if self._dir.unlink(protocol.REQUEST, expect=st, held=held is not None):
                return
            after = self._dir.lstat(protocol.REQUEST)
            if after is None:
                return
            # held open, its inode is its own; else only the whole identity tells it apart
            keys = 3 if held is not None else len(identity(st))
            if identity(after)[:keys] != identity(st)[:keys]:
                return  # another file (a new request) there already: it is looked at next
            log.error("%s cannot be removed; ignored until it changes", protocol.REQUEST)
            self._held, held = _Held(held, after), None
        finally:
            if held is not None:
                os.close(held)

    def _arrived(self) -> None:
        self._last_request = time.monotonic()
        self._waiter.activity()
        self._request_hint = True

    def _answer_malformed(self, answer: _Answer, what: object) -> ExitReason | None:
        self._arrived()
        return self._deliver(self._log_failure(answer, what))

    def _log_failure(self, answer: _Answer, what: object) -> _Answer:
        assert answer.error is not None
        log.warning("request %r failed: %s: %s", what, answer.error.code, answer.error.message)
        return answer

    def _execute(self, request: Request) -> _Answer:
        """Run a request's command; every failure becomes an error answer."""
        known = self.registry.get(request.name) if _valid_name(request.name) else None
        reply_cmd = request.name if _valid_name(request.name) else ""
        try:
            if self.handler is not None:
                return self.handler(request)
            if known is None:
                raise ProtocolError(
                    ErrorCode.UNKNOWN_COMMAND,
                    f"unknown command {request.cmd[:100]!r}; known: "
                    + ", ".join(["exit", *self.registry.names()]),
                )
            if known.is_text:
                answer = self._run_text(known, request.params)
            else:
                answer = self._run_tensors(known, request.params)
        except ProtocolError as exc:
            answer = _failure(reply_cmd, exc.info)
        except (KeyboardInterrupt, SystemExit) as exc:  # from a handler (a user's server)
            answer = _failure(reply_cmd, _command_failed(exc).info)
        except Exception as exc:
            if _is_out_of_memory(exc):  # not our fault: no trace, its own code
                info = ErrorInfo(ErrorCode.OUT_OF_MEMORY.value, _describe(exc))
            else:  # a bug of ours: still one answer, and a trace in the log
                log.exception("internal error on %r", request)
                info = ErrorInfo(ErrorCode.INTERNAL_ERROR.value, _describe(exc))
            answer = _failure(reply_cmd, info)
        answer.via_status = known is not None and known.answer == "status"
        return answer

    def _run_text(self, cmd: Command, params: str) -> _Answer:
        try:
            text = cmd.func(params)
        except COMMAND_ERRORS as exc:
            raise _command_failed(exc) from None
        if not isinstance(text, str):
            raise ProtocolError(
                ErrorCode.BAD_RESULT, f"text command returned {type(text).__name__}, not str"
            )
        return _Answer(cmd.name, protocol.check_reply_text(text))

    def _run_tensors(self, cmd: Command, params: str) -> _Answer:
        assert cmd.inputs is not None
        if isinstance(cmd.inputs, tuple):
            tags = list(cmd.inputs)
        else:
            tags = protocol.split_tags(params)
            limit = self.config.limits.max_inputs
            if len(tags) != cmd.inputs or len(tags) > limit:
                raise ProtocolError(
                    ErrorCode.WRONG_INPUT_COUNT,
                    f"{cmd.name} takes {cmd.inputs} tensor tag(s), params {params[:100]!r} "
                    f"name {len(tags)}" + (f" (limit {limit})" if len(tags) > limit else ""),
                )
        torch = self._import_torch()
        tensors = self._load_inputs(tags)
        try:
            result = cmd.func(*tensors)
        except COMMAND_ERRORS as exc:
            raise _command_failed(exc) from None
        if isinstance(result, str):  # a verdict about the inputs (compare): reply text
            return _Answer(cmd.name, protocol.check_reply_text(result))
        results = _as_tensors(torch, result)
        if cmd.outputs is not None:
            out_tags = list(cmd.outputs)
            if len(out_tags) != len(results):
                raise ProtocolError(
                    ErrorCode.BAD_RESULT,
                    f"{cmd.name} returned {len(results)} tensor(s) for {len(out_tags)} output tags",
                )
        else:
            out_tags = ["r"] if len(results) == 1 else [f"r{i}" for i in range(len(results))]
        for tag, tensor in zip(out_tags, results, strict=True):
            _check_result(torch, tag, tensor, self.config.limits.max_result_bytes)
        return _Answer(
            cmd.name,
            ",".join(out_tags),
            tensors=dict(zip(out_tags, results, strict=True)),
        )

    # ------------------------------------------------------------------ tensors

    def _preload(self) -> None:
        try:
            self._torch = _import_torch_modules(self.config.threads)
        except BaseException as exc:  # reported on the first tensor request
            self._preload_error = exc

    def _import_torch(self) -> ModuleType:
        if self._preload_thread is not None:
            self._preload_thread.join()
        if self._torch is None and self._preload_error is None:
            try:
                self._torch = _import_torch_modules(self.config.threads)
            except Exception as exc:
                self._preload_error = exc
        if self._torch is None:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                f"torch cannot be imported ({_describe(self._preload_error)}); install "
                "tsr-tensor[worker]",
            )
        return self._torch

    def _load_inputs(self, tags: list[str]) -> list[torch.Tensor]:
        """Load each tag's tensor; every input file opened is removed afterwards.

        Nothing is allocated beyond the limit: the file's size is checked first, and the
        codec refuses a header that does not declare exactly that size before it reads.
        """
        import tsr
        import tsr.torch

        loaded: dict[str, torch.Tensor] = {}
        opened: list[tuple[str, os.stat_result]] = []
        try:
            for tag in dict.fromkeys(tags):
                name = tag + protocol.TENSOR_SUFFIX
                try:
                    f = self._dir.open_regular(name)
                except FileNotFoundError:
                    raise ProtocolError(
                        ErrorCode.MISSING_INPUT, f"input {name} is not in the session directory"
                    ) from None
                except NotRegularFileError as exc:
                    raise ProtocolError(
                        ErrorCode.INVALID_INPUT, f"{exc.strerror}; only regular files are read"
                    ) from None
                except OSError as exc:
                    raise ProtocolError(
                        ErrorCode.INVALID_INPUT, f"cannot open {name}: {exc.strerror}"
                    ) from None
                with f:
                    self._check_input_size(name, f, opened)
                    try:  # the codec checks the header against the file's size first
                        loaded[tag] = tsr.torch.load(f, mmap=False)
                    except tsr.TruncatedError as exc:
                        short: tsr.TSRError | None = exc
                    except tsr.TSRError as exc:
                        raise ProtocolError(ErrorCode.INVALID_INPUT, f"{name}: {exc}") from None
                    except Exception as exc:
                        if not _is_out_of_memory(exc):
                            raise
                        raise ProtocolError(
                            ErrorCode.OUT_OF_MEMORY,
                            f"not enough memory to load {name} "
                            f"({os.fstat(f.fileno()).st_size} bytes)",
                        ) from None
                    else:
                        short = None
                if short is not None:
                    loaded[tag] = self._recheck_short_input(name, short, opened)
        finally:
            for name, seen in opened:
                self._dir.unlink(name, expect=seen)
        return [loaded[t] for t in tags]

    def _check_input_size(
        self, name: str, f: BinaryIO, opened: list[tuple[str, os.stat_result]]
    ) -> None:
        """Note the open input (removed afterwards); refuse it over the size limit."""
        st = os.fstat(f.fileno())
        opened.append((name, st))
        limit = self.config.limits.max_input_bytes
        if st.st_size > limit:
            raise ProtocolError(
                ErrorCode.INPUT_TOO_LARGE, f"{name} has {st.st_size} bytes, the limit is {limit}"
            )

    def _recheck_short_input(
        self, name: str, short: Exception, opened: list[tuple[str, os.stat_result]]
    ) -> torch.Tensor:
        """An input shorter than its header declares, on a filesystem whose caches may lag
        behind the far side (attributes cached, data after the rename): opened and read
        again for up to :data:`REMOTE_RECHECK_S` before it is ``invalid_input``. On a
        local filesystem it is invalid at once (the client wrote it before the request)."""
        import tsr
        import tsr.torch

        waited = 0.0
        if self.fs is not None and not self.fs.events_trusted:
            deadline = time.monotonic() + REMOTE_RECHECK_S
            while time.monotonic() < deadline and not _readable(self._stop.read_fd, 0.02):
                try:
                    with self._dir.open_regular(name) as f:
                        self._check_input_size(name, f, opened)
                        return tsr.torch.load(f, mmap=False)
                except tsr.TruncatedError as exc:
                    short = exc
                except (tsr.TSRError, OSError) as exc:
                    short = exc
                    break
            waited = REMOTE_RECHECK_S - max(0.0, deadline - time.monotonic())
        message = f"{name}: {short}" if not waited else f"{name}: {short} (after {waited:.1f} s)"
        raise ProtocolError(ErrorCode.INVALID_INPUT, message)

    def _write_results(self, answer: _Answer) -> _Answer:
        """Write each result tensor; the first that fails turns the answer into an error
        answer (whatever the cause: every request gets its one answer)."""
        for tag, tensor in answer.tensors.items():
            info = self._write_result(tag + protocol.TENSOR_SUFFIX, tensor)
            if info is not None:
                failed = replace(_failure(answer.cmd, info), via_status=answer.via_status)
                return self._log_failure(failed, answer.cmd)
        return answer

    def _write_result(self, name: str, tensor: Any) -> ErrorInfo | None:
        """Write one result as ``name``: the codec writes a fresh hidden name, which is then
        renamed over ``name`` (a rename never follows a link there)."""
        import tsr
        import tsr.torch

        tmp = self._dir.temp_name(name)
        try:
            tsr.torch.save(self._dir.proc_path(tmp), tensor)
            self._dir.rename(tmp, name)
        except BaseException as exc:
            self._dir.unlink(tmp)
            if isinstance(exc, tsr.TSRError):
                return ErrorInfo(ErrorCode.BAD_RESULT.value, f"result {name}: {exc}")
            if isinstance(exc, OSError):
                what = "a directory has its name" if exc.errno == errno.EISDIR else exc.strerror
                return ErrorInfo(ErrorCode.RESULT_UNWRITABLE.value, f"cannot write {name}: {what}")
            if isinstance(exc, Exception) and _is_out_of_memory(exc):
                return ErrorInfo(ErrorCode.OUT_OF_MEMORY.value, f"result {name}: {_describe(exc)}")
            if isinstance(exc, Exception):  # what the codec cannot convert (sparse, meta...)
                return ErrorInfo(
                    ErrorCode.BAD_RESULT.value,
                    f"result {name} cannot be stored as TSR v1: {_describe(exc)}",
                )
            raise
        return None

    # ------------------------------------------------------------------ answering

    def _deliver(self, answer: _Answer) -> ExitReason | None:
        """Give ``answer`` to the request already consumed: results first, then the reply.

        A command answered through the status (``tensor_square``) writes no response:
        its V1.20 clients write requests in place, wait for the output file and never
        read a response, so one would only be read later as the answer to something
        else. Status ``done`` says it worked, ``error:<code>: <message>`` that it did not
        (the worker keeps serving; the next success sets ``done`` again).
        """
        if answer.via_status:
            answer = self._write_results(answer)
            info = answer.error
            try:
                self._write_status(
                    protocol.DONE if info is None else protocol.status_error_line(info)
                )
            except OSError as exc:
                log.error("cannot write %s: %s", protocol.STATUS, exc)
            return None
        reason = self._wait_consumed()
        if reason is not None:
            return reason
        answer = self._write_results(answer)
        try:
            data = protocol.encode_reply(Reply(answer.cmd, answer.params, answer.error))
        except ProtocolError as exc:
            answer = self._log_failure(_failure("", exc.info), answer.cmd)
            data = protocol.encode_reply(Reply("", answer.params, answer.error))
        try:
            self._dir.write_atomic(protocol.RESPONSE, data)
        except OSError as exc:
            log.error("cannot write %s: %s", protocol.RESPONSE, exc)
        return None

    def _wait_consumed(self) -> ExitReason | None:
        """Wait until the client has deleted the previous ``response.json`` (asked afresh:
        :meth:`SessionDir.present`). Only a regular file there is an unread response;
        anything else (a directory, a link, a FIFO) is a squatter that the response
        replaces (or moves aside)."""
        while self._dir.present(protocol.RESPONSE):
            st = self._dir.lstat(protocol.RESPONSE)
            if st is None or not stat.S_ISREG(st.st_mode):
                return None
            reason = self._pending_exit()
            if reason is not None:
                return reason
            reason = self._on_wake(self._waiter.wait(self._timeout_s()))
            if reason is not None:
                log.warning("leaving with an answer undelivered (response.json not consumed)")
                return reason
        return None

    def _write_status(self, status: str) -> None:
        self._dir.write_atomic(protocol.STATUS, status.encode())


class _Held:
    """A ``request.json`` answered but not removable: it is not answered again while the
    name shows this very file unchanged (:func:`identity` and size). Held open (``fd``)
    where it could be, so that its inode cannot be handed to a new request meanwhile;
    where not (see :meth:`Worker._consume`), a new request would need its inode, type
    and both time stamps to be mistaken for it."""

    def __init__(self, fd: int | None, st: os.stat_result) -> None:
        self.fd = fd
        self._signature = (*identity(st), st.st_size)

    def answered(self, st: os.stat_result) -> bool:
        return (*identity(st), st.st_size) == self._signature

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)


def _kind(mode: int) -> str:
    for test, what in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return f"a device ({stat.filemode(mode)})"


def _read_bounded(f: Any, st: os.stat_result, max_bytes: int) -> bytes:
    """All of the open file ``f`` (``st`` its stat), at most ``max_bytes``."""
    if st.st_size > max_bytes:
        raise TooLargeError(protocol.REQUEST, st.st_size, max_bytes)
    data: bytes = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while we read
        raise TooLargeError(protocol.REQUEST, len(data), max_bytes)
    return data


def _unchanged_for(st: os.stat_result, seconds: float) -> bool:
    """Whether the time stamps of ``st`` say it has not changed for ``seconds`` (with the
    coarse clock's slack). Whole-second stamps (FAT, old NFS) are too coarse to say."""
    changed_ns = max(st.st_mtime_ns, st.st_ctime_ns)
    if changed_ns % 1_000_000_000 == 0:
        return False
    return time.time_ns() - changed_ns >= (seconds + TIMESTAMP_SLACK_S) * 1e9


COMMAND_ERRORS = (Exception, KeyboardInterrupt, SystemExit)
"""What a command may raise and still get its request answered (``computation_failed``,
or ``out_of_memory``): a command that calls ``sys.exit()`` or raises KeyboardInterrupt
does not end the worker (stop it with :meth:`Worker.stop` or a signal)."""


def _command_failed(exc: BaseException) -> ProtocolError:
    if isinstance(exc, Exception) and _is_out_of_memory(exc):
        return ProtocolError(ErrorCode.OUT_OF_MEMORY, _describe(exc))
    return ProtocolError(ErrorCode.COMPUTATION_FAILED, _describe(exc))


def _is_out_of_memory(exc: Exception) -> bool:
    """MemoryError, or torch's allocation failure (``torch.OutOfMemoryError``, or the CPU
    allocator's RuntimeError "can't allocate memory")."""
    if isinstance(exc, MemoryError):
        return True
    return type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    )


def _check_result(torch: ModuleType, tag: str, tensor: Any, max_bytes: int) -> None:
    """Refuse, before anything is written, a result C++ cannot read or that is too large:
    no elements (the C++ reader cannot read an empty tensor), not a dense tensor of host
    memory (sparse, meta...), or a file larger than ``max_bytes``."""
    import tsr

    name = tag + protocol.TENSOR_SUFFIX
    if tensor.layout != torch.strided or tensor.device.type == "meta":
        raise ProtocolError(
            ErrorCode.BAD_RESULT,
            f"result {name} is a {tensor.layout} tensor on {tensor.device.type}; TSR v1 "
            "holds dense tensors (use .to_dense() or real data)",
        )
    if tensor.numel() == 0:
        raise ProtocolError(
            ErrorCode.BAD_RESULT,
            f"result {name} has no elements (shape {tuple(tensor.shape)}); the C++ reader "
            "cannot read an empty tensor",
        )
    size = tsr.HEADER_SIZE + tensor.numel() * tensor.element_size()
    if size > max_bytes:
        raise ProtocolError(
            ErrorCode.RESULT_TOO_LARGE,
            f"result {name} would have {size} bytes, the limit is {max_bytes}",
        )


def wake_exit(wake: Wake, stop_reason: ExitReason | None) -> ExitReason | None:
    """The exit a wake means by itself (a stop, the directory gone, the client gone)."""
    if wake.kind is WakeKind.STOP:
        return stop_reason or ExitReason.STOPPED
    if wake.kind is WakeKind.DIR_GONE:
        return ExitReason.DIR_REMOVED
    if wake.kind is WakeKind.CLIENT_GONE:
        return ExitReason.CLIENT_GONE
    return None


def open_waiter(
    session: SessionDir, stop: StopPipe, client: ProcessWatch, mode: str, fs: fstype.FsType
) -> Waiter:
    """The waiter :func:`~tsr_worker.waiting.choose` picks for ``--wait mode`` on ``fs``
    (the choice logged); inotify failing falls back to polling unless ``mode`` is
    ``inotify``. Also used by the V3 session loop (:mod:`tsr_worker.v3session`)."""
    choice = choose(mode, fs, inotify_available())
    if choice.warning:
        log.warning("%s", choice.warning)
    log.info("waiting by %s: %s", choice.waiter, choice.reason)
    if choice.waiter == "inotify":
        try:
            return InotifyWaiter(session, stop, client)
        except (InotifyUnavailableError, OSError) as exc:
            if mode == "inotify":
                raise
            log.warning("inotify unavailable (%s); polling instead", exc)
    if choice.waiter == "upstream":
        return UpstreamPollWaiter(session, stop, client)
    return PollWaiter(session, stop, client)


def _import_torch_modules(threads: int) -> ModuleType:
    """Import torch and the codec's torch front end; run each kind of kernel once, so
    that the first request does not pay for thread pools and lazy initialisation."""
    import torch
    import torch.nn.functional

    import tsr.torch  # noqa: F401

    if threads:
        torch.set_num_threads(threads)
    x = torch.ones(2, 1, 4, 4)
    torch.mm(x[0, 0], x[0, 0])
    torch.nn.functional.conv2d(x, torch.ones(1, 1, 3, 3))
    torch.nn.functional.conv_transpose2d(x, torch.ones(1, 1, 3, 3), stride=2, padding=1)
    return torch


def _readable(fd: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``fd`` (the stop pipe) to be readable."""
    return bool(select.select([fd], [], [], timeout_s)[0])


def _valid_name(name: str) -> bool:
    try:
        protocol.check_name(name)
    except ValueError:
        return False
    return True


def _as_tensors(torch: ModuleType, result: object) -> list[Any]:
    items = list(result) if isinstance(result, (list, tuple)) else [result]
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise ProtocolError(
            ErrorCode.BAD_RESULT,
            f"command returned {type(result).__name__}; expected a tensor or a sequence of them",
        )
    return items


def _describe(exc: BaseException | None) -> str:
    text = f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."
