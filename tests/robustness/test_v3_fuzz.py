"""Bounded fuzzing of the TSR3 reader in the default run: the atheris harness's oracles
(fuzz/v3_harness.py) on the seed corpus and on seeded random mutations of it, checks that
the oracles catch what they must, and a short coverage-guided atheris run."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tsr
from fuzz import done_runs, v3_harness

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "fuzz" / "corpus" / "v3"
SEEDS = sorted(CORPUS.glob("*.tsr"))
VALID = CORPUS / "fp32_r2_3x4_zlib.tsr"
U32_EDGES = (0, 1, 2, 3, 4, 5, 128, 256, 480, 2**31, 2**32 - 1)
U64_EDGES = (0, 1, 128, 256, 480, 2**32, 2**62, 2**63, 2**64 - 1, 2**64 - 128)


def test_seed_corpus_holds_every_cpp_vector_and_the_small_malformed_ones() -> None:
    data = REPO / "tests" / "data" / "vectors3"
    names = {p.name for p in SEEDS}
    assert {p.name for p in data.glob("*.tsr")} <= names
    small = {p.name for p in (data / "malformed").glob("*.tsr") if p.stat().st_size < 65536}
    assert small <= names and len(small) >= 40
    for p in SEEDS:
        src = data / p.name if (data / p.name).exists() else data / "malformed" / p.name
        assert p.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("seed", SEEDS, ids=[p.name for p in SEEDS])
def test_harness_on_seed(seed: Path) -> None:
    v3_harness.TestOneInput(seed.read_bytes())


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three edits of the kinds libFuzzer makes, biased to the header's fields."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        if op == 0 and len(buf) > 4:
            buf[rng.randrange(4, min(len(buf), 300))] = rng.randrange(256)
        elif op == 1 and len(buf) >= 76:
            struct.pack_into("<I", buf, rng.choice((4, 8, 12, 68, 72)), rng.choice(U32_EDGES))
        elif op == 2 and len(buf) >= 68:
            struct.pack_into("<Q", buf, rng.choice((36, 44, 52, 60)), rng.choice(U64_EDGES))
        elif op == 3 and len(buf) >= 36:
            struct.pack_into("<i", buf, rng.randrange(20, 36, 4), rng.choice((0, 1, 5, -1)))
        elif op == 4:
            del buf[rng.randrange(len(buf) + 1) :]
        else:
            buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(buf)


def test_harness_on_seeded_mutations() -> None:
    rng = random.Random(20261201)
    seeds = [p.read_bytes() for p in SEEDS if p.stat().st_size < 4096]
    before = dict(v3_harness.STATS)
    for _ in range(600):
        v3_harness.TestOneInput(mutate(rng.choice(seeds), rng))
    seen = {k for k, v in v3_harness.STATS.items() if v > before.get(k, 0)}
    # the mutations reach acceptance, lenient-only acceptance and many distinct checks
    assert {"strict_ok", "lenient_ok", "BadFieldError", "TruncatedError"} <= seen
    assert len([k for k in seen if k.startswith("cpp_read_")]) >= 10


def test_harness_lets_a_foreign_exception_escape(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("dims")

    monkeypatch.setattr(tsr, "load", broken)
    with pytest.raises(KeyError):
        v3_harness.TestOneInput(VALID.read_bytes())


def test_harness_catches_a_wrong_array(monkeypatch: pytest.MonkeyPatch) -> None:
    real = tsr.load

    def flipped(*args: Any, **kwargs: Any) -> Any:
        arr = real(*args, **kwargs).copy()
        arr.reshape(-1)[0] += 1
        return arr

    monkeypatch.setattr(tsr, "load", flipped)
    with pytest.raises(v3_harness.OracleError, match="CRC"):
        v3_harness.TestOneInput(VALID.read_bytes())


def test_harness_catches_a_validator_that_disagrees(monkeypatch: pytest.MonkeyPatch) -> None:
    real = tsr.validate

    def always_ok(*args: Any, **kwargs: Any) -> Any:
        r = real(*args, **kwargs)
        return type(r)(r.path, r.file_size, r.strict, (), r.cpp, r.header, r.format,
                       r.tensors, r.cpp_paths)  # fmt: skip

    monkeypatch.setattr(tsr, "validate", always_ok)
    bad = bytearray(VALID.read_bytes())
    bad[8] = 9  # version 9
    with pytest.raises(v3_harness.OracleError, match="validate"):
        v3_harness.TestOneInput(bytes(bad))


def test_harness_catches_a_lenient_reader_accepting_what_cpp_rejects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tsr import v3_cpp

    real = v3_cpp.verdicts

    def rejects(*args: Any, **kwargs: Any) -> Any:
        mm, rd = real(*args, **kwargs)
        return mm, type(rd)(False, "alloc_zero", "Cannot allocate 0 bytes", path="read")

    monkeypatch.setattr(v3_cpp, "verdicts", rejects)
    with pytest.raises(v3_harness.OracleError, match=r"C\+\+ \(read\)"):
        v3_harness.TestOneInput(VALID.read_bytes())


def test_bounded_atheris_run(tmp_path: Path) -> None:
    """A fixed number of coverage-guided executions through ``python -m fuzz v3``. The
    per-input bound is generous (a loaded 2-core machine can stall a process for
    seconds; the harness takes ~25 ms per input), and artifacts go to tmp_path, never
    into the repository."""
    pytest.importorskip("atheris")
    runs = 1000  # the harness prints its #stats line at 1000 executions
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz", "v3", f"-runs={runs}", "-seed=1", "-timeout=60",
         f"-artifact_prefix={tmp_path}/", str(tmp_path), str(CORPUS)],
        cwd=REPO, env=env, check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert done_runs(proc.stderr) >= runs, proc.stderr[-3000:]
    assert "#stats" in proc.stderr and "cov:" in proc.stderr
