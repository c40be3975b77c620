"""The ``tsr`` command on TSR3 files: info, validate --cpp (both importer paths), dump,
and convert between v1, TSR3, .npy and .npz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tsr
from tsr.cli import main

REPO = Path(__file__).resolve().parents[2]
V3 = REPO / "tests" / "data" / "vectors3"
RAW = V3 / "fp32_r2_3x4_raw.tsr"
ZLIB = V3 / "fp32_r4_2x3x4x5_zlib.tsr"
MALFORMED = V3 / "malformed"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_one_line_per_tensor(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", str(RAW), str(ZLIB))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"{RAW}: TSR3 FP32 (3, 4) [W=3 C=4] RAW 48 B at 256, crc32 0x")
    assert lines[1].startswith(f"{ZLIB}: TSR3 FP32 (2, 3, 4, 5) [N=2 H=3 W=4 C=5] zlib ")
    assert len(lines) == 2


def test_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", "--json", str(ZLIB))
    assert code == 0
    data = json.loads(out)
    row = data[0] if isinstance(data, list) else data
    assert row["format"] == "TSR3" and row["tensors"][0]["compression"] == "zlib"
    assert row["tensors"][0]["shape"] == [2, 3, 4, 5] and row["tensors"][0]["nbytes"] == 480


def test_validate_cpp_names_both_paths(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "--cpp", str(RAW))
    assert (code, out.strip()) == (0, f"{RAW}: ok for C++ (mmap, read)")
    # m034: mmap accepts an empty tensor, the read path cannot allocate 0 bytes
    m034 = MALFORMED / "m034_dim_zero_inside_ndim4.tsr"
    code, out, _ = run(capsys, "validate", "--cpp", str(m034))
    assert code == 1 and "read: alloc_zero: Cannot allocate 0 bytes" in out
    # m036: both accept, the read path overruns its buffer
    m036 = MALFORMED / "m036_ndim0_on_4d_dims.tsr"
    code, out, _ = run(capsys, "validate", "--cpp", str(m036))
    assert code == 0 and "WARNING" in out and "heap overrun of 476 bytes" in out
    code, out, _ = run(capsys, "validate", str(m036))
    assert code == 1 and "INVALID: dims[0]" in out


def test_dump(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "dump", str(V3 / "int8_r1_5_zlib.tsr"))
    assert code == 0
    assert out.splitlines()[0].endswith(": INT8 (5,)")
    values = np.array(json.loads(out.splitlines()[1]))
    assert np.array_equal(values, tsr.load(V3 / "int8_r1_5_zlib.tsr"))


def test_convert_round_trips_reproduce_the_cpp_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    npy, v1, back = tmp_path / "a.npy", tmp_path / "a_v1.tsr", tmp_path / "b.tsr"
    assert run(capsys, "convert", str(ZLIB), str(npy))[0] == 0
    assert run(capsys, "convert", str(npy), str(v1))[0] == 0  # default: v1
    assert tsr.read_header(v1).format == "v1"
    assert run(capsys, "convert", str(v1), str(back), "--format", "v3", "--zlib")[0] == 0
    assert back.read_bytes() == ZLIB.read_bytes()
    assert run(capsys, "convert", str(ZLIB), str(back))[0] == 0  # same generation, same mode
    assert tsr.read_header(back).format == "v3"
    assert run(capsys, "convert", str(back), str(tmp_path / "r.tsr"), "--format", "v3")[0] == 0
    assert np.array_equal(tsr.load(tmp_path / "r.tsr"), tsr.load(ZLIB))


def test_convert_npz(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    npz = tmp_path / "x.npz"
    assert run(capsys, "convert", str(RAW), str(npz))[0] == 0
    with np.load(npz) as z:
        assert z.files == ["arr_0"] and np.array_equal(z["arr_0"], tsr.load(RAW))
    out = tmp_path / "y.tsr"
    assert run(capsys, "convert", str(npz), str(out), "--format", "v3")[0] == 0
    assert out.read_bytes() == RAW.read_bytes()


def test_convert_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "convert", str(V3 / "bf16_r1_5_raw.tsr"), str(tmp_path / "x.tsr"),
                       "--format", "v1")  # fmt: skip
    assert code == 1 and err.count("\\n") == 0 and err.count("\n") == 1
    assert "reserved" in err or "bfloat16" in err
    code, _, err = run(capsys, "convert", str(RAW), str(tmp_path / "x.tsr"), "--zlib",
                       "--format", "v1")  # fmt: skip
    assert code == 1 and "no compression" in err and err.count("\n") == 1
