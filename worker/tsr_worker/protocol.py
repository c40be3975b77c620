"""The file-channel protocol, as data and pure functions (no I/O).

File names, status words, the request grammar (JSON and the legacy plain-text form), the
reply encoding with the character rules the C++ reader imposes, the tag rules, the error
codes, and the adaptive polling schedule both sides share. The normative description is
``spec/session-protocol.md``; this module is its executable form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "ERROR_PREFIX",
    "EXIT_FLAG",
    "INVALID",
    "LAYOUTS",
    "REQUEST",
    "REQUEST_TMP",
    "RESPONSE",
    "RESPONSE_TMP",
    "STATUS",
    "STATUS_TMP",
    "ErrorCode",
    "ErrorInfo",
    "ProtocolError",
    "Reply",
    "Request",
    "backoff_delays_ms",
    "check_name",
    "check_reply_text",
    "check_tag",
    "cpp_read_params",
    "encode_reply",
    "parse_request",
    "split_tags",
    "status_error_line",
]

# ----------------------------------------------------------------------------- names

REQUEST = "request.json"
"""One command, written by the client (atomically: ``request.tmp`` renamed over it)."""
REQUEST_TMP = "request.tmp"
RESPONSE = "response.json"
"""One reply, written by the worker (atomically), deleted by the client after reading."""
RESPONSE_TMP = "response.tmp"
STATUS = "status.txt"
STATUS_TMP = "status.tmp"
EXIT_FLAG = "exit.flag"
TENSOR_SUFFIX = ".tsr"

LAYOUTS = ("python_session", "pytorch_session")
"""Directory layouts: ``<workspace>/<layout>/tr_session_<id>/``; the first is the default
(current C++ builds), the second is what framework V1.20 used."""
SESSION_PREFIX = "tr_session_"

# Status words (status.txt holds exactly one, no newline).
READY = "ready"
RUNNING = "running"
DONE = "done"
TERMINATED = "terminated"
EXIT = "exit"
ERROR_PREFIX = "error:"

INVALID = "invalid"
"""The params of every error reply: what the C++ client understands as a failure."""

# ----------------------------------------------------------------------------- errors


class ErrorCode(str, Enum):
    """Machine-readable causes, the ``error.code`` of an error reply."""

    EMPTY_REQUEST = "empty_request"
    BAD_REQUEST = "bad_request"
    REQUEST_TOO_LARGE = "request_too_large"
    PARAMS_TOO_LONG = "params_too_long"
    UNKNOWN_COMMAND = "unknown_command"
    BAD_TAG = "bad_tag"
    WRONG_INPUT_COUNT = "wrong_input_count"
    MISSING_INPUT = "missing_input"
    INVALID_INPUT = "invalid_input"
    INPUT_TOO_LARGE = "input_too_large"
    COMPUTATION_FAILED = "computation_failed"
    OUT_OF_MEMORY = "out_of_memory"
    BAD_RESULT = "bad_result"
    RESULT_TOO_LARGE = "result_too_large"
    RESULT_UNWRITABLE = "result_unwritable"
    UNSAFE_REPLY = "unsafe_reply"
    UNAVAILABLE = "unavailable"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class ErrorInfo:
    """Why a request failed: a code from :class:`ErrorCode` and a human message."""

    code: str
    message: str


class ProtocolError(Exception):
    """A request the worker answers with ``invalid``; carries the :class:`ErrorInfo`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.info = ErrorInfo(code.value, message)


# ----------------------------------------------------------------------------- names and tags

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")
_TAG_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}\Z")


def check_name(cmd: str) -> str:
    """The canonical (lower-case) form of a command name; ``ValueError`` if it is not
    a letter followed by up to 63 letters, digits or underscores."""
    if not _NAME_RE.match(cmd):
        raise ValueError(
            f"command name {cmd!r} is not a letter followed by up to 63 letters, digits "
            "or underscores"
        )
    return cmd.lower()


def check_tag(tag: str) -> str:
    """Return ``tag`` if it is a safe tensor tag, else raise ``ProtocolError(bad_tag)``.

    A tag names ``<tag>.tsr`` inside the session directory. Allowed: 1 to 64 characters
    from ``A-Z a-z 0-9 _ . -``, not starting with ``.``, not containing ``..``. So no tag
    can name a path separator, a parent directory, a hidden file or a temporary file.
    """
    if not _TAG_RE.match(tag) or ".." in tag:
        raise ProtocolError(
            ErrorCode.BAD_TAG,
            f"tag {tag!r} is not 1 to 64 characters of A-Z a-z 0-9 _ . - "
            "(not starting with '.', no '..')",
        )
    return tag


def split_tags(params: str) -> list[str]:
    """The tags of a tensor request's params (``"a,b"`` gives ``["a", "b"]``; ``""`` none).

    Each is checked with :func:`check_tag`.
    """
    if params == "":
        return []
    return [check_tag(t) for t in params.split(",")]


# ----------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    """One parsed request: the command as sent, its params, and which form it came in."""

    cmd: str
    params: str
    legacy: bool = False

    @property
    def name(self) -> str:
        """The command name used for lookup: ``cmd`` in lower case."""
        return self.cmd.lower()


def parse_request(data: bytes, *, max_params_chars: int) -> Request:
    """Parse the bytes of ``request.json``.

    Two forms are accepted. JSON: an object with a string ``cmd`` and an optional string
    ``params`` (default ``""``); other members are ignored. Legacy plain text (a document
    of framework V1.20): ``cmd tag1 tag2 ...`` separated by white space, read as params
    ``"tag1,tag2"``. The text is UTF-8 (a leading BOM is ignored). Raises
    :class:`ProtocolError` for an empty or malformed request or params longer than
    ``max_params_chars``.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"request is not UTF-8: {exc}") from None
    text = text.removeprefix("\ufeff").strip()
    if not text:
        raise ProtocolError(ErrorCode.EMPTY_REQUEST, "request.json is empty")
    if text.startswith("{"):
        req = _parse_json(text)
    else:
        words = text.split()
        if not _NAME_RE.match(words[0]):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"request is neither a JSON object nor 'cmd tag ...' text: starts {text[:40]!r}",
            )
        req = Request(words[0], ",".join(words[1:]), legacy=True)
    if len(req.params) > max_params_chars:
        raise ProtocolError(
            ErrorCode.PARAMS_TOO_LONG,
            f"params has {len(req.params)} characters, the limit is {max_params_chars}",
        )
    return req


def _parse_json(text: str) -> Request:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"request is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "request JSON is not an object")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        found = "missing" if cmd is None else type(cmd).__name__
        raise ProtocolError(ErrorCode.BAD_REQUEST, f'request has no string "cmd" (found: {found})')
    params = obj.get("params", "")
    if not isinstance(params, str):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f'"params" must be a string, found {type(params).__name__}',
        )
    return Request(cmd, params)


# ----------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Reply:
    """One reply: ``cmd`` (canonical name or ``""``), ``params``, and on failure ``error``."""

    cmd: str
    params: str
    error: ErrorInfo | None = None


_UNSAFE_RE = re.compile(r'["\\\x00-\x1f\x7f-\x9f\ud800-\udfff]')
"""What ``params`` and ``cmd`` may not hold: a quote or a backslash (they end or bend the
C++ reader's string), control characters (C0, DEL, C1) and lone surrogates (not UTF-8)."""


def check_reply_text(text: str) -> str:
    """Return ``text`` if the C++ reader gets it back unchanged, else ``ProtocolError``.

    The C++ client takes the bytes of params up to the next ``"`` not preceded by ``\\``
    and does not unescape. So a reply's params may hold any Unicode text, sent as UTF-8
    (no byte of a multi-byte UTF-8 sequence is ``"`` or ``\\``), except ``"``, ``\\``,
    control characters (U+0000 to U+001F, U+007F to U+009F) and lone surrogates.
    """
    bad = _UNSAFE_RE.search(text)
    if bad:
        raise ProtocolError(
            ErrorCode.UNSAFE_REPLY,
            f"reply text has {bad.group()!r} at {bad.start()}: the C++ reader cannot take "
            "a quote, a backslash, a control character or a lone surrogate in params",
        )
    return text


def encode_reply(reply: Reply) -> bytes:
    """The bytes of ``response.json`` for ``reply`` (UTF-8).

    ``{"cmd": "<cmd>", "params": "<params>"}``, followed for an error by
    ``"error": {"code": ..., "message": ...}``. ``cmd`` and ``params`` are checked with
    :func:`check_reply_text` and written unescaped (non-ASCII text as UTF-8), so the first
    ``"params":`` in the file is the key and the C++ reader gets ``params`` back exactly;
    the ``error`` member after it is ordinary JSON, escaped to ASCII.
    """
    head = {"cmd": check_reply_text(reply.cmd), "params": check_reply_text(reply.params)}
    text = json.dumps(head, ensure_ascii=False)
    if reply.error is not None:
        error = {"code": reply.error.code, "message": reply.error.message}
        text = f'{text[:-1]}, "error": {json.dumps(error, ensure_ascii=True)}}}'
    return text.encode("utf-8")


def cpp_read_params(text: str) -> str:
    """What the C++ client's ``read_response`` returns for a response file's text.

    It finds the first ``"params":``, skips to the next ``"``, and returns everything up
    to the next ``"`` not preceded by a backslash, without unescaping; ``""`` when the
    key or the opening quote is missing (the Python client mirrors this exactly).
    """
    key = '"params":'
    pos = text.find(key)
    if pos < 0:
        return ""
    pos = text.find('"', pos + len(key))
    if pos < 0:
        return ""
    pos += 1
    end = pos
    while end < len(text):
        if text[end] == '"' and text[end - 1] != "\\":
            break
        end += 1
    return text[pos:end]


def status_error_line(info: ErrorInfo, *, max_chars: int = 200) -> str:
    """``error:<code>: <message>`` on one line, for replies given through ``status.txt``."""
    message = " ".join(info.message.split())
    line = f"{ERROR_PREFIX}{info.code}: {message}"
    return line if len(line) <= max_chars else line[: max_chars - 3] + "..."


# ----------------------------------------------------------------------------- polling


def backoff_delays_ms(shortest_ms: int = 32) -> Iterator[int]:
    """The C++ client's (and upstream worker's) adaptive polling sleeps, in ms.

    32 ms first, doubling after every 8 unsuccessful polls, up to 32 times the shortest
    (1024 ms), then constant. Restart the iterator when something arrives.
    """
    wait_count = 0
    interval = shortest_ms
    while True:
        yield interval
        level = wait_count // 8
        if level >= 5:
            interval = shortest_ms * 32
        else:
            interval = shortest_ms * (1 << level)
            wait_count += 1
