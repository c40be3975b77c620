"""The kit's PythonSession-like C++ client drives our worker, started the framework's way.

The worker is started through its launcher (``tsr-worker --write-launcher``), which the
client runs as ``python3 "<launcher>" <session_id> &`` through the shell, in both directory
layouts. Each command's inputs and result are exported by the C++ side; the expected result
is computed here with torch from those same input files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tsr

from .kitlib import DriverRun, KitBuild, finish_driver, pids_running, start_driver, wait_gone

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.interop

LAYOUTS = ("python_session", "pytorch_session")
TIMEOUT_MS = 30000  # the client's per-call time-out (the framework's default is 10 s)


def tsr_worker_exe() -> Path:
    exe = Path(sys.executable).with_name("tsr-worker")
    if not exe.exists():
        pytest.fail(f"tsr-worker console script not found next to {sys.executable}")
    return exe


def write_launcher(path: Path, workspace: Path, layout: str) -> None:
    proc = subprocess.run(
        [str(tsr_worker_exe()), "--write-launcher", str(path), "--workspace", str(workspace),
         "--layout", layout],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert path.is_file()


@dataclass
class LayoutRuns:
    layout: str
    workspace: Path
    full: DriverRun
    terminate: DriverRun
    leftover_workers: list[int]


@pytest.fixture(scope="module")
def runs(
    kit_build: KitBuild, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LayoutRuns]]:
    """Per layout, the full and the terminate scenario side by side (each client starts its
    own worker); the layouts one after the other, to keep the 2-core machine responsive."""
    base = tmp_path_factory.mktemp("sessions")
    markers = []
    result = {}
    try:
        for layout in LAYOUTS:
            workspace = base / layout / "workspace"
            launcher = base / layout / f"launcher-{uuid.uuid4().hex}.py"
            write_launcher(launcher, workspace, layout)
            markers.append(str(launcher))
            started = {
                scenario: start_driver(
                    kit_build.session_driver,
                    script=launcher,
                    workspace=workspace,
                    layout=layout,
                    session_id=f"{scenario}_{layout}",
                    out=base / layout / scenario,
                    scenario=scenario,
                    extra=["--timeout-ms", str(TIMEOUT_MS)],
                )
                for scenario in ("full", "terminate")
            }
            done = {scenario: finish_driver(*started[scenario]) for scenario in started}
            result[layout] = LayoutRuns(
                layout=layout,
                workspace=workspace,
                full=done["full"],
                terminate=done["terminate"],
                leftover_workers=wait_gone(str(launcher), timeout=5.0),
            )
        yield result
    finally:
        for marker in markers:  # end only the workers these tests started, by pid
            for pid in pids_running(marker):
                subprocess.run(["kill", "-9", str(pid)], check=False)


# ---------------------------------------------------------------- the driver's own checks


@pytest.mark.parametrize("layout", LAYOUTS)
def test_client_checks_all_pass(runs: dict[str, LayoutRuns], layout: str) -> None:
    r = runs[layout]
    for run in (r.full, r.terminate):
        assert run.failures() == {}, run.log
        assert run.done == "ok" and run.returncode == 0, run.log


@pytest.mark.parametrize("layout", LAYOUTS)
def test_design_document_scenario(runs: dict[str, LayoutRuns], layout: str) -> None:
    full = runs[layout].full
    assert full.checks["design_matmul_shape"] == "ok"
    assert full.checks["design_matmul_values"] == "ok"
    result = tsr.load(full.results["design_matmul"])
    assert result.shape == (4, 5)
    assert (result == 9.0).all()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_text_commands(runs: dict[str, LayoutRuns], layout: str) -> None:
    texts = runs[layout].full.texts
    assert texts["hello"] == "Hello World"
    assert texts["hi"] == "Hi World"
    assert texts["hello_utf8"] == "Hello W\u00f6rld"  # UTF-8 reaches C++ intact
    # The client returns params raw, without unescaping, up to the first unescaped quote.
    # A reply whose text has a quote is therefore either refused by the worker ("invalid")
    # or must come through whole (escaped), never cut short at the quote.
    quoted = texts["hello_quoted"]
    if quoted != "invalid":
        assert json.loads(f'"{quoted}"').lower() == 'hello say "hi" twice', quoted


# ---------------------------------------------------------------- every command vs torch

Ref = Callable[..., Any]


def _conv(stride: int, padding: int) -> Ref:
    return lambda x, w: F.conv2d(x, w, stride=stride, padding=padding)


def _tconv(stride: int, padding: int) -> Ref:
    return lambda x, w: F.conv_transpose2d(x, w, stride=stride, padding=padding)


REFERENCES: dict[str, tuple[Ref, bool]] = {  # label -> (reference, exact)
    "matmul": (torch.mm, False),
    "add": (torch.add, True),
    "conv_k3_s1_p0": (_conv(1, 0), False),
    "conv_k3_s1_p1": (_conv(1, 1), False),
    "conv_k3_s2_p1": (_conv(2, 1), False),
    "conv_k1_s1_p0": (_conv(1, 0), False),
    "conv_k1_s2_p0": (_conv(2, 0), False),
    "conv_k7_s2_p3": (_conv(2, 3), False),
    # transposed conv: kernel, stride, padding only (no output_padding): H -> 2H-1 at stride 2
    "tconv_k3_s1_p1": (_tconv(1, 1), False),
    "tconv_k3_s2_p1": (_tconv(2, 1), False),
    "zeros_like": (torch.zeros_like, True),
    "ones_like": (torch.ones_like, True),
    "relu": (torch.relu, True),
    "sign": (torch.sign, True),
    "square": (torch.square, True),
    "sqrt": (torch.sqrt, True),
    "abs": (torch.abs, True),
    "negative": (torch.neg, True),
    "reciprocal": (torch.reciprocal, True),
    "round": (torch.round, True),
    "transpose": (lambda x: x.transpose(0, 1), True),
    "transpose_3d": (lambda x: x.transpose(0, 1), True),
    "tensor_square": (torch.square, True),
}
INPUT_ORDER = {"tensor_square": ["input"]}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("label", list(REFERENCES))
def test_worker_command_matches_torch(runs: dict[str, LayoutRuns], layout: str, label: str) -> None:
    full = runs[layout].full
    assert label in full.results, f"no result for {label}: {full.failures()}"
    ref, exact = REFERENCES[label]
    tags = INPUT_ORDER.get(label, sorted(full.inputs[label]))
    inputs = [torch.from_numpy(tsr.load(full.inputs[label][t], mmap=False)) for t in tags]
    expected = ref(*inputs).contiguous()
    got = torch.from_numpy(tsr.load(full.results[label], mmap=False))
    assert got.dtype == expected.dtype and tuple(got.shape) == tuple(expected.shape)
    if exact:
        # bit for bit (NaN, -0.0 and inf included): same op, same float32 inputs
        assert torch.equal(got.view(torch.int32), expected.view(torch.int32)), (got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_v120_tensor_square_answers_by_status(runs: dict[str, LayoutRuns], layout: str) -> None:
    # The design document's flow: input.tsr sent, request.json written in place, output.tsr
    # awaited, status.txt set to "done" instead of a response, which the same client must
    # not later read as the answer to an ordinary request.
    full, term = runs[layout].full, runs[layout].terminate
    assert "recv_tensor:tensor_square" in dict(full.steps)
    assert full.texts["status_after_tensor_square"] == "done"
    assert full.texts["bad_arity"] == "invalid"  # the next request after it, not "output"
    assert term.texts["status_after_v120_tensor_square"] == "done"
    assert term.texts["hello_after_v120"] == "Hello Again"
    x = tsr.load(term.inputs["v120_tensor_square"]["input"])
    assert (tsr.load(term.results["v120_tensor_square"]) == x * x).all()


def test_inputs_cover_interesting_values(runs: dict[str, LayoutRuns]) -> None:
    # round must see exact .5 ties, reciprocal and sign a zero, relu/abs negatives.
    x = tsr.load(runs[LAYOUTS[0]].full.inputs["round"]["a"])
    frac = x - x.round()
    assert ((x % 1) == 0.5).any() and (x == 0).any() and (x < 0).any() and (frac != 0).any()


# ---------------------------------------------------------------- bad requests


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bad_requests_are_answered_invalid_and_the_next_good_one_works(
    runs: dict[str, LayoutRuns], layout: str
) -> None:
    full = runs[layout].full
    for label in ("bad_arity", "bad_missing_tag", "bad_unknown_cmd", "bad_traversal_tag",
                  "bad_json"):  # fmt: skip
        assert full.texts[label] == "invalid", (label, full.texts[label])
    # Upstream answers a wrong tensor count twice, leaving later replies one behind; ours not.
    assert full.texts["good_after_bad_arity"] == "Hello World"
    assert full.checks["fetch_tensor_bad_request_times_out"] == "ok"
    assert full.checks["good_after_bad_relu"] == "ok"


# ---------------------------------------------------------------- exit paths, cleanup


@pytest.mark.parametrize("layout", LAYOUTS)
def test_please_exit_ends_the_worker(runs: dict[str, LayoutRuns], layout: str) -> None:
    r = runs[layout]
    assert r.full.checks["please_exit_status_terminated"] == "ok"
    assert r.full.step_ms("please_exit_until_terminated") < 5000


@pytest.mark.parametrize("layout", LAYOUTS)
def test_terminate_then_not_alive(runs: dict[str, LayoutRuns], layout: str) -> None:
    r = runs[layout]
    assert r.terminate.checks["terminate_then_not_alive"] == "ok"
    assert r.terminate.texts["status_after_terminate"] == "terminated"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_no_worker_outlives_its_session(runs: dict[str, LayoutRuns], layout: str) -> None:
    assert runs[layout].leftover_workers == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_session_dirs_created_in_layout_and_removed(
    runs: dict[str, LayoutRuns], layout: str
) -> None:
    r = runs[layout]
    for run in (r.full, r.terminate):
        assert run.checks["session_dir_removed"] == "ok"
    assert r.full.checks["session_dir_created"] == "ok"
    # the destructor removed tr_session_<id>, the layout directory itself stays
    assert (r.workspace / layout).is_dir()
    assert list((r.workspace / layout).iterdir()) == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_timings_are_reported(
    runs: dict[str, LayoutRuns], layout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    full = runs[layout].full
    names = [name for name, _ms in full.steps]
    required = ["start", "send_tensor:design.a", "fetch_tensor:design_matmul",
                "fetch_tensor:matmul", "please_exit_until_terminated", "destructor"]  # fmt: skip
    assert set(required) <= set(names)
    # start() sleeps 1 s then the 300 ms warm-up
    assert full.step_ms("start") >= 1300
    assert runs[layout].terminate.step_ms("terminate") >= 500
    with capsys.disabled():
        print(f"\n[{layout}] client step timings (ms):")
        terminate = ("terminate", runs[layout].terminate.step_ms("terminate"))
        for name, ms in [*full.steps, terminate]:
            print(f"  {name:44s} {ms:9.1f}")


def test_extract_params_parses_like_the_client(kit_build: KitBuild) -> None:
    cases = {
        '{"cmd": "matmul", "params": "r"}': "r",
        '{"params": "a\\"b", "cmd": "x"}': 'a\\"b',
        '{"cmd":"x","params":"Hello World"}': "Hello World",
        '{"cmd": "x", "params": ""}': "",
        '{"cmd": "x"}': "",
        '{"cmd": "x", "params": "unterminated': "unterminated",
        '{"params": "first"} {"params": "second"}': "first",
    }
    for response, expected in cases.items():
        out = subprocess.run(
            [str(kit_build.session_driver), "parse"],
            input=response.encode(), capture_output=True, timeout=30, check=True,
        ).stdout.decode()  # fmt: skip
        assert out == f"[{expected}]\n", (response, out)
