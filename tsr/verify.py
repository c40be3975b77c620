"""Verification: compare a tensor with a reference, and summarise one tensor.

:func:`compare` answers "does my C++ result match PyTorch's?" with the figures people
compute by hand (max and mean absolute error, MSE, relative error, ULPs, the worst
element) and NumPy's ``isclose`` verdict; :func:`stats` gives a tensor's range, mean,
spread and special values. Both take paths (TSR files, ``.npy``), arrays or torch
tensors, compute in float64, and stream: a file is memory-mapped and reduced chunk by
chunk, so memory stays at a few chunks (:data:`tsr._tensors.CHUNK_ELEMENTS` elements)
whatever the file's size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _tensors
from ._tensors import Input, Tensor

__all__ = ["Comparison", "Mismatch", "Stats", "compare", "stats"]


@dataclass(frozen=True)
class Mismatch:
    """One element that fails the tolerance: its index in ``a``'s shape and both values."""

    index: tuple[int, ...]
    a: float
    b: float


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare` (``b`` is the reference).

    Tolerance: an element matches when NumPy's ``isclose`` says so, that is
    ``|a - b| <= atol + rtol * |b|``, infinities match only the same infinity, and with
    ``equal_nan`` NaN matches NaN. ``mismatches`` counts the elements that do not;
    ``nan_mismatches`` those among them where either value is NaN, ``inf_mismatches``
    those where either value is infinite and neither is NaN (so the rest,
    ``mismatches - nan_mismatches - inf_mismatches``, are finite pairs out of tolerance).
    +0.0 and -0.0 are equal (error 0, ULP distance 0).

    Error figures (``max_abs``, ``mean_abs``, ``mse``, ``max_rel``, ``max_ulp``,
    ``worst_*``) are taken over the *finite pairs*, the elements where both values are
    finite (``finite_count`` of them): a NaN or an infinity has no error size, and is
    counted above instead. They are computed in float64 from the exact values (FP16 and
    BF16 widen exactly). With no finite pair they are 0 and ``worst_index`` is ``None``.

    - ``max_abs``: the largest ``|a - b|``; ``worst_index`` is the first index (C order,
      in ``a``'s shape) where it occurs, ``worst_a`` and ``worst_b`` the values there.
    - ``mean_abs``, ``mse``: the mean of ``|a - b|`` and of ``(a - b)**2``.
    - ``max_rel``: the largest ``|a - b| / |b|`` over finite pairs with ``b != 0``
      (0 if there is none; a non-zero ``a`` against ``b == 0`` shows in ``max_abs``).
    - ``max_ulp``: when both inputs are floating point, the largest distance in units in
      the last place, counted in the *common type* of the two (the narrowest IEEE type
      that holds every value of both exactly: the wider of the two, float32 for FP16
      against BF16), so no value is rounded: the number of representable values of that
      type from ``a`` to ``b``, with +0.0 and -0.0 one point. (One FP16 ULP near 1.0 is
      8192 float32 ULPs: an FP16 result against a float32 reference shows large counts.)
      ``None`` when either input is an integer type.

    Shapes: ``a`` and ``b`` compare element by element when their shapes are equal once
    leading 1s are dropped (a ``(1, 1, 8, 16)`` TSR4 tensor against PyTorch's ``(8, 16)``).
    Otherwise nothing is compared, ``reason`` says why, the counts and figures are 0, and
    ``ok`` is false.
    """

    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    dtype_a: str
    dtype_b: str
    count: int
    """Elements compared (0 when the shapes are not comparable)."""
    mismatches: int
    nan_mismatches: int
    inf_mismatches: int
    finite_count: int
    max_abs: float
    mean_abs: float
    mse: float
    max_rel: float
    max_ulp: int | None
    worst_index: tuple[int, ...] | None
    worst_a: float | None
    worst_b: float | None
    first_mismatches: tuple[Mismatch, ...]
    """The first mismatching elements in C order (as many as ``compare``'s ``listed``)."""
    rtol: float
    atol: float
    equal_nan: bool
    reason: str | None = None
    """Why the tensors were not compared (shapes), else ``None``."""

    @property
    def comparable(self) -> bool:
        return self.reason is None

    @property
    def ok(self) -> bool:
        """Comparable shapes and no element out of tolerance."""
        return self.reason is None and self.mismatches == 0

    def summary(self) -> str:
        """One line of printable ASCII (no quotes or backslashes): the verdict (``ok`` or
        ``DIFFERENT``), shapes and dtypes, the error figures, the mismatches, the worst
        element (when an error is not 0). ``tsr compare`` prints it; the worker's
        ``compare`` command replies it."""
        verdict = "ok" if self.ok else "DIFFERENT"
        head = f"{verdict}, {self.shape_a} {self.dtype_a} vs {self.shape_b} {self.dtype_b}"
        if self.reason is not None:
            return f"{head}: {self.reason}"
        ulp = "" if self.max_ulp is None else f" max_ulp {self.max_ulp}"
        special = (
            f" (nan {self.nan_mismatches}, inf {self.inf_mismatches})" if self.mismatches else ""
        )
        worst = ""
        if self.worst_index is not None and self.max_abs > 0:
            worst = f", worst {list(self.worst_index)} {self.worst_a:.8g} vs {self.worst_b:.8g}"
        return (
            f"{head}, max_abs {self.max_abs:.3g} mean_abs {self.mean_abs:.3g} mse {self.mse:.3g}"
            f" max_rel {self.max_rel:.3g}{ulp}, mismatches {self.mismatches}/{self.count}"
            f"{special}{worst}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (tuples as lists, ``ok`` included)."""
        d = asdict(self)
        d["ok"] = self.ok
        return d


def _leading_ones_dropped(shape: tuple[int, ...]) -> tuple[int, ...]:
    i = 0
    while i < len(shape) and shape[i] == 1:
        i += 1
    return shape[i:]


def _ulp_type(ta: Tensor, tb: Tensor) -> np.dtype[Any] | None:
    if not (ta.is_float and tb.is_float):
        return None
    kinds = {ta.dtype, tb.dtype}
    if _tensors.BFLOAT16 in kinds:
        # BF16 fits exactly in float32 and wider; with FP16 too, the common type is float32
        wider = [np.dtype(k) for k in kinds if k != _tensors.BFLOAT16]
        return max([np.dtype(np.float32), *wider], key=lambda d: d.itemsize)
    return np.promote_types(ta.data.dtype, tb.data.dtype).newbyteorder("=")


_INT_OF = {2: np.int16, 4: np.int32, 8: np.int64}


def _ordered(values: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """Float values as integers in the same order, one apart per representable value,
    +0.0 and -0.0 both 0 (sign and magnitude folded onto one line)."""
    bits = values.view(_INT_OF[values.dtype.itemsize]).astype(np.int64)
    magnitude = bits & np.int64((1 << (8 * values.dtype.itemsize - 1)) - 1)
    return np.where(bits < 0, -magnitude, magnitude)


def _ulp_distance(ka: npt.NDArray[np.int64], kb: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    ua, ub = ka.view(np.uint64), kb.view(np.uint64)
    # the true |ka - kb| can exceed int64 for float64; unsigned wrap-around gives it exactly
    return np.where(ka >= kb, ua - ub, ub - ua)


def _raw_pairs(ta: Tensor, tb: Tensor) -> Any:
    return zip(_tensors.chunks(ta), _tensors.chunks(tb), strict=True)


def compare(
    a: Input,
    b: Input,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    equal_nan: bool = True,
    listed: int = 10,
) -> Comparison:
    """Compare ``a`` with the reference ``b``, element by element (see :class:`Comparison`).

    ``a`` and ``b`` are paths (a TSR file holding one tensor, or ``.npy``), NumPy arrays
    or torch tensors, of any real dtype. ``listed`` bounds ``first_mismatches``.
    Files are memory-mapped and reduced chunk by chunk. Raises :class:`tsr.TSRError` for
    a bad file or an unsupported dtype; ``OSError`` passes through.
    """
    if rtol < 0 or atol < 0 or math.isnan(rtol) or math.isnan(atol):
        raise ValueError(f"rtol and atol must be >= 0, got rtol={rtol}, atol={atol}")
    ta = _tensors.one_tensor(a, what="a")
    tb = _tensors.one_tensor(b, what="b")
    head: dict[str, Any] = {
        "shape_a": ta.shape,
        "shape_b": tb.shape,
        "dtype_a": ta.dtype,
        "dtype_b": tb.dtype,
    }
    tol: dict[str, Any] = {"rtol": float(rtol), "atol": float(atol), "equal_nan": bool(equal_nan)}
    if _leading_ones_dropped(ta.shape) != _leading_ones_dropped(tb.shape):
        return Comparison(
            **head, count=0, mismatches=0, nan_mismatches=0, inf_mismatches=0,
            finite_count=0, max_abs=0.0, mean_abs=0.0, mse=0.0, max_rel=0.0, max_ulp=None,
            worst_index=None, worst_a=None, worst_b=None, first_mismatches=(), **tol,
            reason=f"shapes {ta.shape} and {tb.shape} differ (beyond leading 1s)",
        )  # fmt: skip
    acc = _Accumulator(ta, tb, rtol=rtol, atol=atol, equal_nan=equal_nan, listed=listed)
    for raw_a, raw_b in _raw_pairs(ta, tb):
        acc.add(raw_a, raw_b)
    return acc.result(head, tol)


class _Accumulator:
    """The running figures of one comparison, fed chunk by chunk in C order."""

    def __init__(
        self, ta: Tensor, tb: Tensor, *, rtol: float, atol: float, equal_nan: bool, listed: int
    ) -> None:
        self.ta, self.tb = ta, tb
        self.rtol, self.atol, self.equal_nan, self.listed = rtol, atol, equal_nan, listed
        self.ulp_type = _ulp_type(ta, tb)
        self.offset = 0
        self.mismatches = self.nan_mismatches = self.inf_mismatches = self.finite = 0
        self.sum_abs = self.sum_sq = 0.0
        self.max_abs, self.max_rel, self.max_ulp = -1.0, 0.0, 0
        self.worst: tuple[int, float, float] | None = None
        self.first: list[Mismatch] = []

    def add(self, raw_a: npt.NDArray[Any], raw_b: npt.NDArray[Any]) -> None:
        fa = _tensors.as_float(raw_a, self.ta.dtype)
        fb = _tensors.as_float(raw_b, self.tb.dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            bad = ~np.isclose(fa, fb, rtol=self.rtol, atol=self.atol, equal_nan=self.equal_nan)
            nan = np.isnan(fa) | np.isnan(fb)
            inf = (np.isinf(fa) | np.isinf(fb)) & ~nan
            finite = ~(nan | inf)
            diff = np.abs(fa - fb)
        self.mismatches += int(np.count_nonzero(bad))
        self.nan_mismatches += int(np.count_nonzero(bad & nan))
        self.inf_mismatches += int(np.count_nonzero(bad & inf))
        if len(self.first) < self.listed and self.mismatches:
            for j in np.flatnonzero(bad)[: self.listed - len(self.first)]:
                index = self._index(self.offset + int(j))
                self.first.append(Mismatch(index, float(fa[j]), float(fb[j])))
        if finite.any():
            self._add_errors(raw_a, raw_b, fa, fb, np.where(finite, diff, -1.0))
        self.offset += fa.size

    def _add_errors(
        self,
        raw_a: npt.NDArray[Any],
        raw_b: npt.NDArray[Any],
        fa: npt.NDArray[np.float64],
        fb: npt.NDArray[np.float64],
        diff: npt.NDArray[np.float64],
    ) -> None:
        """Fold in the finite pairs of a chunk: ``diff`` is ``|a - b|`` there, -1 elsewhere."""
        finite = diff >= 0
        self.finite += int(np.count_nonzero(finite))
        d = diff[finite]
        self.sum_abs += float(d.sum())
        self.sum_sq += float(np.square(d).sum())
        j = int(np.argmax(diff))
        if diff[j] > self.max_abs:
            self.max_abs = float(diff[j])
            self.worst = (self.offset + j, float(fa[j]), float(fb[j]))
        ref = np.abs(fb[finite])
        nonzero = ref != 0
        if nonzero.any():
            self.max_rel = max(self.max_rel, float((d[nonzero] / ref[nonzero]).max()))
        if self.ulp_type is not None and diff[j] > 0:  # equal values are 0 ULPs apart
            differ = diff > 0  # (finite pairs only: the others are -1)
            ka = _ordered(_tensors.as_float(raw_a[differ], self.ta.dtype, self.ulp_type))
            kb = _ordered(_tensors.as_float(raw_b[differ], self.tb.dtype, self.ulp_type))
            self.max_ulp = max(self.max_ulp, int(_ulp_distance(ka, kb).max()))

    def _index(self, flat: int) -> tuple[int, ...]:
        return tuple(int(i) for i in np.unravel_index(flat, self.ta.shape))

    def result(self, head: dict[str, Any], tol: dict[str, Any]) -> Comparison:
        n = self.finite
        worst = self.worst
        return Comparison(
            **head,
            count=self.offset,
            mismatches=self.mismatches,
            nan_mismatches=self.nan_mismatches,
            inf_mismatches=self.inf_mismatches,
            finite_count=n,
            max_abs=self.max_abs if n else 0.0,
            mean_abs=self.sum_abs / n if n else 0.0,
            mse=self.sum_sq / n if n else 0.0,
            max_rel=self.max_rel,
            max_ulp=self.max_ulp if self.ulp_type is not None else None,
            worst_index=self._index(worst[0]) if worst else None,
            worst_a=worst[1] if worst else None,
            worst_b=worst[2] if worst else None,
            first_mismatches=tuple(self.first),
            **tol,
        )


@dataclass(frozen=True)
class Stats:
    """The result of :func:`stats`: a tensor's summary, computed in float64.

    ``min``, ``max``, ``mean`` and ``std`` (population, ``ddof=0``) are over the finite
    values (NaN and infinities are counted apart, in ``nan`` and ``inf``); with no finite
    value they are ``None``. ``zeros`` counts +0.0 and -0.0.
    """

    count: int
    finite: int
    nan: int
    inf: int
    zeros: int
    min: float | None
    max: float | None
    mean: float | None
    std: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stats(x: Input, *, index: int | None = None) -> Stats:
    """Summarise ``x`` (a path, array or torch tensor; ``index`` picks one tensor of a file
    that holds several): see :class:`Stats`. Streams a file chunk by chunk."""
    t = _tensors.one_tensor(x, index=index)
    n = nan = inf = zeros = 0
    lo, hi, mean, m2 = math.inf, -math.inf, 0.0, 0.0
    for f in _tensors.floats(t):
        nan_mask = np.isnan(f)
        inf_mask = np.isinf(f)
        nan += int(np.count_nonzero(nan_mask))
        inf += int(np.count_nonzero(inf_mask))
        zeros += int(np.count_nonzero(f == 0))
        v = f[~(nan_mask | inf_mask)]
        if not v.size:
            continue
        lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
        # Chan et al.: merge this chunk's count, mean and sum of squared deviations
        k, cmean = v.size, float(v.mean())
        cm2 = float(np.square(v - cmean).sum())
        total = n + k
        delta = cmean - mean
        mean += delta * k / total
        m2 += cm2 + delta * delta * n * k / total
        n = total
    return Stats(
        count=t.size,
        finite=n,
        nan=nan,
        inf=inf,
        zeros=zeros,
        min=lo if n else None,
        max=hi if n else None,
        mean=mean if n else None,
        std=math.sqrt(m2 / n) if n else None,
    )
