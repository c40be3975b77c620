"""Bounded fuzzing of the TSR4 reader in the default run: the harness's oracles on every
seed, on seeded mutations and on structured random files, the oracles themselves, and a
short coverage-guided atheris run in a subprocess."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fuzz
import tsr
from fuzz import v4_harness
from fuzz.reader_harness import OracleError
from tsr import _blocks, _schema, _v4cpp, v4

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "fuzz" / "corpus" / "v4"
SEEDS = sorted(CORPUS.iterdir())


def test_the_seeds_are_the_small_vectors() -> None:
    data = REPO / "tests" / "data" / "vectors4"
    small = {p.name for p in [*data.glob("*.tsr"), *data.glob("malformed/*.tsr")]
             if p.stat().st_size <= 1300}  # fmt: skip
    assert {p.name for p in SEEDS} == small and len(SEEDS) >= 80


@pytest.mark.parametrize("seed", SEEDS, ids=[p.name for p in SEEDS])
def test_harness_on_seed(seed: Path) -> None:
    v4_harness.check_bytes(seed.read_bytes())


def _v1_with(dtype: int, dims: tuple[int, int, int, int] | None = None, extra: int = 0) -> bytes:
    """A v1 file of a (1, 2, 3, 4) FP32 array with its dtype code (and dims) overwritten."""
    data = bytearray(tsr.to_bytes(np.zeros((1, 2, 3, 4), np.float32))) + bytes(extra)
    struct.pack_into("<I", data, _schema.FIELD_BY_NAME["dtype"].offset, dtype)
    if dims is not None:
        struct.pack_into("<4i", data, _schema.FIELD_BY_NAME["dims"].offset, *dims)
    return bytes(data)


@pytest.mark.parametrize(
    "data",
    [_v1_with(6, extra=96), _v1_with(6, (1, -754974720, 3, 4))],
    ids=["reserved_dtype", "reserved_dtype_negative_dim"],
)
def test_harness_on_reserved_v1_dtype(data: bytes) -> None:
    """An input that reads as v1 with a reserved dtype (FP64): validate reports the dtype as
    a warning, so it agrees with the reader that reads reserved dtypes. The fuzzer's
    220,824th input of a run (the second case) broke the harness before it knew that."""
    v4_harness.check_bytes(data)


def test_harness_on_seeded_mutations() -> None:
    rng = random.Random(4)
    blobs = [p.read_bytes() for p in SEEDS]
    for _ in range(300):
        data = bytearray(rng.choice(blobs))
        for _ in range(rng.randint(1, 4)):
            kind = rng.random()
            at = rng.randrange(len(data))
            if kind < 0.6:
                data[at] ^= 1 << rng.randrange(8)
            elif kind < 0.8:
                data[at : at + 8] = rng.randbytes(8)
            elif kind < 0.9:
                del data[at:]
            else:
                data[at:at] = rng.randbytes(rng.randint(1, 16))
        v4_harness.check_bytes(bytes(data))


@settings(max_examples=80, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=4), min_size=1, max_size=4),
    dtype=st.sampled_from(["<f4", "<f2", "i1", "<i4"]),
    compression=st.sampled_from([None, "zlib"]),
    field=st.integers(0, 10_000),
    value=st.integers(0, 255),
)
def test_harness_on_structured_files(
    shapes: list[list[int]], dtype: str, compression: str | None, field: int, value: int
) -> None:
    arrays = [np.arange(int(np.prod(s)), dtype=dtype).reshape(s) for s in shapes]
    blob = bytearray(v4.to_bytes(arrays, compression))  # type: ignore[arg-type]
    v4_harness.check_bytes(bytes(blob))
    at = field % min(len(blob), v4.HEADER_SIZE + v4.ENTRY_SIZE * len(arrays) + 8)
    blob[at] = value  # one byte of the header or directory
    v4_harness.check_bytes(bytes(blob))


def test_harness_catches_a_wrong_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _v4cpp.cpp_verdict

    def lying(*args: object, **kw: object) -> object:
        out = real(*args, **kw)  # type: ignore[arg-type]
        return _v4cpp.CppVerdict("rejected", "magic", "no") if out.accepts else out

    monkeypatch.setattr(_v4cpp, "cpp_verdict", lying)
    with pytest.raises(OracleError):
        v4_harness.check_bytes(_good())


def _good() -> bytes:
    return v4.to_bytes([np.ones((2, 3), "<f4")])


def test_harness_catches_a_reader_that_disagrees(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _blocks.read_block

    def flipped(fd: int, info: object, mode: str, **kw: Any) -> npt.NDArray[Any]:
        arr = real(fd, info, mode, **kw)  # type: ignore[arg-type]
        return arr if mode != "copy" else arr * 2

    monkeypatch.setattr(_blocks, "read_block", flipped)
    with pytest.raises(OracleError, match="mmap=False"):
        v4_harness.check_bytes(_good())


def test_bounded_atheris_run(tmp_path: Path) -> None:
    """A fixed number of coverage-guided executions through ``python -m fuzz v4``."""
    pytest.importorskip("atheris")
    runs = 1500
    proc = fuzz.bounded_run("v4", runs, [str(tmp_path), str(CORPUS)], timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert fuzz.done_runs(proc.stderr) >= runs, proc.stderr[-3000:]
    assert "#stats" in proc.stderr and "cov:" in proc.stderr


_PLAIN_CHECK = """
import json, sys
from fuzz import __main__ as runner
runner._load("v4")
import tsr.v4 as v4
plain = runner.plain_code(v4)
print(json.dumps({n: getattr(v4, n).__code__.co_code == plain[n].co_code for n in sys.argv[1:]}))
"""


def test_vectorised_checks_run_uninstrumented() -> None:
    """Under atheris, the functions of ``fuzz.__main__.UNTRACED`` get their plain code back
    (atheris's comparison hook leaks on every comparison that returns a NumPy array), and
    the rest of their module stays instrumented."""
    pytest.importorskip("atheris")
    from fuzz import __main__ as runner

    untraced = runner.UNTRACED["tsr.v4"]
    proc = subprocess.run(
        [sys.executable, "-c", _PLAIN_CHECK, *untraced, "plan", "directory_problems"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    plain = json.loads(proc.stdout.splitlines()[-1])
    assert plain == {**dict.fromkeys(untraced, True), "plan": False, "directory_problems": False}
