"""Each bad request is answered once, ``invalid`` with a machine-readable error and a log
line; the worker keeps serving and the next good request gets its own, correct answer."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tsr_worker import Worker, WorkerConfig
from tsr_worker.config import WaitMode
from tsr_worker.protocol import cpp_read_params
from tsr_worker.sessiondir import LOCK_NAME
from tsr_worker.waiting import inotify_available

import tsr
import tsr.torch

from .worker_helpers import WorkerProc, ask, send, spawn, take_response, wait_for

torch = pytest.importorskip("torch")

Setup = Callable[[Path], None]


def tensor(tag: str, *shape: int, dtype: object = None) -> Setup:
    def setup(d: Path) -> None:
        t = torch.randn(*shape) if dtype is None else torch.ones(*shape, dtype=dtype)
        tsr.torch.save(d / f"{tag}.tsr", t, reserved_dtypes=dtype is not None)

    return setup


def raw(tag: str, data: bytes) -> Setup:
    def setup(d: Path) -> None:
        (d / f"{tag}.tsr").write_bytes(data)

    return setup


def nothing(d: Path) -> None:
    pass


def both(first: Setup, second: Setup) -> Setup:
    def setup(d: Path) -> None:
        first(d)
        second(d)

    return setup


GOOD_HEADER = tsr.to_bytes(torch.ones(4, 4).numpy())

RELU_A = b'{"cmd": "relu", "params": "a"}'
INVALID = "invalid_input"
COUNT = "wrong_input_count"
FAILED = "computation_failed"
OOM = "out_of_memory"

CASES: dict[str, tuple[Setup, bytes, str]] = {
    # label: (setup, request bytes, expected error code)
    "malformed_json": (nothing, b'{"cmd": "hello", "params": ', "bad_request"),
    "empty_file": (nothing, b"", "empty_request"),
    "blank_file": (nothing, b"  \n ", "empty_request"),
    "json_array": (nothing, b'["hello"]', "bad_request"),
    "cmd_missing": (nothing, b'{"params": "a"}', "bad_request"),
    "params_not_string": (nothing, b'{"cmd": "relu", "params": ["a"]}', "bad_request"),
    "not_utf8": (nothing, b'{"cmd": "hello", "params": "\xff"}', "bad_request"),
    "text_not_a_command": (nothing, b"this is { not json", "unknown_command"),
    "unknown_command": (nothing, b'{"cmd": "frobnicate", "params": "a"}', "unknown_command"),
    "unsafe_command_name": (nothing, b'{"cmd": "x\\"y", "params": "a"}', "unknown_command"),
    "missing_input": (nothing, b'{"cmd": "relu", "params": "no_such"}', "missing_input"),
    "garbage_input": (raw("a", b"not a tsr file at all"), RELU_A, INVALID),
    "truncated_input": (raw("a", GOOD_HEADER[:-4]), RELU_A, INVALID),
    "trailing_bytes": (raw("a", GOOD_HEADER + b"\0"), RELU_A, INVALID),
    "reserved_dtype": (tensor("a", 2, 2, dtype=torch.float16), RELU_A, INVALID),
    "too_few_tensors": (tensor("a", 4, 3), b'{"cmd": "matmul", "params": "a"}', COUNT),
    "too_many_tensors": (tensor("a", 4, 3), b'{"cmd": "relu", "params": "a,a"}', COUNT),
    "no_tensor": (nothing, b'{"cmd": "relu", "params": ""}', COUNT),
    "over_max_inputs": (nothing, b'{"cmd": "relu", "params": "a,b,c,d,e"}', COUNT),
    "traversal_tag": (nothing, b'{"cmd": "relu", "params": "../../etc/passwd"}', "bad_tag"),
    "empty_tag": (tensor("a", 2), b'{"cmd": "add", "params": "a,"}', "bad_tag"),
    "computation_error": (
        both(tensor("a", 2, 3), tensor("b", 2, 3)),
        b'{"cmd": "matmul", "params": "a,b"}',
        "computation_failed",
    ),
    "command_raises": (nothing, b'{"cmd": "fail", "params": "now"}', "computation_failed"),
    "result_float64": (tensor("a", 3), b'{"cmd": "as_double", "params": "a"}', "bad_result"),
    "result_not_tensor": (tensor("a", 3), b'{"cmd": "not_a_tensor", "params": "a"}', "bad_result"),
    "reply_with_quote": (nothing, b'{"cmd": "hello", "params": "say \\"hi\\""}', "unsafe_reply"),
    "reply_with_control": (nothing, b'{"cmd": "hi", "params": "tab\\there"}', "unsafe_reply"),
    "reply_with_c1_control": (nothing, b'{"cmd": "hi", "params": "\\u0085"}', "unsafe_reply"),
    "reply_lone_surrogate": (nothing, b'{"cmd": "hi", "params": "\\ud800"}', "unsafe_reply"),
    "params_too_long": (
        nothing,
        b'{"cmd": "hello", "params": "' + b"x" * 257 + b'"}',
        "params_too_long",
    ),
    "request_too_large": (
        nothing,
        b'{"cmd": "hello", "pad": "' + b" " * 5000 + b'"}',
        "request_too_large",
    ),
    "input_too_large": (tensor("a", 300, 300), RELU_A, "input_too_large"),
    # results C++ cannot read, or that the codec cannot store for a non-TSR reason
    "result_empty": (tensor("a", 0, 3), RELU_A, "bad_result"),
    "result_sparse": (tensor("a", 3), b'{"cmd": "sparse_result", "params": "a"}', "bad_result"),
    "result_meta": (tensor("a", 3), b'{"cmd": "meta_result", "params": "a"}', "bad_result"),
    "result_too_large": (
        tensor("a", 200, 200),  # 160 KB in, under the input limit; over the result limit
        b'{"cmd": "ones_like", "params": "a"}',
        "result_too_large",
    ),
    # commands that do not return normally
    "command_keyboard_interrupt": (nothing, b'{"cmd": "interrupt", "params": "x"}', FAILED),
    "command_system_exit": (nothing, b'{"cmd": "sys_exit", "params": "x"}', FAILED),
    "command_out_of_memory": (tensor("a", 3), b'{"cmd": "huge", "params": "a"}', OOM),
    "command_memory_error": (nothing, b'{"cmd": "no_memory", "params": ""}', OOM),
}


OPENS_INPUTS = {
    "invalid_input",
    "input_too_large",
    "computation_failed",
    "bad_result",
    "out_of_memory",
    "result_too_large",
}


def check_answer_once(d: Path, text: str, code: str) -> dict[str, object]:
    reply: dict[str, object] = json.loads(text)
    assert cpp_read_params(text) == "invalid", text  # what the C++ client sees
    assert reply["params"] == "invalid"
    assert list(reply) == ["cmd", "params", "error"]  # the error after params
    error = reply["error"]
    assert isinstance(error, dict) and error["code"] == code and error["message"], reply
    time.sleep(0.05)
    assert not (d / "response.json").exists(), "answered twice"
    return reply


@pytest.mark.parametrize("label", list(CASES))
def test_bad_request_then_good_one(shared: WorkerProc, sdir: Path, label: str) -> None:
    setup, request, code = CASES[label]
    traces = shared.log_text().count("Traceback")
    setup(sdir)
    wait_for(lambda: not (sdir / "request.json").exists())
    send(sdir, request)
    check_answer_once(sdir, take_response(sdir), code)
    wait_for(lambda: f"failed: {code}" in shared.log_text(), 5, "log line")
    assert shared.log_text().count("Traceback") == traces, "logged as the worker's own fault"
    for tag in ("a", "b"):
        if code in OPENS_INPUTS:
            assert not (sdir / f"{tag}.tsr").exists(), "every input opened is removed"
        else:  # refused before any input was opened: left as it is
            (sdir / f"{tag}.tsr").unlink(missing_ok=True)
    x = torch.randn(3, 4)
    tsr.torch.save(sdir / "g.tsr", x)
    assert ask(sdir, json.dumps({"cmd": "relu", "params": "g"})) == {"cmd": "relu", "params": "r"}
    assert torch.equal(tsr.torch.load(sdir / "r.tsr"), torch.relu(x))
    assert (
        ask(sdir, json.dumps({"cmd": "hello", "params": label}))["params"]
        == "Hello " + label.title()
    )


def test_wrong_tensor_count_is_answered_once_not_twice(sdir: Path) -> None:
    """Upstream answers it twice, leaving every later reply one request behind."""
    tsr.torch.save(sdir / "a.tsr", torch.ones(4, 3))
    assert ask(sdir, '{"cmd": "matmul", "params": "a"}')["params"] == "invalid"
    for word in ("one", "two", "three"):
        assert (
            ask(sdir, json.dumps({"cmd": "hi", "params": word}))["params"] == "Hi " + word.title()
        )


@pytest.mark.skipif(
    not inotify_available(),
    reason="polling cannot see a write end: a request unchanged for RECHECK_S is answered",
)
def test_request_written_in_place_is_read_only_once_complete(sdir: Path) -> None:
    """A client that writes request.json directly (V1.20 tests) is not read half-written
    (the waiter sees it closed after writing: inotify only)."""
    with open(sdir / "request.json", "w") as f:
        f.write('{"cmd": "hello", ')
        f.flush()
        time.sleep(0.2)  # the worker sees the file, incomplete, and waits
        assert not (sdir / "response.json").exists()
        f.write('"params": "patience"}')
    assert json.loads(take_response(sdir))["params"] == "Hello Patience"


def test_symlinked_request_is_not_followed(sdir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"cmd": "hello", "params": "leak"}')
    os.symlink(secret, sdir / "request.json")
    reply = json.loads(take_response(sdir))
    assert reply["error"]["code"] == "bad_request" and "symbolic link" in reply["error"]["message"]
    assert not (sdir / "request.json").exists(), "the link is removed, not followed"
    assert secret.read_text() == '{"cmd": "hello", "params": "leak"}'


def test_request_json_directory_is_answered_once_and_not_spun_on(
    shared: WorkerProc, sdir: Path
) -> None:
    # Polling (no inotify: macOS, Windows, the stripped mode) probes every millisecond
    # for a while after a request (ACTIVE_HOLD_S), by design: the baseline is that cost
    # right after a good request; a spin on the held request would cost a core.
    assert ask(sdir, '{"cmd": "hi", "params": "baseline"}')["params"] == "Hi Baseline"
    baseline = _ticks_over(shared.proc.pid, 0.3) if not inotify_available() else 0
    failed = shared.log_text().count("request 'request.json' failed")
    (sdir / "request.json").mkdir()
    reply = json.loads(take_response(sdir))
    assert reply["error"]["code"] == "bad_request"
    spent = _ticks_over(shared.proc.pid, 0.3)
    assert spent <= 2 * baseline + 2, f"busy loop on an unremovable request: {spent} ticks"
    assert not (sdir / "response.json").exists(), "answered twice"
    assert shared.log_text().count("request 'request.json' failed") == failed + 1
    (sdir / "request.json").rmdir()
    assert ask(sdir, '{"cmd": "hi", "params": "again"}')["params"] == "Hi Again"


def _settled_vm_kib(pid: int) -> int:
    """The address space of ``pid`` once the worker has settled after its last answer
    (it may still be releasing a thread's stack or a map right after replying: memory
    that would let a request it should have no room for succeed): the same VmSize three
    reads 50 ms apart, within 5 s."""

    def vm_kib() -> int:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        return next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))

    seen = [vm_kib()]
    deadline = time.monotonic() + 5
    while (len(seen) < 3 or len(set(seen[-3:])) > 1) and time.monotonic() < deadline:
        time.sleep(0.05)
        seen.append(vm_kib())
    return min(seen[-3:])


def _ticks_over(pid: int, seconds: float) -> int:
    """The CPU ticks (user + system) ``pid`` spends in the next ``seconds``."""
    before = _cpu_ticks(pid)
    time.sleep(seconds)
    return _cpu_ticks(pid) - before


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_result_name_taken_by_a_directory(sdir: Path) -> None:
    (sdir / "r.tsr").unlink(missing_ok=True)
    (sdir / "r.tsr").mkdir()
    tsr.torch.save(sdir / "a.tsr", torch.ones(2))
    reply = ask(sdir, '{"cmd": "relu", "params": "a"}')
    assert reply["error"] == {
        "code": "result_unwritable",
        "message": "cannot write r.tsr: a directory has its name",
    }
    (sdir / "r.tsr").rmdir()
    left = [p for p in sdir.iterdir() if p.name.startswith(".") and p.name != LOCK_NAME]
    assert not left, "temporary file left"


@pytest.mark.parametrize("wait", ["inotify", "poll"])
def test_unremovable_request_is_answered_once_in_both_modes(tmp_path: Path, wait: WaitMode) -> None:
    d = tmp_path / "s"
    worker = Worker(WorkerConfig(str(d), client_pid=0, preload=False, wait=wait))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: worker.waiter_name != "")
        for _ in range(3):  # also right after an answer, while the worker is warm
            send(d, b"{not json")
            take_response(d)
            (d / "request.json").mkdir()
            take_response(d)
            time.sleep(0.3)  # ten polls at least
            assert not (d / "response.json").exists(), "answered again"
            (d / "request.json").rmdir()
        assert ask(d, '{"cmd": "hi", "params": "done"}')["params"] == "Hi Done"
    finally:
        worker.stop()
        thread.join(10)


def test_a_request_the_worker_has_no_memory_for_is_out_of_memory(tmp_path: Path) -> None:
    """A 120 MB request the worker has no memory for (its address space capped with
    prlimit after start-up: loading the input or computing the result cannot allocate)
    is answered out_of_memory, logged without a trace as a fault of the worker's own;
    with memory back, it serves on."""
    resource = pytest.importorskip("resource")
    if not hasattr(resource, "prlimit"):
        pytest.skip("no prlimit")
    d = tmp_path / "s"
    w = spawn(d, "--max-input-bytes", str(256 << 20), preload=True)
    try:
        tsr.torch.save(d / "a.tsr", torch.ones(3))
        assert ask(d, RELU_A)["params"] == "r"  # torch loaded, warm
        tsr.torch.save(d / "a.tsr", torch.ones(30_000_000))  # 120 MB
        vm_kib = _settled_vm_kib(w.proc.pid)
        soft, hard = resource.prlimit(w.proc.pid, resource.RLIMIT_AS)
        resource.prlimit(w.proc.pid, resource.RLIMIT_AS, (vm_kib * 1024 + (1 << 20), hard))
        try:
            reply = ask(d, RELU_A)
        finally:
            resource.prlimit(w.proc.pid, resource.RLIMIT_AS, (soft, hard))
        assert reply["error"]["code"] == "out_of_memory", reply
        assert "Traceback" not in w.log_text()
        assert not (d / "a.tsr").exists()
        tsr.torch.save(d / "a.tsr", torch.ones(3))
        assert ask(d, RELU_A)["params"] == "r"
    finally:
        w.kill()
