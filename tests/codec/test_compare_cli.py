"""``tsr compare`` (files and directories) and ``tsr info --stats``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tsr
from tsr.cli import main

DATA = Path(__file__).resolve().parents[1] / "data"


def tsr4_readable() -> bool:
    try:
        with tsr.open(DATA / "vectors4" / "multi2_fp32_int8_raw.tsr") as f:
            return len(f) == 2
    except tsr.TSRError:
        return False


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    b = np.linspace(-1, 1, 24, dtype=np.float32).reshape(4, 6)
    a = b.copy()
    a[1, 2] += 0.25
    a[3, 5] = np.nan
    tsr.save(tmp_path / "a.tsr", a)
    np.save(tmp_path / "b.npy", b.reshape(1, 4, 6))
    return tmp_path / "a.tsr", tmp_path / "b.npy", a, b


def test_same_files_exit_0(capsys: pytest.CaptureFixture[str], pair: tuple[Path, ...]) -> None:
    _, b, *_ = pair
    code, out, err = run(capsys, "compare", b, b)
    assert (code, err) == (0, "")
    assert out == (
        f"{b} vs {b}: ok, (1, 4, 6) float32 vs (1, 4, 6) float32, max_abs 0 mean_abs 0 "
        "mse 0 max_rel 0 max_ulp 0, mismatches 0/24\n"
    )


def test_different_exit_1_with_worst(
    capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path, np.ndarray, np.ndarray]
) -> None:
    a, b, av, bv = pair
    code, out, _ = run(capsys, "compare", a, b)
    assert code == 1 and out.count("\n") == 1
    c = tsr.compare(av, bv.reshape(1, 4, 6))
    assert out == f"{a} vs {b}: {c.summary()}\n"
    assert "DIFFERENT, (4, 6) float32 vs (1, 4, 6) float32" in out
    assert "mismatches 2/24 (nan 1, inf 0), worst [1, 2]" in out
    assert f"{float(av[1, 2]):.8g} vs {float(bv[1, 2]):.8g}" in out
    # within a looser tolerance, and with NaN taken as equal... still the NaN against 0.75
    assert run(capsys, "compare", "--atol", "0.3", a, b)[0] == 1


def test_verbose_lists_first_mismatches(
    capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path, np.ndarray, np.ndarray]
) -> None:
    a, b, av, bv = pair
    code, out, _ = run(capsys, "compare", "-v", a, b)
    lines = out.splitlines()
    assert code == 1 and len(lines) == 3
    assert lines[1] == f"  [1, 2]: {float(av[1, 2]):.8g} vs {float(bv[1, 2]):.8g}"
    assert lines[2] == f"  [3, 5]: nan vs {float(bv[3, 5]):.8g}"
    code, out, _ = run(capsys, "compare", "-v", "--first", "1", a, b)
    assert len(out.splitlines()) == 2


def test_json_is_an_array(
    capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path, np.ndarray, np.ndarray]
) -> None:
    a, b, *_ = pair
    code, out, _ = run(capsys, "compare", "--json", "-v", a, b)
    rows = json.loads(out)
    assert code == 1 and isinstance(rows, list) and len(rows) == 1
    r = rows[0]
    assert (r["a"], r["b"], r["ok"], r["mismatches"], r["nan_mismatches"]) == (
        str(a), str(b), False, 2, 1,
    )  # fmt: skip
    assert r["worst_index"] == [1, 2] and r["shape_b"] == [1, 4, 6]
    assert r["first_mismatches"][1] == {"index": [3, 5], "a": "NaN", "b": 1.0}


def test_tolerance_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    b = np.array([1.0, 2.0], np.float32)
    a = np.array([1.001, 2.0], np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    assert run(capsys, "compare", tmp_path / "a.npy", tmp_path / "b.npy")[0] == 1
    assert run(capsys, "compare", "--rtol", "1e-2", tmp_path / "a.npy", tmp_path / "b.npy")[0] == 0
    assert run(capsys, "compare", "--atol", "0.01", tmp_path / "a.npy", tmp_path / "b.npy")[0] == 0
    nan = np.array([np.nan], np.float32)
    np.save(tmp_path / "n.npy", nan)
    assert run(capsys, "compare", tmp_path / "n.npy", tmp_path / "n.npy")[0] == 0
    assert run(capsys, "compare", "--nan-differs", tmp_path / "n.npy", tmp_path / "n.npy")[0] == 1


@pytest.mark.parametrize("bad", [["--rtol", "-1"], ["--atol", "nan"], ["--first", "x"], []])
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], pair: tuple[Path, ...], bad: list[str]
) -> None:
    a, b, *_ = pair
    args = ["compare", *bad, str(a), str(b)] if bad else ["compare", str(a)]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert "tsr compare: error:" in capsys.readouterr().err


def test_file_against_directory_is_usage(
    capsys: pytest.CaptureFixture[str], pair: tuple[Path, ...]
) -> None:
    a, *_ = pair
    code, out, err = run(capsys, "compare", a, a.parent)
    assert (code, out) == (2, "")
    assert err == (
        f"tsr: compare: {a.parent} is a directory and {a} is not: "
        "give two files or two directories\n"
    )


def test_bad_file_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "bad.tsr").write_bytes(b"TSR!")
    np.save(tmp_path / "b.npy", np.zeros(3, np.float32))
    code, out, err = run(capsys, "compare", tmp_path / "bad.tsr", tmp_path / "b.npy")
    assert (code, out) == (1, "") and err.count("\n") == 1
    assert err.startswith("tsr: ") and "truncated" in err
    code, out, err = run(capsys, "compare", tmp_path / "missing.tsr", tmp_path / "b.npy")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"tsr: {tmp_path / 'missing.tsr'}: No such file or directory")


def test_shape_mismatch_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tsr.save(tmp_path / "a.tsr", np.zeros((2, 3), np.float32))
    tsr.save(tmp_path / "b.tsr", np.zeros((3, 2), np.float32))
    code, out, _ = run(capsys, "compare", tmp_path / "a.tsr", tmp_path / "b.tsr")
    assert code == 1
    assert out.endswith(
        ": DIFFERENT, (2, 3) float32 vs (3, 2) float32: shapes (2, 3) and (3, 2) differ "
        "(beyond leading 1s)\n"
    )


def make_runs(tmp_path: Path) -> tuple[Path, Path]:
    """A C++ run (.tsr) and a PyTorch run (.npy and .tsr), paired by name."""
    cpp, py = tmp_path / "cpp", tmp_path / "py"
    (cpp / "layer2").mkdir(parents=True)
    (py / "layer2").mkdir(parents=True)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    tsr.save(cpp / "conv.tsr", x)
    np.save(py / "conv.npy", x)  # same values: ok
    tsr.save(cpp / "layer2" / "relu.tsr", x)
    y = x.copy()
    y[2, 3] = 100.0
    tsr.save(py / "layer2" / "relu.tsr", y)  # differs
    tsr.save(cpp / "only_cpp.tsr", x)
    np.save(py / "only_py.npy", x)
    (py / "notes.txt").write_text("not a tensor")
    return cpp, py


def test_directories_pair_by_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cpp, py = make_runs(tmp_path)
    code, out, err = run(capsys, "compare", cpp, py)
    assert code == 1 and err == ""
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == [
        "conv", "layer2/relu", "only_cpp", "only_py",
    ]  # fmt: skip
    assert lines[0].startswith("conv: ok, (3, 4) float32 vs (3, 4) float32")
    assert lines[1].startswith("layer2/relu: DIFFERENT") and "worst [2, 3] 11 vs 100" in lines[1]
    assert lines[2] == f"only_cpp: MISSING, only in A ({cpp / 'only_cpp.tsr'})"
    assert lines[3] == f"only_py: MISSING, only in B ({py / 'only_py.npy'})"
    assert lines[4] == "4 name(s): 1 ok, 3 different or missing"
    assert len(lines) == 5


def test_directories_json_and_all_ok(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cpp, py = make_runs(tmp_path)
    code, out, _ = run(capsys, "compare", "--json", cpp, py)
    rows = json.loads(out)
    assert code == 1 and [r["name"] for r in rows] == ["conv", "layer2/relu", "only_cpp", "only_py"]
    assert [r["ok"] for r in rows] == [True, False, False, False]
    assert rows[1]["max_abs"] == 89.0 and rows[2] == {
        "name": "only_cpp", "a": str(cpp / "only_cpp.tsr"), "b": None, "ok": False,
        "error": "only in A",
    }  # fmt: skip
    for name in ("only_cpp.tsr", "layer2/relu.tsr"):
        (cpp / name).unlink()
    (py / "only_py.npy").unlink()
    (py / "layer2" / "relu.tsr").unlink()
    code, out, _ = run(capsys, "compare", cpp, py)
    assert code == 0 and out.splitlines()[-1] == "1 name(s): 1 ok, 0 different or missing"


def test_directory_name_held_twice(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cpp, py = make_runs(tmp_path)
    np.save(cpp / "conv.npy", np.zeros(3, np.float32))  # conv.tsr and conv.npy: ambiguous
    code, out, err = run(capsys, "compare", cpp, py)
    assert code == 1
    assert err == f"tsr: conv: ambiguous: {cpp / 'conv.npy'} and {cpp / 'conv.tsr'}\n"
    assert not any(line.startswith("conv:") for line in out.splitlines())


def test_cpp_vectors_against_pytorch_run(
    capsys: pytest.CaptureFixture[str], vectors_dir: Path, tmp_path: Path
) -> None:
    """The README's example: the C++ framework's files against the same tensors from torch."""
    torch = pytest.importorskip("torch")
    import tsr.torch

    run_dir = tmp_path / "torch_run"
    run_dir.mkdir()
    tsr.torch.save(run_dir / "fp32_2d_3x4.tsr", torch.arange(12.0).reshape(3, 4) * 0.5 - 3.25)
    x = torch.arange(24.0).reshape(2, 3, 4)
    np.save(run_dir / "fp32_3d_2x3x4.npy", (x * 0.25 - 3.25).numpy())  # not the C++ formula
    code, out, _ = run(
        capsys, "compare", vectors_dir / "fp32_2d_3x4.tsr", run_dir / "fp32_2d_3x4.tsr"
    )
    assert code == 0 and ": ok, (3, 4) float32 vs (3, 4) float32, max_abs 0 " in out
    code, out, _ = run(capsys, "compare", vectors_dir, run_dir)
    lines = out.splitlines()
    assert code == 1
    assert lines[0].startswith("fp32_0d_scalar: MISSING, only in A")
    assert any(line.startswith("fp32_2d_3x4: ok") for line in lines)
    assert any(line.startswith("fp32_3d_2x3x4: DIFFERENT") for line in lines)


# ----------------------------------------------------------------------------- info --stats


def test_info_stats_text_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    x = np.array([[1.5, -2.0, 0.0], [np.nan, np.inf, -0.0]], np.float32)
    tsr.save(tmp_path / "x.tsr", x)
    code, out, _ = run(capsys, "info", "--stats", tmp_path / "x.tsr")
    fin = np.array([1.5, -2.0, 0.0, -0.0])
    assert code == 0
    assert out.splitlines()[-1] == (
        f"  stats: min -2 max 1.5 mean {fin.mean():.8g} std {fin.std():.8g}, nan 1, inf 1, zeros 2"
    )
    code, out, _ = run(capsys, "info", "--stats", "--json", tmp_path / "x.tsr")
    rows = json.loads(out)
    row = rows[0] if isinstance(rows, list) else rows
    assert row["stats"] == [{
        "count": 6, "finite": 4, "nan": 1, "inf": 1, "zeros": 2, "min": -2.0, "max": 1.5,
        "mean": fin.mean(), "std": pytest.approx(fin.std(), rel=1e-15),
    }]  # fmt: skip
    code, out, _ = run(capsys, "info", tmp_path / "x.tsr")
    assert "  stats:" not in out  # only when asked: it reads the data


def test_info_stats_truncated_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = tsr.to_bytes(np.zeros(100, np.float32))
    (tmp_path / "t.tsr").write_bytes(data[:-8])
    code, _, err = run(capsys, "info", "--stats", tmp_path / "t.tsr")
    assert code == 1 and err.count("\n") == 1 and err.startswith(f"tsr: {tmp_path / 't.tsr'}: ")


# ----------------------------------------------------------------------------- generations


def test_generations_compare(capsys: pytest.CaptureFixture[str]) -> None:
    """C++-written TSR3 files (RAW, ZLIB, BF16) against the C++-written v1 file."""
    v1 = DATA / "vectors1" / "fp32_2d_3x4.tsr"
    for name in ("fp32_r2_3x4_raw", "fp32_r2_3x4_zlib", "bf16_r2_3x4_raw"):
        code, out, _ = run(capsys, "compare", DATA / "vectors3" / f"{name}.tsr", v1)
        dtype = "bfloat16" if name.startswith("bf16") else "float32"
        assert code == 0, out
        assert f": ok, (3, 4) {dtype} vs (3, 4) float32, max_abs 0 " in out
    c = tsr.compare(
        DATA / "vectors3" / "fp32_r4_2x3x4x5_zlib.tsr", DATA / "vectors1" / "fp32_4d_2x3x4x5.tsr"
    )
    assert c.ok and c.count == 120


@pytest.mark.skipif(not tsr4_readable(), reason="tsr.open does not read TSR4 files yet")
def test_multi_tensor_files_pair_by_position(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    multi = DATA / "vectors4" / "multi2_fp32_int8_raw.tsr"
    zlib = DATA / "vectors4" / "multi2_fp32_int8_zlib.tsr"
    code, out, _ = run(capsys, "compare", multi, zlib)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith(f"{multi}[0] vs {zlib}[0]: ok")
    assert lines[1].startswith(f"{multi}[1] vs {zlib}[1]: ok")
    three = DATA / "vectors4" / "multi3_fp16_int32_fp32img_raw.tsr"
    code, out, _ = run(capsys, "compare", "--json", multi, three)
    rows = json.loads(out)
    assert code == 1 and [r["index"] for r in rows] == [0, 1, 2]
    assert rows[2]["error"] == "tensor 2 only in B"
    with pytest.raises(tsr.BadArgumentError, match="holds 2 tensors"):
        tsr.compare(multi, zlib)


def test_info_stats_tsr3(capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "vectors3" / "fp32_special_r2_4x9_zlib.tsr"
    with np.errstate(invalid="ignore"):  # it holds a signalling NaN
        x = tsr.load(path).astype(np.float64)
    fin = x[np.isfinite(x)]
    code, out, _ = run(capsys, "info", "--stats", path)
    assert code == 0
    assert out.splitlines()[-1] == (
        f"  stats: min {fin.min():.8g} max {fin.max():.8g} mean {fin.mean():.8g} "
        f"std {fin.std():.8g}, nan {int(np.isnan(x).sum())}, inf {int(np.isinf(x).sum())}, "
        f"zeros {int((x == 0).sum())}"
    )
    code, out, _ = run(capsys, "info", "--stats", "--json", path)
    rows = json.loads(out)
    row = rows[0] if isinstance(rows, list) else rows
    assert [s["nan"] for s in row["stats"]] == [int(np.isnan(x).sum())] and len(row["tensors"]) == 1
