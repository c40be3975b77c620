"""The ``tsr`` command: output, exit statuses, one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tsr
from tsr import header
from tsr.cli import main

SPEC_VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"
GOOD = SPEC_VECTORS / "fp32_3d_2x3x4.tsr"
LEADING = SPEC_VECTORS / "leading_dim_2.tsr"
HEADER_128 = SPEC_VECTORS / "header_size_128.tsr"
EMPTY = SPEC_VECTORS / "fp32_empty_0x3.tsr"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", str(GOOD))
    assert code == 0
    assert "TSR v1 FP32 (2, 3, 4) [C=2 H=3 W=4]" in out
    assert "elements 24, payload 96 B, file 160 B, device cpu" in out


def test_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", "--json", str(GOOD), str(EMPTY))
    assert code == 0
    rows = json.loads(out)
    assert rows[0]["shape"] == [2, 3, 4] and rows[0]["dtype"] == "FP32"
    assert rows[0]["payload_bytes"] == 96 and rows[0]["cpp_readable"] is True
    assert rows[1]["elements"] == 0 and rows[1]["cpp_readable"] is False


def test_info_bad_file_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsr"
    bad.write_bytes(b"nope")
    code, out, err = run(capsys, "info", str(bad), str(GOOD))
    assert code == 1
    assert err.count("\n") == 1 and "truncated header" in err
    assert "FP32" in out  # the good file is still shown


def test_validate_strict_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", str(GOOD))
    assert (code, out.strip()) == (0, f"{GOOD}: ok")
    code, out, _ = run(capsys, "validate", str(GOOD), str(HEADER_128))
    assert code == 1
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert lines[1].startswith(f"{HEADER_128}: INVALID: header_size at byte 8")


def test_validate_lenient(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "--lenient", str(HEADER_128))
    assert code == 0 and "warning: header_size 128" in out


def test_validate_cpp(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "--cpp", str(HEADER_128), str(LEADING))
    assert code == 0
    assert "WARNING" in out.splitlines()[1] and "different tensor" in out
    code, out, _ = run(capsys, "validate", "--cpp", str(EMPTY))
    assert code == 1 and "INVALID for C++ (allocation)" in out


def test_validate_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "--json", str(LEADING))
    assert code == 1
    (report,) = json.loads(out)  # always an array, one element per file
    assert report["ok"] is False and report["valid"] is False
    finding = report["findings"][0]
    assert finding == {
        "field": "dims[0]",
        "offset": 24,
        "found": 2,
        "expected": 1,
        "severity": "error",
        "message": finding["message"],
        "error": "BadFieldError",
    }
    assert report["cpp"]["accepts"] is True and report["cpp"]["shape"] == [3, 4]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    code, _, err = run(capsys, "convert", str(GOOD), "out.txt")
    assert code == 2 and "use .tsr (any generation), .npy or .npz" in err


def test_convert_both_ways(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    npy = tmp_path / "x.npy"
    code, _, _ = run(capsys, "convert", str(GOOD), str(npy))
    assert code == 0
    np.testing.assert_array_equal(np.load(npy), tsr.load(GOOD))
    back = tmp_path / "x.tsr"
    assert run(capsys, "convert", str(npy), str(back))[0] == 0
    assert back.read_bytes() == GOOD.read_bytes()


def test_convert_fortran_big_endian_and_empty_npy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    arr = np.asfortranarray(np.arange(12, dtype=">i4").reshape(3, 4))
    np.save(tmp_path / "f.npy", arr)
    assert run(capsys, "convert", str(tmp_path / "f.npy"), str(tmp_path / "f.tsr"))[0] == 0
    np.testing.assert_array_equal(tsr.load(tmp_path / "f.tsr"), arr)
    np.save(tmp_path / "e.npy", np.zeros((0, 2), np.float32))
    assert run(capsys, "convert", str(tmp_path / "e.npy"), str(tmp_path / "e.tsr"))[0] == 0
    assert tsr.load(tmp_path / "e.tsr").shape == (0, 2)


def test_convert_refuses_unsupported_dtype(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    np.save(tmp_path / "d.npy", np.zeros(3))
    code, _, err = run(capsys, "convert", str(tmp_path / "d.npy"), str(tmp_path / "d.tsr"))
    assert code == 1 and "float64" in err and "pass --reserved-dtypes" in err
    assert "reserved_dtypes=True" not in err  # the CLI's terms, not the API's
    assert not (tmp_path / "d.tsr").exists()
    code, _, _ = run(
        capsys, "convert", "--reserved-dtypes", str(tmp_path / "d.npy"), str(tmp_path / "d.tsr")
    )
    assert code == 0


def sparse_tsr(path: Path, shape: tuple[int, ...], last: float) -> None:
    """A large FP32 file of zeros without writing them (a sparse file), last value set."""
    with open(path, "wb") as f:
        f.write(header.encode(shape, tsr.FP32))
        f.truncate(64 + 4 * math.prod(shape))
        f.seek(-4, 2)
        f.write(np.float32(last).tobytes())


STREAM_SCRIPT = """
import resource, sys
from tsr import header
from tsr.cli import main

def vm_data():
    for line in open("/proc/self/status"):
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmData")

# Private memory (heap, anonymous maps) may grow by 64 MiB at most: a copy of the
# 256 MiB payload would fail with MemoryError. File maps do not count.
limit = vm_data() + (64 << 20)
resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))
sys.exit(main(["convert", sys.argv[1], sys.argv[2]]))
"""


@pytest.mark.parametrize("direction", ["npy-to-tsr", "tsr-to-npy"])
def test_convert_streams_without_a_payload_copy(tmp_path: Path, direction: str) -> None:
    shape = (64, 1 << 20)  # 256 MiB of float32
    npy, tsr_path = tmp_path / "big.npy", tmp_path / "big.tsr"
    if direction == "npy-to-tsr":
        np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=shape)[-1, -1] = 7
        src, dst = npy, tsr_path
    else:
        sparse_tsr(tsr_path, shape, last=7)
        src, dst = tsr_path, npy
    proc = subprocess.run(
        [sys.executable, "-c", STREAM_SCRIPT, str(src), str(dst)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = tsr.load(tsr_path) if direction == "npy-to-tsr" else np.load(npy, mmap_mode="r")
    assert out.shape == shape and out[-1, -1] == 7 and out[0, 0] == 0


def test_memory_limit_in_stream_test_would_catch_a_copy(tmp_path: Path) -> None:
    """The guard above is real: the same limit makes a full in-memory load fail."""
    script = STREAM_SCRIPT.replace(
        'sys.exit(main(["convert", sys.argv[1], sys.argv[2]]))',
        "import tsr; tsr.load(sys.argv[1], mmap=False)",
    )
    path = tmp_path / "big.tsr"
    sparse_tsr(path, (256 << 18,), last=0)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0 and "MemoryError" in proc.stderr


def test_dump(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "dump", str(SPEC_VECTORS / "int8_2d_3x4.tsr"))
    assert code == 0 and "-128" in out and "127" in out
    tsr.save(tmp_path / "big.tsr", np.arange(10_000, dtype=np.int32))
    code, out, _ = run(capsys, "dump", str(tmp_path / "big.tsr"))
    assert "..." in out and "9999" in out and len(out) < 200


def test_cli_never_prints_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsr"
    bad.write_bytes(b"TSR!" + bytes(100))
    cases = [
        ["info", str(bad)],
        ["dump", str(bad)],
        ["validate", str(bad)],
        ["convert", str(bad), str(tmp_path / "o.npy")],
        ["info", "/nonexistent"],
    ]
    for args in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "tsr", *args], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 1, args
        assert "Traceback" not in proc.stderr + proc.stdout
        assert len((proc.stderr + proc.stdout).strip().splitlines()) == 1, proc
