"""The V3 PythonSession on our server: ``tsr-worker <session_dir>`` (the built-in
commands) and a user's ``RenaissanceServer`` subclass (``v3_style_server.py``), driven by
a Python model of the C++ client of ``shared/brief/session-protocol-v3.md`` and replayed
against the captures in ``tests/data/python_session/``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tsr_worker import cli
from tsr_worker.sessiondir import LOCK_NAME, DirectoryBusyError
from tsr_worker.v3session import RenaissanceServer, V3Loop
from tsr_worker.waiting import inotify_available
from tsr_worker.worker import ExitReason

import tsr
import tsr.torch
import tsr_platform

from .test_launcher import SYSTEM_PATH, system_env
from .worker_helpers import tree, wait_for, without_directory_locks

torch = pytest.importorskip("torch")

DATA = Path(__file__).resolve().parents[1] / "data" / "python_session"
SCRIPT = Path(__file__).with_name("v3_style_server.py")
WORKER = [sys.executable, "-m", "tsr_worker"]
WAIT_TRIES = 600
SETTLE = True


def request_bytes(method: str, params: dict[str, str]) -> bytes:
    """``request.json`` as the C++ client writes it: by hand, keys in ``std::map`` order,
    values always strings, no escaping, a final newline."""
    body = ",\n".join(f'    "{k}": "{v}"' for k, v in sorted(params.items()))
    return f'{{\n  "method": "{method}",\n  "parameters": {{\n{body}\n  }}\n}}\n'.encode()


def cpp_parse(text: str) -> tuple[bool, str]:
    """The C++ reading of ``response.json``: ``true`` after ``"success"`` and before any
    ``false``; the message between the first two quotes after ``"message"`` + 10."""
    s = text.find('"success"')
    t, f = text.find("true", s), text.find("false", s)
    m = text.find('"message"')
    q1 = text.find('"', m + 10)
    q2 = text.find('"', q1 + 1)
    return t >= 0 and (f < 0 or t < f), text[q1 + 1 : q2]


class V3Client:
    """The C++ ``PythonSession`` of V3.6.11, step by step (see the brief)."""

    def __init__(
        self, command: list[str], directory: Path, env: dict[str, str] | None = None
    ) -> None:
        self.command = command
        self.dir = directory
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.launches = 0

    def start(self) -> None:
        self.dir.mkdir(parents=True)  # create_directories; an existing one is an error

    def send(self, method: str, params: dict[str, str], inputs: list[bytes]) -> None:
        for i, data in enumerate(inputs):
            (self.dir / f"input_{i}.tsr").write_bytes(data)  # export_tensor, in place
        (self.dir / "request.json").write_bytes(request_bytes(method, params))
        if self.proc is None:  # fork + execlp(python, server, dir): the first send only
            self.proc = subprocess.Popen(
                [*self.command, str(self.dir)], stdin=subprocess.DEVNULL, env=self.env
            )
            self.launches += 1
        time.sleep(0.1)

    def wait(self) -> str:
        """``exists(response.json)`` 100 ms apart, never read to check; up to 100 times in
        the client (10 s), :data:`WAIT_TRIES` here: the time-out is not what is tested, and
        a machine under load may take longer than 10 s to start Python and torch.

        With :data:`SETTLE` the model also waits for ``request.json`` to be gone (our
        server removes it just before it answers): on a machine loaded past what the
        client's 100 ms assume, the stale answer could otherwise still be there when it
        looks. That it goes at once is tested on its own (``test_half_written_...``)."""
        for _ in range(WAIT_TRIES):
            if (self.dir / "response.json").exists() and not (
                SETTLE and (self.dir / "request.json").exists()
            ):
                return (self.dir / "response.json").read_text()
            time.sleep(0.1)
        raise TimeoutError("PythonSession::wait: Timeout waiting for Python response")

    def calculate(self, method: str, params: dict[str, str], inputs: list[bytes]) -> bytes:
        """``send`` + ``wait`` + ``fetch``: the bytes of ``output_0.tsr``."""
        self.send(method, params, inputs)
        success, message = cpp_parse(self.wait())
        if not success:
            raise RuntimeError(f"PythonSession::fetch: Python operation failed: {message}")
        out = self.dir / "output_0.tsr"
        if not out.exists():
            raise FileNotFoundError(f"Output tensor file not found: {out}")
        return out.read_bytes()

    def stop(self) -> bool:
        """SIGTERM, then ``waitpid(WNOHANG)`` every 100 ms up to 50 times, then SIGKILL;
        ``remove_all``. Returns whether the server left by itself (no SIGKILL needed)."""
        left = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            for _ in range(50):
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
            else:
                left = False
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        return left

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def session(tmp_path: Path) -> Iterator[tuple[Path, list[V3Client]]]:
    """A workspace, and the clients made in it (killed afterwards if still running)."""
    clients: list[V3Client] = []
    yield tmp_path / "workspace", clients
    for c in clients:
        c.kill()


def client(
    session: tuple[Path, list[V3Client]], command: list[str], env: dict[str, str] | None = None
) -> V3Client:
    ws, clients = session
    c = V3Client(command, ws / "python_session_id916269", env)
    clients.append(c)
    c.start()
    return c


def captured(scenario: str, step: str = "before_stop") -> tuple[dict[str, str], list[bytes]]:
    """The parameters (none if the request is not JSON) and inputs of a captured request."""
    d = DATA / scenario / step
    try:
        params: dict[str, str] = json.loads((d / "request.json").read_text())["parameters"]
    except ValueError:
        params = {}
    inputs: list[bytes] = []
    while (d / f"input_{len(inputs)}.tsr").exists():
        inputs.append((d / f"input_{len(inputs)}.tsr").read_bytes())
    return params, inputs


def test_request_bytes_are_the_clients() -> None:
    """The model writes exactly what the C++ client wrote."""
    cases = (
        ("s1_add_then_second_call", "after_call1", "add"),
        ("s1_add_then_second_call", "after_call2", "add"),
        ("s2_unknown_method", "before_stop", "fail"),
    )
    for scenario, step, method in cases:
        params, _ = captured(scenario, step)
        expected = (DATA / scenario / step / "request.json").read_bytes()
        assert request_bytes(method, params) == expected, (scenario, step)


@pytest.mark.parametrize(
    ("scenario", "method"),
    [("s2_unknown_method", "fail"), ("s3_param_with_quote", "add")],
)
def test_captured_failures_answer_byte_for_byte(
    session: tuple[Path, list[V3Client]], scenario: str, method: str
) -> None:
    """The built-in server answers the captured requests as upstream did, to the byte."""
    c = client(session, WORKER)
    src = DATA / scenario / "before_stop"
    _, inputs = captured(scenario)
    for i, data in enumerate(inputs):
        (c.dir / f"input_{i}.tsr").write_bytes(data)
    (c.dir / "request.json").write_bytes((src / "request.json").read_bytes())
    c.proc = subprocess.Popen([*WORKER, str(c.dir)])
    time.sleep(0.1)
    text = c.wait()
    assert text.encode() == (src / "response.json").read_bytes()
    assert not (c.dir / "request.json").exists()  # served: request and inputs removed
    assert not any(c.dir.glob("input_*.tsr"))
    # the same request again gets its own (equal) answer: wait for it to be served, not
    # 100 ms (the timing is the subject of test_two_calls_in_one_session_...)
    (c.dir / "request.json").write_bytes((src / "request.json").read_bytes())
    wait_for(lambda: not (c.dir / "request.json").exists(), what="request served")
    assert c.wait().encode() == (src / "response.json").read_bytes()
    assert c.stop() and not c.dir.exists()


def test_two_calls_in_one_session_each_get_their_answer(
    session: tuple[Path, list[V3Client]],
) -> None:
    """Upstream answered once and exited: the second call read the first response. Ours
    stays and removes the stale response as soon as the next request arrives."""
    c = client(session, [sys.executable, str(SCRIPT)])
    for i, text in enumerate(("one", "two", "three", "four")):
        c.send("say", {"text": text}, [])
        assert cpp_parse(c.wait()) == (True, text), i
    c.send("calls", {}, [])
    assert cpp_parse(c.wait()) == (True, "5")  # state kept: one process served all five
    assert c.launches == 1 and c.proc is not None and c.proc.poll() is None
    c.send("frobnicate", {}, [])
    assert cpp_parse(c.wait()) == (False, "Unknown method: frobnicate")
    c.send("say", {"text": "after failure"}, [])
    assert cpp_parse(c.wait()) == (True, "after failure")
    assert c.stop()


def test_sigterm_during_a_computation_leaves_at_once(session: tuple[Path, list[V3Client]]) -> None:
    """``stop()`` on a hung call: SIGTERM ends the server before the 5 s SIGKILL."""
    c = client(session, [sys.executable, str(SCRIPT)])
    c.send("say", {"text": "up"}, [])
    c.wait()
    c.send("hang", {}, [])
    time.sleep(0.3)
    assert not (c.dir / "response.json").exists()  # the stale answer went at once
    assert c.stop()
    assert c.proc is not None and c.proc.returncode == 0


def test_directory_removed_ends_the_server(session: tuple[Path, list[V3Client]]) -> None:
    c = client(session, WORKER)
    c.send("nothing", {}, [])
    assert cpp_parse(c.wait()) == (False, "Unknown method: nothing")
    shutil.rmtree(c.dir)
    assert c.proc is not None
    c.proc.wait(20)
    assert not c.dir.exists()


@pytest.mark.skipif(not inotify_available(), reason="needs inotify")
def test_half_written_request_is_read_once_complete(
    session: tuple[Path, list[V3Client]],
) -> None:
    """A request still open for writing is read once closed, not answered as malformed;
    the previous answer is gone as soon as it is created."""
    c = client(session, [*WORKER, "--wait", "inotify"])
    c.send("say", {}, [])
    cpp_parse(c.wait())
    data = request_bytes("nothing", {"k": "v"})
    with open(c.dir / "request.json", "wb") as f:
        f.write(data[:20])
        f.flush()
        wait_for(lambda: not (c.dir / "response.json").exists(), what="stale response gone")
        time.sleep(0.3)
        f.write(data[20:])
    time.sleep(0.1)
    assert cpp_parse(c.wait()) == (False, "Unknown method: nothing")
    c.stop()


def test_missing_method_and_bad_json(session: tuple[Path, list[V3Client]]) -> None:
    c = client(session, WORKER)
    (c.dir / "request.json").write_text('{"parameters": {}}')
    c.proc = subprocess.Popen([*WORKER, str(c.dir)])
    time.sleep(0.1)
    assert cpp_parse(c.wait()) == (False, "Server error: Request missing 'method' field")
    (c.dir / "request.json").write_text("[1, 2]")
    time.sleep(0.1)
    assert cpp_parse(c.wait())[0] is False
    c.stop()


def test_launcher_serves_the_v3_invocation(
    session: tuple[Path, list[V3Client]], tmp_path: Path
) -> None:
    """The default server path ``<root>/python/tests/test_python_server.py`` holding a
    launcher; the C++ side's ``python3`` lacks tsr."""
    python3 = shutil.which("python3", path=SYSTEM_PATH)
    if python3 is None:
        pytest.skip("no python3 on /usr/bin:/bin")
    launcher = tmp_path / "psroot" / "python" / "tests" / "test_python_server.py"
    assert cli.main(["--write-launcher", str(launcher)], exit_process=False) == 0
    c = client(session, [python3, str(launcher)], system_env())
    c.send("fail", {}, [])
    assert cpp_parse(c.wait()) == (False, "Unknown method: fail")
    assert c.stop()


def test_v3_path_argument_is_detected() -> None:
    assert cli.is_v3_session_path("/ws/python_session_id916269")
    assert cli.is_v3_session_path("workspace/python_session_id1/")
    assert not cli.is_v3_session_path("python_session_id1")  # a V1 session id
    assert not cli.is_v3_session_path("../../escape")  # a bad session id: a usage error
    assert not cli.is_v3_session_path("/ws/python_session_idx")


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [*WORKER, str(tmp_path / "python_session_id1")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 1 and "No such file or directory" in out.stderr
    assert not (tmp_path / "python_session_id1").exists()


# ----------------------------------------------------------------------------- one server


def test_second_server_on_a_directory_is_refused(session: tuple[Path, list[V3Client]]) -> None:
    """A second ``tsr-worker <dir>`` on a served V3 directory prints one line, exits
    EXIT_BUSY and touches nothing; the first serves on, every answer its own."""
    c = client(session, WORKER)
    c.send("first", {}, [])
    assert cpp_parse(c.wait()) == (False, "Unknown method: first")
    assert c.proc is not None
    before = tree(c.dir)
    out = subprocess.run(
        [*WORKER, str(c.dir), "--idle-timeout", "5"],  # not forever if it is not refused
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == cli.EXIT_BUSY, out.stderr
    assert out.stderr.splitlines() == [
        f"tsr-worker: {c.dir} is already served by worker pid {c.proc.pid}; not starting"
    ]
    assert tree(c.dir) == before, "the refused server touched the directory"
    for i in range(5):
        c.send(f"m{i}", {}, [])
        assert cpp_parse(c.wait()) == (False, f"Unknown method: m{i}"), i
    assert c.proc.poll() is None
    assert c.stop() and not c.dir.exists()


@pytest.mark.parametrize("how", ["directory", "lock file"])
def test_in_process_second_server_raises_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """``RenaissanceServer.run`` on a directory another server holds raises
    DirectoryBusyError before writing anything; the lock goes with its holder's leaving."""
    if how == "lock file":
        without_directory_locks(monkeypatch)
    d = tmp_path / "python_session_id1"
    d.mkdir()
    first = V3Loop(d, lambda method, params: (True, method, {}), client_pid=0, idle_timeout_s=0)
    thread = threading.Thread(target=first.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: first.dir is not None, what="first server up")
        by_file = how == "lock file" or not tsr_platform.HAVE_DIR_FD
        assert (d / LOCK_NAME).exists() == by_file
        before = tree(d)
        with pytest.raises(DirectoryBusyError) as info:
            RenaissanceServer(d, client_pid=0, idle_timeout_s=2).run()  # not forever if not
        assert info.value.holder == os.getpid()
        assert tree(d) == before
        (d / "request.json").write_bytes(request_bytes("still", {}))
        wait_for((d / "response.json").exists, what="request answered")
        assert cpp_parse((d / "response.json").read_text()) == (True, "still")
    finally:
        first.stop()
        thread.join(30)
    assert not thread.is_alive()
    again = V3Loop(d, lambda method, params: (True, method, {}), client_pid=0)
    again.stop()
    assert again.run() is ExitReason.STOPPED  # released on leaving: claimed, then stopped


# ----------------------------------------------------------------------------- tensors


@pytest.mark.parametrize(
    "scenario",
    ["s5a_echo_bf16", "s5b_echo_int8", "s5c_echo_int32_r4", "s5d_echo_fp32_scalar_nan",
     "s5e_echo_three_inputs", "s4_two_outputs"],
)  # fmt: skip
def test_captured_tensor_calls_byte_for_byte(
    session: tuple[Path, list[V3Client]], scenario: str
) -> None:
    """Outputs and response as upstream wrote them, byte for byte (TSR3 RAW)."""
    c = client(session, [sys.executable, str(SCRIPT)])
    src = DATA / scenario / "before_stop"
    params, inputs = captured(scenario)
    method = "two_outputs" if scenario.startswith("s4") else "echo"
    out0 = c.calculate(method, params, inputs)
    assert out0 == (src / "output_0.tsr").read_bytes()
    for extra in sorted(src.glob("output_*.tsr")):
        assert (c.dir / extra.name).read_bytes() == extra.read_bytes(), extra.name
    assert (c.dir / "response.json").read_bytes() == (src / "response.json").read_bytes()
    c.stop()


def test_second_calculate_returns_its_own_result(session: tuple[Path, list[V3Client]]) -> None:
    """The captured s1: a+b, then ones+ones in the same session. Upstream returned a+b
    again (``equals_call1_result_stale``); the built-in server returns 2.0 everywhere."""
    c = client(session, WORKER)
    params, inputs = captured("s1_add_then_second_call", "after_call1")
    first = c.calculate("add", params, inputs)
    expected = DATA / "s1_add_then_second_call" / "after_call1" / "output_0.tsr"
    assert first == expected.read_bytes()
    _, ones = captured("s1_add_then_second_call", "after_call2")
    second = c.calculate("add", {}, ones)
    assert second != first
    out = tsr.torch.load(c.dir / "output_0.tsr")
    assert out.shape == (2, 3, 4, 5) and bool((out == 2.0).all())
    c.send("print_tensor", {}, [ones[0]])
    assert cpp_parse(c.wait()) == (True, "txt")
    assert (c.dir / "output_0.txt").read_text(encoding="utf-8").startswith("tensor([[[[1.")
    assert not (c.dir / "output_0.tsr").exists()  # the stale tensor output went too
    assert c.launches == 1
    c.stop()


def test_stale_inputs_do_not_count(session: tuple[Path, list[V3Client]]) -> None:
    """Three inputs, then one: the first call's ``input_1/2`` were removed after use, so
    the echo of one input answers one output."""
    c = client(session, [sys.executable, str(SCRIPT)])
    _, three = captured("s5e_echo_three_inputs")
    c.calculate("echo", {}, three)
    c.calculate("echo", {}, three[:1])
    assert sorted(p.name for p in c.dir.glob("output_*")) == ["output_0.tsr"]
    assert '"output_count": 1' in (c.dir / "response.json").read_text()
    c.stop()
    assert os.path.exists(c.dir) is False
