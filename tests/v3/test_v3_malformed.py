"""The malformed TSR3 files of tests/data/vectors3/malformed (copies of the shared set,
each judged by the real C++ importer on both of its paths, in index.json): the reader
refuses each with its error class, fast and in bounded memory, and the C++ model of
``validate`` gives the importer's verdict, check and message on both paths."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import tsr

REPO = Path(__file__).resolve().parents[2]
MALFORMED = REPO / "tests" / "data" / "vectors3" / "malformed"
INDEX: list[dict[str, Any]] = json.loads((MALFORMED / "index.json").read_text())["files"]
IDS = [e["file"] for e in INDEX]

B, T, S = tsr.BadFieldError, tsr.TruncatedError, tsr.SizeMismatchError
C, Z = tsr.ChecksumError, tsr.CompressionError
# file id -> (error of a strict load, error of a lenient load or None when it loads)
READER: dict[str, tuple[type[tsr.TSRError] | None, type[tsr.TSRError] | None]] = {
    "m002": (T, T), "m004": (T, T), "m006": (tsr.BadMagicError,) * 2,
    "m008": (tsr.BadMagicError,) * 2, "m010": (tsr.UnsupportedVersionError,) * 2,
    "m012": (B, B), "m014": (B, B), "m016": (B, B), "m018": (tsr.UnsupportedDTypeError,) * 2,
    "m020": (B, B), "m022": (B, B), "m024": (B, B), "m026": (B, B), "m028": (S, Z),
    "m030": (B, B), "m032": (B, B), "m034": (B, B), "m036": (B, B), "m038": (B, B),
    "m040": (B, None), "m042": (B, B), "m044": (B, B), "m046": (B, B),
    "m048": (None, None),  # FP32 relabelled INT32 (same size, same CRC): undetectable
    "m050": (S, None),  # FP32 relabelled BF16, sizes and CRC fixed: only trailing bytes show
    "m052": (B, None), "m054": (B, None), "m056": (T, T), "m058": (T, T), "m060": (B, None),
    "m062": (S, None), "m064": (C, C), "m066": (C, C), "m068": (T, T), "m070": (B, B),
    "m072": (T, T), "m074": (Z, Z), "m076": (Z, Z), "m078": (S, None), "m080": (Z, Z),
    "m082": (Z, Z), "m084": (T, T), "m086": (T, T),
}  # fmt: skip


def test_every_malformed_file_is_covered() -> None:
    assert sorted(e["file"][:4] for e in INDEX) == sorted(READER)
    assert sorted(p.name for p in MALFORMED.glob("*.tsr")) == sorted(IDS)


@pytest.mark.parametrize("entry", INDEX, ids=IDS)
@pytest.mark.parametrize("mmap", [True, False])
def test_reader_refuses_with_its_error_class(entry: dict[str, Any], mmap: bool) -> None:
    strict_error, lenient_error = READER[entry["file"][:4]]
    path = MALFORMED / entry["file"]
    for strict, error in ((True, strict_error), (False, lenient_error)):
        start = time.perf_counter()
        if error is None:
            tsr.load(path, mmap=mmap, strict=strict)
        else:
            with pytest.raises(error) as info:
                tsr.load(path, mmap=mmap, strict=strict)
            assert type(info.value) is error
            assert info.value.field and info.value.offset is not None
        assert time.perf_counter() - start < 5.0


def _unsafe(verdict: dict[str, Any]) -> bool:
    """An acceptance of a tensor the file cannot back, or that overran a buffer."""
    return verdict["verdict"] == "accepted" and (
        "buffer_overrun_bytes" in verdict
        or "tensor_extends_past_eof_bytes" in verdict
        or verdict["nbytes"] != verdict["header_raw_data_size"]
        or verdict["numel"] == 0
        or math.prod(verdict["shape"]) != verdict["numel"]
        or verdict["numel"] * ITEMSIZE[verdict["dtype"]] != verdict["nbytes"]
    )


@pytest.mark.parametrize("entry", INDEX, ids=IDS)
def test_cpp_rejections_and_unsafe_acceptances_are_errors(entry: dict[str, Any]) -> None:
    """What C++ rejects, crashes on, or accepts unsafely, the strict and the lenient
    reader both refuse (the issue's rule); validate agrees with the reader."""
    paths = (entry["cpp_mmap"], entry["cpp_nommap"])
    path = MALFORMED / entry["file"]
    if any(v["verdict"] != "accepted" or _unsafe(v) for v in paths):
        assert READER[entry["file"][:4]][1] is not None
    for strict in (True, False):
        report = tsr.validate(path, strict=strict, format="v3")
        assert report.ok == (READER[entry["file"][:4]][0 if strict else 1] is None)


ITEMSIZE = {"FP32": 4, "BF16": 2, "INT32": 4, "INT8": 1}
PATHS = {"mmap": "cpp_mmap", "read": "cpp_nommap"}


@pytest.mark.parametrize("entry", INDEX, ids=IDS)
def test_cpp_model_matches_the_real_importer_on_both_paths(entry: dict[str, Any]) -> None:
    path = MALFORMED / entry["file"]
    report = tsr.validate(path, format="v3")
    assert [v.path for v in report.cpp_paths] == ["mmap", "read"]
    for v in report.cpp_paths:
        real = entry[PATHS[v.path]]
        assert v.accepts == (real["verdict"] == "accepted"), v
        if v.accepts:
            assert list(v.shape or ()) == real["shape"]
            unsafe = _unsafe(real)
            assert (v.hazard is not None or v.different_tensor) == unsafe, v
        else:
            assert v.check == real["check"]
            assert v.message == real["message"].replace(entry["file"], str(path))
            assert v.error_type == real["type"].removeprefix("tr::")


def test_cpp_model_with_8gib_matches_the_reruns() -> None:
    """With the memory of the 8 GiB reruns the read path allocates, then fails reading."""
    from tsr import v3_cpp

    for entry in INDEX:
        rerun = entry.get("cpp_nommap_rerun_8GiB")
        if rerun is None:
            continue
        path = MALFORMED / entry["file"]
        data = path.read_bytes()

        def read_at(o: int, n: int, data: bytes = data) -> bytes:
            return data[o : o + n]

        _, read = v3_cpp.verdicts(data[:256], len(data), read_at, name=str(path),
                                  memory_limit=8 << 30)  # fmt: skip
        assert (read.accepts, read.check) == (False, rerun["check"])
        assert read.allocates > 1 << 30


def test_hostile_files_load_in_bounded_memory(tmp_path: Path) -> None:
    """Every malformed file read, loaded (both ways) and validated under a 1 GiB
    address-space limit, in a fresh process: nothing allocates what the file cannot back
    (the C++ read path allocates 4 GiB for m084/m086; the upstream reader inflates m082's
    2 GiB bomb)."""
    script = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
import tsr
from pathlib import Path
for p in sorted(Path({str(MALFORMED)!r}).glob("*.tsr")):
    for mmap in (True, False):
        try:
            tsr.load(p, mmap=mmap)
        except tsr.TSRError:
            pass
    tsr.validate(p, format="v3")
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print(hwm[0].split()[1])  # this process's peak RSS in KiB (ru_maxrss keeps the parent's)
"""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120, check=True)  # fmt: skip
    assert int(out.stdout.strip()) < 200 * 1024  # KiB: far below any payload's claim
