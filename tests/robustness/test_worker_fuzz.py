"""Bounded fuzzing of the worker's request handling in the default run: the atheris
harness (a real worker thread on a session directory, canaries outside it) on its seed
corpus, on seeded mutations and hypothesis-generated requests and files, and a short
atheris run in a subprocess. Plus checks that the harness catches what it should."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tsr_worker import DEFAULT

import tsr
from fuzz import done_runs
from fuzz import worker_harness as wh
from fuzz.worker_harness import KINDS, Case, Entry, Harness, WorkerCrash, decode, encode

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "fuzz" / "corpus" / "worker"
SEEDS = sorted(CORPUS.glob("*.bin"))
TSR_SEEDS = [p.read_bytes() for p in sorted((REPO / "fuzz" / "corpus" / "reader").glob("*"))]

BOUNDED = settings(
    max_examples=120,
    deadline=timedelta(seconds=10),  # the per-input time bound
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


def test_decode_is_total_and_inverts_encode() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        decode(bytes(rng.randrange(256) for _ in range(rng.randrange(64))))
    case = Case(b'{"cmd": "relu", "params": "a"}', (Entry("file", b"a", b"xyz"),))
    assert decode(encode(case)) == case


@pytest.mark.parametrize("seed", SEEDS, ids=[p.name for p in SEEDS])
def test_worker_harness_on_seed(seed: Path) -> None:
    wh.TestOneInput(seed.read_bytes())


def test_seeds_reach_every_kind_of_answer() -> None:
    """The seeds exercise the error codes a bad request or file can get, successes of
    both kinds, the status answer and the exit (or the corpus proves little)."""
    for seed in SEEDS:
        wh.TestOneInput(seed.read_bytes())
    stats = wh.STATS
    for code in (
        "bad_request",
        "empty_request",
        "request_too_large",
        "params_too_long",
        "unknown_command",
        "bad_tag",
        "wrong_input_count",
        "missing_input",
        "invalid_input",
        "input_too_large",
        "computation_failed",
        "unsafe_reply",
    ):
        assert stats[f"error:{code}"] > 0, code  # fmt: skip
    assert stats["ok:hello"] and stats["ok:matmul"] and stats["status_answer"] and stats["exit"]


def _mutants(count: int, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    seeds = [decode(p.read_bytes()) for p in SEEDS]
    for _ in range(count):
        case = rng.choice(seeds)
        request = bytearray(case.request)
        for _ in range(rng.randint(0, 3)):
            if request and rng.random() < 0.7:
                request[rng.randrange(len(request))] = rng.randrange(32, 127)
            else:
                del request[rng.randrange(len(request) + 1) :]
        entries = []
        for e in case.entries:
            content = bytearray(e.content)
            if content and rng.random() < 0.5:
                content[rng.randrange(min(len(content), 64))] = rng.randrange(256)
            if rng.random() < 0.2:
                content = content[: rng.randrange(len(content) + 1)]
            kind = rng.choice(KINDS) if rng.random() < 0.1 else e.kind
            entries.append(Entry(kind, e.tag, bytes(content)))
        if rng.random() < 0.2:  # swap in a reader seed as an input file
            entries.append(Entry("file", b"a", rng.choice(TSR_SEEDS)))
        yield encode(Case(bytes(request), tuple(entries[:3])))


@pytest.fixture
def tolerate_known(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random inputs may hit a known, reported bug (tested on its own below)."""
    monkeypatch.setattr(wh, "TOLERATE_KNOWN", True)


@pytest.mark.usefixtures("tolerate_known")
def test_worker_harness_on_seeded_mutations() -> None:
    for data in _mutants(300, seed=11):
        wh.TestOneInput(data)


COMMANDS = ["relu", "matmul", "add", "hello", "transpose", "HeLLo", "exit", "tensor_square",
            "conv_k3_s1_p1", "sqrt", "zeros_like"]  # fmt: skip
REQUESTS = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=60).map(str.encode),
    st.builds(
        lambda cmd, params: f'{{"cmd": "{cmd}", "params": "{params}"}}'.encode(),
        st.sampled_from(
            [
                "relu",
                "matmul",
                "add",
                "hello",
                "transpose",
                "HeLLo",
                "exit",
                "tensor_square",
                "conv_k3_s1_p1",
                "sqrt",
                "zeros_like",
            ]
        ),
        st.sampled_from(["a", "a,b", "b,a", "a,a", "", "a,b,c", "../a", "a b", ",", "a,"]),
    ),
)
FILES = st.lists(
    st.builds(
        Entry,
        st.sampled_from(KINDS),
        st.sampled_from([b"a", b"b", b"c", b"input", b"r"]),
        st.one_of(st.sampled_from(TSR_SEEDS), st.binary(max_size=100)),
    ),
    max_size=3,
)


@pytest.mark.usefixtures("tolerate_known")
@BOUNDED
@given(REQUESTS, FILES)
def test_worker_harness_on_generated_requests(request: bytes, files: list[Entry]) -> None:
    wh.harness().run_case(Case(request, tuple(files)))


def test_bounded_atheris_run_on_the_worker(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    runs = 1500
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz", "worker", f"-runs={runs}", "-seed=1", "-timeout=20",
         str(tmp_path), str(CORPUS)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert done_runs(proc.stderr) >= runs, proc.stderr[-3000:]
    assert "#stats" in proc.stderr


# ----------------------------------------------------------------------------- found bugs

FP32 = (REPO / "fuzz" / "corpus" / "reader" / "fp32_2d_3x4.tsr").read_bytes()


@pytest.mark.parametrize(
    ("request_", "inputs", "blocked"),
    [
        (b'{"cmd": "relu", "params": "a"}', (Entry("file", b"a", FP32),), b"r"),
        (b'{"cmd": "tensor_square"}', (Entry("file", b"input", FP32),), b"output"),
    ],
    ids=["r.tsr", "output.tsr"],
)
def test_result_name_blocked_by_a_directory(
    request_: bytes, inputs: tuple[Entry, ...], blocked: bytes
) -> None:
    """Found by the worker harness (fixed in d473661): a directory squatting the result
    name (r.tsr, output.tsr) was answered internal_error "cannot write r.tsr: [Errno 21]
    Is a directory: '/proc/self/fd/N/.r.tsr.tsr-tmp-...'", a client-made condition
    reported as a worker bug, with the worker's private path in the message. Now a
    specific code, the worker serving on."""
    wh.harness().run_case(Case(request_, (*inputs, Entry("dir", blocked, b""))))
    assert wh.STATS["error:result_unwritable"] + wh.STATS["status_answer"] > 0


# ----------------------------------------------------------------------------- the harness


@pytest.fixture
def rogue() -> Iterator[Harness]:
    """A separate harness whose worker also knows three misbehaving commands."""
    registry = DEFAULT.copy()

    @registry.command("rogue_write_outside")
    def write_outside(params: str) -> str:
        (own.root / "canary.tsr").write_bytes(b"overwritten")
        return "done"

    @registry.command("rogue_hang")
    def hang(params: str) -> str:
        time.sleep(1.5)
        return "late"

    @registry.command("rogue_leak")
    def leak(params: str) -> str:
        os.open(os.devnull, os.O_RDONLY)  # never closed
        return "leaked"

    own = Harness(registry)
    try:
        yield own
    finally:
        own.close()


def test_harness_catches_a_write_outside_the_session(rogue: Harness) -> None:
    rogue.run_case(Case(b'{"cmd": "hello", "params": "x"}'))
    with pytest.raises(WorkerCrash, match="canary"):
        rogue.run_case(Case(b'{"cmd": "rogue_write_outside"}'))


def test_harness_catches_a_hang(rogue: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wh, "ANSWER_TIMEOUT_S", 0.3)
    with pytest.raises(WorkerCrash, match="no answer"):
        rogue.run_case(Case(b'{"cmd": "rogue_hang"}'))
    time.sleep(1.5)  # let the worker finish before the fixture stops it


def test_harness_catches_a_descriptor_leak(rogue: Harness) -> None:
    with pytest.raises(WorkerCrash, match="descriptor leak"):
        for _ in range(60):
            rogue.run_case(Case(b'{"cmd": "rogue_leak"}'))


def test_harness_catches_a_bad_result(rogue: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A result file the C++ reader would reject (here: made truncated) is a crash."""
    real = tsr.validate

    def truncating(path: object, **kwargs: object) -> object:
        if str(path).endswith("/r.tsr"):
            Path(str(path)).write_bytes(Path(str(path)).read_bytes()[:-1])
        return real(path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tsr, "validate", truncating)
    a = (REPO / "fuzz" / "corpus" / "reader" / "fp32_2d_3x4.tsr").read_bytes()
    with pytest.raises(WorkerCrash, match=r"r\.tsr invalid"):
        rogue.run_case(Case(b'{"cmd": "relu", "params": "a"}', (Entry("file", b"a", a),)))
