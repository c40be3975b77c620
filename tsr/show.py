"""Pictures of tensors (``tsr show``): what people would rather look at than read.

- 1-D: a line plot of value against index (above :data:`MAX_POINTS` elements, the
  minimum and maximum of each of :data:`MAX_POINTS` equal bins, so no spike is lost);
- 2-D: a heat map with a colour bar, its range in the title;
- 3-D and 4-D, image-like: a grid of images, read as NCHW for TSR v1, ``.npy`` and arrays
  and as NHWC for TSR v3/v4 (a 3-D tensor is one sample). One channel: grey images, three:
  colour images (scaled together from the tensor's range); any other count: one grey tile
  per sample and channel. At most :data:`MAX_ROWS` samples and :data:`MAX_COLS` channels
  are drawn.

Leading 1s of the shape are dropped first (a TSR4 ``(1, 1, 8, 16)`` is a heat map).
Non-finite values are masked (drawn in magenta, counted in the title). Big images are
subsampled with a stride before anything is read (said in the title), so a picture of a
big file reads only what it draws. Needs matplotlib (``pip install 'tsr-tensor[show]'``);
it draws with the Agg canvas and touches no global matplotlib state (no pyplot).
"""

from __future__ import annotations

import math
import os
import textwrap
import warnings
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import _io, _tensors
from ._tensors import Input, Tensor
from .errors import BadArgumentError
from .header import DIM_LABELS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["MissingExtraError", "default_output", "figure", "save_picture"]

INSTALL_HINT = "pip install 'tsr-tensor[show]'"
MAX_POINTS = 4096
MAX_SIDE = 512
"""Image sides above this are subsampled with a stride."""
MAX_HEATMAP_SIDE = 1024
MAX_ROWS, MAX_COLS = 8, 16
BAD_COLOUR = "magenta"


class MissingExtraError(ImportError):
    """matplotlib, which pictures need, is not installed."""


def _figure_class() -> type[Figure]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError(f"pictures need matplotlib: {INSTALL_HINT}") from None
    return Figure


def default_output(path: str | os.PathLike[str], index: int | None = None) -> str:
    """``FILE``'s name with ``.png`` (and ``_I`` for ``--index I``), in the current directory."""
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0] or "tensor"
    return f"{stem}{'' if index is None else f'_{index}'}.png"


def save_picture(x: Input, out: str | os.PathLike[str], *, index: int | None = None) -> None:
    """Draw ``x`` (see :func:`figure`) and write it as a PNG to ``out``, atomically."""
    fig = figure(x, index=index)

    def write(fd: int) -> None:
        with os.fdopen(fd, "wb", closefd=False) as f:
            fig.savefig(f, format="png", dpi=100)

    _io.atomic_write(out, write)


def figure(x: Input, *, index: int | None = None) -> Figure:
    """A matplotlib ``Figure`` of ``x`` (a path, array or torch tensor): see the module."""
    figure_class = _figure_class()
    t = _tensors.one_tensor(x, index=index, what="array")
    if t.size == 0:
        raise BadArgumentError(f"{t.name}: nothing to draw: the tensor is empty {t.shape}")
    layout = f", layout {t.layout}" if len(t.shape) > 2 else ""
    title = f"{t.name}\n{t.dtype} {t.shape} [{_labels(t)}]{layout}"
    drawn = _without_leading_ones(t)  # a TSR4 (1, 1, W, C) is drawn as 2-D
    if len(drawn.shape) <= 1:
        return _line(figure_class, drawn, title)
    if len(drawn.shape) == 2:
        return _heatmap(figure_class, drawn, title)
    return _grid(figure_class, drawn, title)


def _without_leading_ones(t: Tensor) -> Tensor:
    shape = t.shape
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return replace(t, data=t.data.reshape(shape)) if shape != t.shape else t


def _labels(t: Tensor) -> str:
    names = "NHWC" if t.layout == "NHWC" else "".join(DIM_LABELS)
    return " ".join(f"{k}={v}" for k, v in zip(names[4 - len(t.shape) :], t.shape, strict=True))


def _values(t: Tensor, raw: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    return _tensors.as_float(np.ascontiguousarray(raw), t.dtype)


def _range_note(v: npt.NDArray[np.float64]) -> tuple[float, float, str]:
    finite = v[np.isfinite(v)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    bad = v.size - finite.size
    note = f"\nrange [{lo:.6g}, {hi:.6g}]"
    if bad:
        note += f", {bad} NaN/inf drawn in {BAD_COLOUR}"
    return lo, hi, note


def _line(figure_class: type[Figure], t: Tensor, title: str) -> Figure:
    fig = figure_class(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    n = t.size
    if n <= MAX_POINTS:
        v = _values(t, t.data.reshape(-1))
        ax.plot(np.arange(n), v, marker="o" if n <= 64 else None, linewidth=1)
        note = _range_note(v)[2]
    else:
        edges, lo_v, hi_v = _envelope(t, MAX_POINTS)
        ax.fill_between(edges, lo_v, hi_v, alpha=0.35, linewidth=0)
        ax.plot(edges, hi_v, edges, lo_v, color="C0", linewidth=0.6)  # spikes stay visible
        note = _range_note(np.concatenate([lo_v, hi_v]))[2]
        note += f", min/max of {MAX_POINTS} bins"
    ax.set_xlabel("index")
    ax.set_ylabel("value")
    ax.xaxis.set_major_locator(_integer_locator())
    ax.grid(True, alpha=0.3)
    ax.set_title(_wrapped(title + note, 8), fontsize=9)
    return fig


def _envelope(
    t: Tensor, bins: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per bin of consecutive elements: its first index, min and max (streamed, NaN-aware)."""
    width = math.ceil(t.size / bins)
    starts = np.arange(0, t.size, width)
    lo = np.full(starts.size, np.nan)
    hi = np.full(starts.size, np.nan)
    flat = t.data.reshape(-1)
    rows = max(1, _tensors.CHUNK_ELEMENTS // width)
    for first in range(0, starts.size, rows):
        last = min(first + rows, starts.size)
        v = _values(t, flat[first * width : min(last * width, t.size)])
        pad = (last - first) * width - v.size
        v = np.concatenate([v, np.full(pad, np.nan)]).reshape(last - first, width)
        with warnings.catch_warnings():  # an all-NaN bin stays NaN, unwarned
            warnings.simplefilter("ignore", RuntimeWarning)
            lo[first:last] = np.nanmin(np.where(np.isfinite(v), v, np.nan), axis=1)
            hi[first:last] = np.nanmax(np.where(np.isfinite(v), v, np.nan), axis=1)
    return starts, lo, hi


def _wrapped(text: str, width_in: float) -> str:
    """``text`` wrapped to a figure ``width_in`` inches wide (9-point type)."""
    chars = max(30, int(width_in * 14))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def _integer_locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _stride(side: int, limit: int) -> int:
    return max(1, math.ceil(side / limit))


def _masked(v: npt.NDArray[np.float64]) -> Any:
    return np.ma.masked_invalid(v)


def _cmap(name: str) -> Any:
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad=BAD_COLOUR)


def _heatmap(figure_class: type[Figure], t: Tensor, title: str) -> Figure:
    h, w = t.shape
    sh, sw = _stride(h, MAX_HEATMAP_SIDE), _stride(w, MAX_HEATMAP_SIDE)
    v = _values(t, t.data[::sh, ::sw])
    lo, hi, note = _range_note(v)
    if sh > 1 or sw > 1:
        note += f", drawn: 1 row in {sh}, 1 column in {sw}"
    aspect = w / h
    width = min(12.0, max(5.0, 2.5 + 4.5 * aspect))
    fig = figure_class(figsize=(width, 5.5), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(
        _masked(v), cmap=_cmap("viridis"), vmin=lo, vmax=hi, interpolation="nearest",
        aspect="auto" if not 0.2 < aspect < 5 else "equal",
        extent=(-0.5, w - 0.5, h - 0.5, -0.5),
    )  # fmt: skip
    rows_label, cols_label = (label.split("=")[0] for label in _labels(t).split())
    ax.set_xlabel(f"{cols_label} (columns, 0 to {w - 1})")
    ax.set_ylabel(f"{rows_label} (rows, 0 to {h - 1})")
    ax.xaxis.set_major_locator(_integer_locator())
    ax.yaxis.set_major_locator(_integer_locator())
    fig.colorbar(image, ax=ax, label=f"value, {lo:.4g} to {hi:.4g}")
    ax.set_title(_wrapped(title + note, width), fontsize=9)
    return fig


def _nchw(t: Tensor) -> npt.NDArray[Any]:
    """The raw data as (N, C, H, W) for drawing (a view; nothing is read)."""
    data = t.data if len(t.shape) == 4 else t.data[np.newaxis]
    return data.transpose(0, 3, 1, 2) if t.layout == "NHWC" else data


def _grid(figure_class: type[Figure], t: Tensor, title: str) -> Figure:
    data = _nchw(t)
    n, c, h, w = data.shape
    s = max(_stride(h, MAX_SIDE), _stride(w, MAX_SIDE))
    colour = c in (1, 3)
    rows_n = min(n, MAX_ROWS * MAX_COLS if colour else MAX_ROWS)
    cols_c = c if colour else min(c, MAX_COLS)
    v = _values(t, data[:rows_n, :cols_c, ::s, ::s])
    lo, hi, note = _range_note(_values(t, data[:, :, ::s, ::s]) if rows_n < n else v)
    if rows_n < n or cols_c < c:
        note += f"; first {rows_n} of {n} samples, {cols_c} of {c} channels"
    if s > 1:
        note += f"; drawn: 1 pixel in {s} per side"
    if colour:
        tiles = [v[i] for i in range(rows_n)]  # (C, H, W) each
        labels = [f"n={i}" for i in range(rows_n)]
        cols = min(rows_n, 8)
    else:
        tiles = [v[i, j][np.newaxis] for i in range(rows_n) for j in range(cols_c)]
        labels = [f"n={i} c={j}" for i in range(rows_n) for j in range(cols_c)]
        cols = cols_c
    rows = math.ceil(len(tiles) / cols)
    side = max(1.0, min(2.2, 14 / max(cols, 1)))
    width = max(6.0, cols * side + 1.5)
    fig = figure_class(figsize=(width, rows * side + 1.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < len(tiles):
            image = _tile(ax, tiles[k], lo, hi, labels[k])
    if c == 3:
        note += ", colour images scaled from that range"
    elif image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="value")
    fig.suptitle(_wrapped(title + note, width), fontsize=9)
    return fig


def _tile(ax: Axes, tile: npt.NDArray[np.float64], lo: float, hi: float, label: str) -> Any:
    ax.set_title(label, fontsize=7)
    if tile.shape[0] == 3:
        span = hi - lo if hi > lo else 1.0
        rgb = np.clip((tile.transpose(1, 2, 0) - lo) / span, 0, 1)
        bad = ~np.isfinite(rgb).all(axis=2)
        rgb = np.nan_to_num(rgb)
        rgb[bad] = (1.0, 0.0, 1.0)  # magenta
        return ax.imshow(rgb, interpolation="nearest")
    return ax.imshow(
        _masked(tile[0]), cmap=_cmap("gray"), vmin=lo, vmax=hi, interpolation="nearest"
    )
