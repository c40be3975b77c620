"""tsr.compare and tsr.stats: every figure against NumPy computed directly on the whole."""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tsr
from tsr import _tensors

F64 = np.float64


def direct(
    a: npt.NDArray[Any], b: npt.NDArray[Any], rtol: float = 1e-5, atol: float = 1e-8,
    equal_nan: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """The figures of tsr.compare, computed here with plain NumPy on whole arrays."""
    fa, fb = a.astype(F64).reshape(a.shape), b.astype(F64).reshape(a.shape)
    bad = ~np.isclose(fa, fb, rtol=rtol, atol=atol, equal_nan=equal_nan)
    nan = np.isnan(fa) | np.isnan(fb)
    inf = (np.isinf(fa) | np.isinf(fb)) & ~nan
    fin = ~(nan | inf)
    with np.errstate(invalid="ignore"):
        diff = np.where(fin, np.abs(fa - fb), -1.0)
    d = diff[fin]
    ref = np.abs(fb[fin])
    worst = np.unravel_index(int(np.argmax(diff)), a.shape) if d.size else None
    return {
        "count": a.size,
        "mismatches": int(bad.sum()),
        "nan_mismatches": int((bad & nan).sum()),
        "inf_mismatches": int((bad & inf).sum()),
        "finite_count": int(fin.sum()),
        "max_abs": float(d.max()) if d.size else 0.0,
        "mean_abs": float(d.mean()) if d.size else 0.0,
        "mse": float(np.mean(d**2)) if d.size else 0.0,
        "max_rel": float((d[ref != 0] / ref[ref != 0]).max()) if (ref != 0).any() else 0.0,
        "worst_index": None if worst is None else tuple(int(i) for i in worst),
        "first": [
            tuple(int(i) for i in np.unravel_index(j, a.shape)) for j in np.flatnonzero(bad)[:10]
        ],
    }


def check(c: tsr.Comparison, want: dict[str, Any]) -> None:
    for key in ("count", "mismatches", "nan_mismatches", "inf_mismatches", "finite_count"):
        assert getattr(c, key) == want[key], key
    assert c.max_abs == want["max_abs"]  # a maximum is exact
    assert c.max_rel == want["max_rel"]
    assert c.mean_abs == pytest.approx(want["mean_abs"], rel=1e-12, abs=0)
    assert c.mse == pytest.approx(want["mse"], rel=1e-12, abs=0)
    assert c.worst_index == want["worst_index"]
    assert [m.index for m in c.first_mismatches] == want["first"]
    assert c.ok == (c.reason is None and want["mismatches"] == 0)


def ulps_by_stepping(x: float, y: float, dtype: type[np.floating[Any]]) -> int:
    """Representable values of ``dtype`` from x to y, counted with nextafter (small gaps)."""
    lo, hi = sorted((dtype(x), dtype(y)))
    steps = 0
    while lo < hi:
        lo = np.nextafter(lo, dtype(np.inf))
        steps += 1
    return steps


def rng_pair(n: int, seed: int = 0) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    g = np.random.default_rng(seed)
    b = g.standard_normal(n).astype(np.float32)
    a = (b + g.standard_normal(n).astype(np.float32) * 1e-6).astype(np.float32)
    return a, b


def test_figures_against_numpy() -> None:
    a, b = rng_pair(5000)
    a, b = a.reshape(50, 100), b.reshape(50, 100)
    c = tsr.compare(a, b)
    check(c, direct(a, b))
    assert c.mismatches > 0 and not c.ok
    assert (c.shape_a, c.dtype_a, c.dtype_b) == ((50, 100), "float32", "float32")
    assert c.worst_a == float(a[c.worst_index]) and c.worst_b == float(b[c.worst_index])
    m = c.first_mismatches[0]
    assert (m.a, m.b) == (float(a[m.index]), float(b[m.index]))
    loose = tsr.compare(a, b, rtol=1e-3, atol=1e-3)
    check(loose, direct(a, b, 1e-3, 1e-3))
    assert loose.ok


def test_identical_is_ok_with_zero_error() -> None:
    a, _ = rng_pair(100)
    c = tsr.compare(a, a.copy())
    assert c.ok and c.max_abs == c.mse == c.mean_abs == 0.0 and c.max_ulp == 0
    assert c.worst_index == (0,)  # the first index of the (zero) maximum


def test_max_ulp_same_dtype() -> None:
    one = np.float32(1.0)
    up3 = np.nextafter(np.nextafter(np.nextafter(one, np.float32(2)), np.float32(2)), np.float32(2))
    down2 = np.nextafter(np.nextafter(one, np.float32(0)), np.float32(0))  # across a binade
    a = np.array([up3, down2, 5.0], np.float32)
    b = np.array([one, one, 5.0], np.float32)
    c = tsr.compare(a, b)
    assert c.max_ulp == 3 == ulps_by_stepping(float(up3), 1.0, np.float32)
    assert ulps_by_stepping(float(down2), 1.0, np.float32) == 2


def test_signed_zeros_and_subnormals() -> None:
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    a = np.array([-0.0, 0.0, -tiny, 1.0], np.float32)
    b = np.array([0.0, -0.0, tiny, 1.0], np.float32)
    c = tsr.compare(a, b, atol=0.0, rtol=0.0)
    check(c, direct(a, b, 0.0, 0.0))
    # -0 and +0 are one point: error 0, ULP 0; -tiny to +tiny is two steps (through 0)
    assert c.mismatches == 1 and c.first_mismatches[0].index == (2,)
    assert c.max_ulp == 2 == ulps_by_stepping(float(-tiny), float(tiny), np.float32)
    assert (
        tsr.compare(
            np.array([-0.0], np.float32), np.array([0.0], np.float32), atol=0, rtol=0
        ).max_ulp
        == 0
    )


def test_nan_and_inf_counted_apart() -> None:
    nan, inf = np.nan, np.inf
    a = np.array([nan, nan, 1.0, inf, inf, -inf, inf, nan, 2.0, 3.0], np.float32)
    b = np.array([nan, 1.0, nan, inf, -inf, 5.0, nan, -inf, 2.5, 3.0], np.float32)
    c = tsr.compare(a, b)
    want = direct(a, b)
    check(c, want)
    # mismatching: [1] [2] [6] [7] with a NaN; [4] [5] infinite; [8] finite
    assert (c.mismatches, c.nan_mismatches, c.inf_mismatches) == (
        7,
        4,
        2,
    )
    assert c.finite_count == 2 and c.max_abs == 0.5 and c.worst_index == (8,)
    strict = tsr.compare(a, b, equal_nan=False)
    check(strict, direct(a, b, equal_nan=False))
    assert (strict.mismatches, strict.nan_mismatches) == (8, 5)


def test_only_non_finite_pairs() -> None:
    a = np.array([np.nan, np.inf], np.float32)
    c = tsr.compare(a, a.copy())
    assert c.ok and c.finite_count == 0 and c.worst_index is None and c.max_abs == 0.0


def test_fp16_against_fp32_in_float64() -> None:
    _, b = rng_pair(3000, seed=3)
    a = b.astype(np.float16)
    c = tsr.compare(a, b)
    check(c, direct(a, b))
    assert (c.dtype_a, c.dtype_b) == ("float16", "float32")
    assert c.max_abs > 0 and c.max_abs == float(np.max(np.abs(a.astype(F64) - b.astype(F64))))
    # ULPs are float32's (the common type, which holds both exactly): check the worst one
    ulps = [
        ulps_by_stepping(float(x), float(y), np.float32)
        for x, y in zip(a[:40], b[:40], strict=True)
    ]
    assert tsr.compare(a[:40], b[:40]).max_ulp == max(ulps)
    assert 1000 < max(ulps) < 8192 * 2  # half an FP16 ULP is up to 4096 float32 ULPs


def test_bf16_against_fp32(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import tsr.torch

    ref = torch.randn(97, generator=torch.Generator().manual_seed(0))
    low = ref.to(torch.bfloat16)
    path = tmp_path / "bf16.tsr"
    tsr.torch.save(path, low, reserved_dtypes=True)
    widened = low.float().numpy()
    for a in (path, low):
        c = tsr.compare(a, ref)
        check(c, direct(widened, ref.numpy()))
        assert c.dtype_a == "bfloat16" and c.max_ulp is not None and c.max_ulp > 0
    # BF16 against FP16: neither holds the other, so ULPs are float32's; in [1, 2] a
    # float32 step is 2**-23, so the distance is |x - y| * 2**23
    unit = ref.abs().numpy() % 1 + 1
    bf, half = torch.from_numpy(unit).to(torch.bfloat16), unit.astype(np.float16)
    gaps = np.abs(bf.float().numpy().astype(F64) - half.astype(F64)) * 2**23
    assert tsr.compare(bf, half).max_ulp == int(gaps.max()) > 0


def test_integers_compare_without_ulps() -> None:
    a = np.array([[1, 2], [3, -128]], np.int8)
    b = np.array([[1, 2], [4, 100]], np.int32)
    c = tsr.compare(a, b)
    check(c, direct(a, b))
    assert c.max_ulp is None and c.max_abs == 228.0 and c.worst_index == (1, 1)
    assert tsr.compare(a, b.astype(np.float32)).max_ulp is None


def test_shape_mismatch_is_not_ok() -> None:
    c = tsr.compare(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))
    assert not c.ok and not c.comparable and c.count == 0
    assert c.reason == "shapes (2, 3) and (3, 2) differ (beyond leading 1s)"
    assert "DIFFERENT" in c.summary() and "(2, 3)" in c.summary()
    # same element count, one extra trailing 1: still a different shape
    assert not tsr.compare(np.zeros((8, 16, 1)), np.zeros((8, 16))).comparable


def test_leading_ones_compare() -> None:
    a, b = rng_pair(128, seed=5)
    a4, b2 = a.reshape(1, 1, 8, 16), b.reshape(8, 16)
    c = tsr.compare(a4, b2)
    check(c, direct(a4, b2))
    assert c.comparable and c.shape_a == (1, 1, 8, 16) and c.shape_b == (8, 16)
    assert c.worst_index is not None and len(c.worst_index) == 4  # in a's shape
    assert c.worst_a == float(a4[c.worst_index])
    rev = tsr.compare(b2, a4)
    assert rev.comparable and rev.worst_index is not None and len(rev.worst_index) == 2
    assert tsr.compare(np.float32(2.0), np.array([[2.0]], np.float32)).ok  # scalar against (1, 1)


def test_files_any_mix(tmp_path: Path) -> None:
    a, b = rng_pair(600, seed=7)
    a, b = a.reshape(20, 30), b.reshape(1, 20, 30)
    tsr.save(tmp_path / "a.tsr", a)
    np.save(tmp_path / "b.npy", b)
    want = direct(a, b)
    check(tsr.compare(tmp_path / "a.tsr", tmp_path / "b.npy"), want)
    check(tsr.compare(str(tmp_path / "a.tsr"), b), want)
    np.save(tmp_path / "f.npy", np.asfortranarray(a))  # a Fortran-order .npy: same values
    check(tsr.compare(tmp_path / "f.npy", b), want)


def test_cpp_vector_against_pytorch(vectors_dir: Path) -> None:
    """A file written by the C++ framework against the same tensor computed by PyTorch."""
    torch = pytest.importorskip("torch")
    expected = (torch.arange(12, dtype=torch.float32) * 0.5 - 3.25).reshape(3, 4)
    c = tsr.compare(vectors_dir / "fp32_2d_3x4.tsr", expected)
    assert c.ok and c.count == 12 and c.max_ulp == 0
    off = expected.clone()
    off[2, 1] += 1e-3
    c = tsr.compare(vectors_dir / "fp32_2d_3x4.tsr", off)
    assert not c.ok and c.mismatches == 1 and c.worst_index == (2, 1)
    assert c.max_abs == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.parametrize("n", [10_007, 1000, 999, 1])
def test_chunked_stream_equals_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    """A file larger than the chunk gives exactly the figures of NumPy on the whole."""
    monkeypatch.setattr(_tensors, "CHUNK_ELEMENTS", 1000)
    a, b = rng_pair(n, seed=n)
    if n > 1000:
        a[[3, 4500, 9999]] = [np.nan, np.inf, -np.inf]
        b[[3, 6000]] = [np.nan, np.nan]
        a[7777] += 0.5  # the worst element, in a late chunk
        a[7778] = a[7777] + (b[7778] - b[7777])  # a tie after it: the first one counts
    tsr.save(tmp_path / "a.tsr", a)
    tsr.save(tmp_path / "b.tsr", b)
    c = tsr.compare(tmp_path / "a.tsr", tmp_path / "b.tsr")
    check(c, direct(a, b))
    if n > 1000:
        assert c.worst_index == (7777,)
        assert (c.nan_mismatches, c.inf_mismatches) == (1, 2)  # [3] is NaN against NaN


def test_memory_is_a_chunk_not_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Comparing two 8 MiB files allocates a few chunks, not a copy of either."""
    monkeypatch.setattr(_tensors, "CHUNK_ELEMENTS", 1 << 14)
    n = 1 << 21
    a = np.arange(n, dtype=np.float32)
    b = a.copy()
    b[-1] = -5.0
    tsr.save(tmp_path / "a.tsr", a)
    np.save(tmp_path / "b.npy", b)
    del a, b
    tracemalloc.start()
    try:
        c = tsr.compare(tmp_path / "a.tsr", tmp_path / "b.npy")
        s = tsr.stats(tmp_path / "b.npy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert c.mismatches == 1 and c.worst_index == (n - 1,) and s.max == n - 2
    half_a_file = n * 4 // 2  # (it was 1.6 MB; a float64 copy of one input is 16 MiB)
    assert peak < half_a_file, f"peak {peak} B; one input file's payload is {n * 4} B"


def test_torch_tensors_and_lists() -> None:
    torch = pytest.importorskip("torch")
    a, b = rng_pair(64, seed=11)
    want = direct(a, b)
    check(tsr.compare(torch.from_numpy(a), torch.from_numpy(b)), want)
    check(tsr.compare(torch.from_numpy(a).reshape(8, 8).t().contiguous().t(), b.reshape(8, 8)),
          direct(a.reshape(8, 8), b.reshape(8, 8)))  # fmt: skip
    check(tsr.compare(a.tolist(), b), direct(np.asarray(a.tolist()), b))


def test_non_contiguous_array() -> None:
    a, b = rng_pair(400, seed=13)
    at = a.reshape(20, 20).T  # a view in Fortran order
    bt = np.ascontiguousarray(b.reshape(20, 20).T)
    check(tsr.compare(at, bt), direct(np.ascontiguousarray(at), bt))


def test_bad_arguments() -> None:
    with pytest.raises(tsr.BadArgumentError, match="complex"):
        tsr.compare(np.zeros(3, np.complex64), np.zeros(3))
    with pytest.raises(ValueError, match="rtol and atol"):
        tsr.compare(np.zeros(3), np.zeros(3), rtol=-1)
    with pytest.raises(FileNotFoundError):
        tsr.compare("/nonexistent/x.tsr", np.zeros(3))


def test_empty_tensors() -> None:
    c = tsr.compare(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32))
    assert c.ok and c.count == 0 and c.worst_index is None


def test_to_dict_and_summary_are_plain() -> None:
    a = np.array([1.0, np.nan, 3.0], np.float32)
    b = np.array([1.0, 2.0, 3.5], np.float32)
    c = tsr.compare(a, b)
    d = c.to_dict()
    assert d["ok"] is False and d["worst_index"] == (2,)
    assert d["first_mismatches"][0]["index"] == (1,)
    line = c.summary()
    assert line.startswith("DIFFERENT, (3,) float32 vs (3,) float32, max_abs 0.5")
    assert "mismatches 2/3 (nan 1, inf 0), worst [2] 3 vs 3.5" in line
    assert all(" " <= ch <= "~" and ch not in '"\\' for ch in line)


# ----------------------------------------------------------------------------- stats


def direct_stats(x: npt.NDArray[Any]) -> dict[str, Any]:
    f = x.astype(F64).reshape(-1)
    fin = f[np.isfinite(f)]
    return {
        "count": f.size, "finite": fin.size, "nan": int(np.isnan(f).sum()),
        "inf": int(np.isinf(f).sum()), "zeros": int((f == 0).sum()),
        "min": float(fin.min()), "max": float(fin.max()), "mean": float(fin.mean()),
        "std": float(fin.std()),
    }  # fmt: skip


@pytest.mark.parametrize("chunk", [1 << 18, 1000, 7])
def test_stats_against_numpy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(_tensors, "CHUNK_ELEMENTS", chunk)
    g = np.random.default_rng(1)
    x = (g.standard_normal((30, 101)) * 3 + 1e4).astype(np.float32)  # a big mean: stability
    x[0, :5] = [np.nan, np.inf, -np.inf, 0.0, -0.0]
    x[29, 100] = np.nan
    tsr.save(tmp_path / "x.tsr", x)
    s = tsr.stats(tmp_path / "x.tsr")
    want = direct_stats(x)
    got = s.to_dict()
    for key in ("count", "finite", "nan", "inf", "zeros", "min", "max"):
        assert got[key] == want[key], key
    assert s.mean == pytest.approx(want["mean"], rel=1e-12)
    assert s.std == pytest.approx(want["std"], rel=1e-9)
    assert (s.nan, s.inf, s.zeros) == (2, 2, 2)


def test_stats_fp16_int_and_empty() -> None:
    x = np.array([1.5, -2.0, 0.0, 65504.0], np.float16)
    s = tsr.stats(x)
    assert (s.min, s.max, s.zeros) == (-2.0, 65504.0, 1)
    assert s.mean == pytest.approx(float(x.astype(F64).mean()), rel=1e-15)
    i = tsr.stats(np.array([[-128, 127], [0, 5]], np.int8))
    assert (i.min, i.max, i.zeros, i.mean) == (-128.0, 127.0, 1, 1.0)
    assert i.std == pytest.approx(float(np.std([-128, 127, 0, 5])), rel=1e-15)
    e = tsr.stats(np.zeros((0,), np.float32))
    assert e.count == 0 and e.min is None and e.std is None
    only_nan = tsr.stats(np.array([np.nan], np.float32))
    assert only_nan.nan == 1 and only_nan.mean is None and not math.isnan(only_nan.nan)
