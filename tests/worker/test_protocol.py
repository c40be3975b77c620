"""The protocol as pure functions: request grammar, reply bytes, C++ params scanning, tags."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tsr_worker import protocol
from tsr_worker.protocol import (
    ErrorCode,
    ErrorInfo,
    ProtocolError,
    Reply,
    Request,
    check_reply_text,
    check_tag,
    cpp_read_params,
    encode_reply,
    parse_request,
    split_tags,
)

LIMIT = 100


def parse(data: bytes) -> Request:
    return parse_request(data, max_params_chars=LIMIT)


# ----------------------------------------------------------------------------- requests


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"cmd": "matmul", "params": "a,b"}', Request("matmul", "a,b")),
        (b'{"cmd": "exit"}', Request("exit", "")),
        (b'{"params": "x", "cmd": "Hello", "extra": [1, 2]}', Request("Hello", "x")),
        (b'  \n{"cmd":"hi","params":"world"}\n', Request("hi", "world")),
        ('\ufeff{"cmd": "hi"}'.encode(), Request("hi", "")),
        (b"matmul input_a input_b", Request("matmul", "input_a,input_b", legacy=True)),
        (b"matmul  a\tb\n", Request("matmul", "a,b", legacy=True)),
        (b"exit", Request("exit", "", legacy=True)),
    ],
)
def test_requests_parse(data: bytes, expected: Request) -> None:
    assert parse(data) == expected


def test_request_name_is_lower_case() -> None:
    assert parse(b'{"cmd": "MatMul"}').name == "matmul"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", ErrorCode.EMPTY_REQUEST),
        (b" \n\t ", ErrorCode.EMPTY_REQUEST),
        (b'{"cmd": "hello", "params": ', ErrorCode.BAD_REQUEST),
        (b"[1, 2]", ErrorCode.BAD_REQUEST),
        (b"{}", ErrorCode.BAD_REQUEST),
        (b'{"cmd": 3}', ErrorCode.BAD_REQUEST),
        (b'{"cmd": "hello", "params": ["a"]}', ErrorCode.BAD_REQUEST),
        (b'{"cmd": "hello", "params": null}', ErrorCode.BAD_REQUEST),
        (b"\xff\xfe{", ErrorCode.BAD_REQUEST),
        (b"this is { not json", ErrorCode.UNKNOWN_COMMAND),  # parses as legacy; see below
        (b"3 is not a command", ErrorCode.BAD_REQUEST),
        (b'{"cmd": "x", "v": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", ErrorCode.BAD_REQUEST),
        (b'{"cmd": "hello", "params": "' + b"x" * (LIMIT + 1) + b'"}', ErrorCode.PARAMS_TOO_LONG),
        (b"relu " + b"a " * LIMIT, ErrorCode.PARAMS_TOO_LONG),
    ],
)
def test_bad_requests_raise_with_a_code(data: bytes, code: ErrorCode) -> None:
    if code is ErrorCode.UNKNOWN_COMMAND:
        # Legacy text: "this" is a syntactically valid command name; lookup rejects it.
        assert parse(data) == Request("this", "is,{,not,json", legacy=True)
        return
    with pytest.raises(ProtocolError) as info:
        parse(data)
    assert info.value.info.code == code.value
    assert info.value.info.message


def test_params_at_the_limit_are_accepted() -> None:
    assert parse(b'{"cmd": "hello", "params": "' + b"x" * LIMIT + b'"}').params == "x" * LIMIT


# ----------------------------------------------------------------------------- replies


def test_reply_bytes_are_exactly_the_upstream_shape() -> None:
    assert encode_reply(Reply("matmul", "r")) == b'{"cmd": "matmul", "params": "r"}'
    assert encode_reply(Reply("", "Hello World")) == b'{"cmd": "", "params": "Hello World"}'


def test_error_reply_puts_the_error_after_params() -> None:
    info = ErrorInfo("unknown_command", 'unknown command "x\\y"; "params": "r"\n\u00e9')
    data = encode_reply(Reply("x", protocol.INVALID, info))
    text = data.decode("ascii")
    assert text.startswith('{"cmd": "x", "params": "invalid", "error": {')
    assert cpp_read_params(text) == "invalid"
    assert json.loads(text)["error"] == {"code": info.code, "message": info.message}


SAFE = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters='"\\')
)  # any text but a quote, a backslash, control characters and lone surrogates


@given(cmd=SAFE, params=SAFE, message=st.text())
def test_the_cpp_reader_gets_params_back_exactly(cmd: str, params: str, message: str) -> None:
    data = encode_reply(Reply(cmd, params, ErrorInfo("c", message)))
    text = data.decode("utf-8")
    assert cpp_read_params(text) == params
    assert json.loads(text)["params"] == params
    # the C++ reader works on bytes: a UTF-8 sequence never holds a quote or a backslash
    start = data.index(b'"', data.index(b'"params":') + 9) + 1
    assert data[start : data.index(b'"', start)] == params.encode("utf-8")
    assert data[data.index(b'"error"') :].isascii()  # the error member stays escaped


def test_utf8_reply_is_sent_unescaped() -> None:
    data = encode_reply(Reply("hello", "Hello W\u00f6rld"))
    assert data == '{"cmd": "hello", "params": "Hello W\u00f6rld"}'.encode()


@pytest.mark.parametrize(
    "bad",
    ['say "hi"', "back\\slash", "new\nline", "tab\t", "\x00", "\x7f", "\x85", "\x9f", "\ud800"],
)
def test_reply_text_the_cpp_reader_would_mangle_is_refused(bad: str) -> None:
    with pytest.raises(ProtocolError) as info:
        check_reply_text(bad)
    assert info.value.info.code == "unsafe_reply"
    with pytest.raises(ProtocolError):
        encode_reply(Reply("hello", bad))
    with pytest.raises(ProtocolError):
        encode_reply(Reply(bad, "r"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"cmd": "matmul", "params": "r"}', "r"),
        ('{"params": "a\\"b", "cmd": "x"}', 'a\\"b'),  # no unescaping, escaped quote kept
        ('{"cmd":"x","params":"Hello World"}', "Hello World"),
        ('{"cmd": "x", "params": ""}', ""),
        ('{"cmd": "x"}', ""),
        ('{"cmd": "x", "params": 5}', ""),
        ('{"cmd": "x", "params": "unterminated', "unterminated"),
        ('{"params": "first"} {"params": "second"}', "first"),
        ('{"cmd": "x", "params" : "spaced"}', ""),  # the key must be exactly "params":
    ],
)
def test_cpp_read_params_mirrors_the_client(text: str, expected: str) -> None:
    assert cpp_read_params(text) == expected


def test_status_error_line_is_one_bounded_line() -> None:
    line = protocol.status_error_line(ErrorInfo("missing_input", "a\nb\tc " * 100))
    assert line.startswith("error:missing_input: a b c")
    assert "\n" not in line and len(line) == 200


# ----------------------------------------------------------------------------- tags


@pytest.mark.parametrize("tag", ["a", "r0", "input_a", "A-1.b", "x" * 64, "_", "-", "a.b.c"])
def test_good_tags(tag: str) -> None:
    assert check_tag(tag) == tag


@pytest.mark.parametrize(
    "tag",
    ["", ".", "..", ".hidden", "a..b", "../x", "a/b", "/abs", "a\\b", "x" * 65, "a b", "é", "a\0"],
)
def test_bad_tags(tag: str) -> None:
    with pytest.raises(ProtocolError) as info:
        check_tag(tag)
    assert info.value.info.code == "bad_tag"


def test_split_tags() -> None:
    assert split_tags("") == []
    assert split_tags("a,b,c") == ["a", "b", "c"]
    with pytest.raises(ProtocolError):
        split_tags("a,,b")
    with pytest.raises(ProtocolError):
        split_tags("a, b")


# ----------------------------------------------------------------------------- polling


def test_backoff_schedule_is_the_cpp_one() -> None:
    delays = list(itertools.islice(protocol.backoff_delays_ms(), 45))
    assert delays == [32] * 9 + [64] * 8 + [128] * 8 + [256] * 8 + [512] * 8 + [1024] * 4
