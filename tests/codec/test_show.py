"""``tsr show``: what each picture holds (against the data), the PNG, the missing extra."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tsr
from tsr import _tensors
from tsr.cli import main

DATA = Path(__file__).resolve().parents[1] / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def mpl() -> Any:
    return pytest.importorskip("matplotlib")


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def images(fig: Any) -> list[Any]:
    return [im for ax in fig.axes for im in ax.get_images()]


def test_heatmap_has_the_data_a_colour_bar_and_its_range(mpl: Any) -> None:
    from tsr import show

    x = np.arange(12, dtype=np.float32).reshape(3, 4) - 3.5
    x[1, 1] = np.nan
    fig = show.figure(x)
    (im,) = images(fig)
    shown = im.get_array()
    assert np.array_equal(shown.filled(0), np.nan_to_num(x)) and bool(shown.mask[1, 1])
    assert im.get_clim() == (-3.5, 7.5)  # the finite range
    assert len(fig.axes) == 2  # the heat map and its colour bar
    title = fig.axes[0].get_title()
    assert "float32 (3, 4) [H=3 W=4]" in title and "range [-3.5, 7.5]" in title
    assert "1 NaN/inf drawn in magenta" in title


def test_big_heatmap_is_strided(mpl: Any) -> None:
    from tsr import show

    x = np.arange(2100 * 3, dtype=np.float32).reshape(2100, 3)
    fig = show.figure(x)
    (im,) = images(fig)
    assert np.array_equal(im.get_array(), x[::3].astype(np.float64))
    assert "1 row in 3" in fig.axes[0].get_title()


def test_line_plot(mpl: Any) -> None:
    from tsr import show

    x = np.array([3.0, -1.0, 2.5, 0.0], np.float32)
    fig = show.figure(x)
    (line,) = fig.axes[0].get_lines()
    assert np.array_equal(line.get_ydata(), x) and np.array_equal(line.get_xdata(), [0, 1, 2, 3])
    assert "range [-1, 3]" in fig.axes[0].get_title()


def test_long_line_is_a_min_max_envelope(mpl: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tsr import show

    monkeypatch.setattr(_tensors, "CHUNK_ELEMENTS", 1000)  # several chunks of bins
    x = np.random.default_rng(0).standard_normal(40_003).astype(np.float32)
    x[12_345] = 50.0  # one spike survives
    x[20_000] = np.nan
    starts, lo, hi = show._envelope(_tensors.from_array(x), 4096)
    width = 10  # ceil(40003 / 4096)
    assert np.array_equal(starts, np.arange(0, 40_003, width))
    padded = np.concatenate([x.astype(np.float64), np.full(starts.size * width - x.size, np.nan)])
    bins = padded.reshape(-1, width)
    assert np.array_equal(hi, np.nanmax(bins, axis=1)) and np.array_equal(
        lo, np.nanmin(bins, axis=1)
    )
    fig = show.figure(x)
    assert "range [" in fig.axes[0].get_title() and "50]" in fig.axes[0].get_title()


def test_nchw_colour_images(mpl: Any) -> None:
    from tsr import show

    x = np.random.default_rng(1).random((2, 3, 5, 7)).astype(np.float32)
    fig = show.figure(x)
    ims = images(fig)
    assert len(ims) == 2
    lo, hi = float(x.min()), float(x.max())
    for n, im in enumerate(ims):
        want = (x[n].transpose(1, 2, 0).astype(np.float64) - lo) / (hi - lo)
        assert np.allclose(im.get_array(), want, rtol=0, atol=1e-12)
    assert "colour images scaled" in fig.texts[0].get_text()  # the suptitle


def test_nhwc_layout_is_transposed(mpl: Any) -> None:
    from tsr import show

    nchw = np.random.default_rng(2).random((2, 3, 5, 7)).astype(np.float32)
    nhwc = _tensors.Tensor("t", np.ascontiguousarray(nchw.transpose(0, 2, 3, 1)), "float32", "NHWC")
    a, b = images(show.figure(nchw)), images(show.figure(nhwc))
    assert all(np.array_equal(x.get_array(), y.get_array()) for x, y in zip(a, b, strict=True))
    assert "[N=2 H=3 W=5 C=7]" not in show.figure(nhwc).texts[0].get_text()
    assert "[N=2 H=5 W=7 C=3], layout NHWC" in show.figure(nhwc).texts[0].get_text()


def test_tsr3_image_is_nhwc(mpl: Any) -> None:
    """A C++-written TSR3 (1, 28, 28, 1) image: NHWC, one grey 28 x 28 picture."""
    from tsr import show

    path = DATA / "vectors3" / "fp32_img_1x28x28x1_raw.tsr"
    fig = show.figure(path)
    (im,) = images(fig)
    pixels = tsr.load(path)[0, :, :, 0].astype(np.float64)
    assert np.array_equal(im.get_array(), pixels)
    assert "[N=1 H=28 W=28 C=1], layout NHWC" in fig.texts[0].get_text()


def test_leading_ones_are_dropped(mpl: Any) -> None:
    from tsr import show

    x = np.arange(8 * 16, dtype=np.float32).reshape(1, 1, 8, 16)
    fig = show.figure(x)
    (im,) = images(fig)
    assert np.array_equal(im.get_array(), x[0, 0])  # a heat map of (8, 16)
    assert len(fig.axes) == 2 and "(1, 1, 8, 16)" in fig.axes[0].get_title()


def test_channel_grid_shares_one_scale(mpl: Any) -> None:
    from tsr import show

    x = np.arange(2 * 5 * 4 * 4, dtype=np.float32).reshape(2, 5, 4, 4)
    fig = show.figure(x)
    ims = images(fig)
    assert len(ims) == 10  # a grey tile per sample and channel
    assert np.array_equal(ims[7].get_array(), x[1, 2].astype(np.float64))  # n=1 c=2
    assert {im.get_clim() for im in ims} == {(0.0, 159.0)}
    assert fig.axes[7].get_title() == "n=1 c=2"
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)


def test_too_many_samples_are_cut(mpl: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tsr import show

    monkeypatch.setattr(show, "MAX_ROWS", 8)
    monkeypatch.setattr(show, "MAX_COLS", 4)  # (16 by default: a slow test)
    x = np.zeros((20, 40, 2, 2), np.float32)
    x[19, 39] = 7.0  # not drawn, but part of the range
    fig = show.figure(x)
    assert len(images(fig)) == show.MAX_ROWS * show.MAX_COLS
    assert "first 8 of 20 samples, 4 of 40 channels" in fig.texts[0].get_text()
    assert "range [0, 7]" in fig.texts[0].get_text()


def test_cli_writes_png(
    mpl: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib import image

    tsr.save(tmp_path / "x.tsr", np.random.default_rng(3).random((16, 16)).astype(np.float32))
    code, out, err = run(capsys, "show", tmp_path / "x.tsr", "-o", tmp_path / "pic.png")
    assert (code, out, err) == (0, f"{tmp_path / 'pic.png'}\n", "")
    data = (tmp_path / "pic.png").read_bytes()
    assert data.startswith(PNG_MAGIC)
    pixels = image.imread(tmp_path / "pic.png")
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300
    assert len(np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)) > 50  # a real picture
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "show", tmp_path / "x.tsr", "--index", "0")
    assert (code, out) == (0, "x_0.png\n") and (tmp_path / "x_0.png").is_file()
    code, out, _ = run(capsys, "show", tmp_path / "x.tsr")
    assert (code, out) == (0, "x.png\n")


def test_cli_errors_one_line(mpl: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tsr.save(tmp_path / "e.tsr", np.zeros((0, 3), np.float32))
    code, out, err = run(capsys, "show", tmp_path / "e.tsr", "-o", tmp_path / "e.png")
    assert (code, out) == (1, "") and err.count("\n") == 1 and "nothing to draw" in err
    tsr.save(tmp_path / "x.tsr", np.zeros(3, np.float32))
    code, _, err = run(capsys, "show", tmp_path / "x.tsr", "--index", "1", "-o", tmp_path / "p.png")
    assert code == 1 and err.count("\n") == 1 and "index 1 is out of range" in err
    code, _, err = run(capsys, "show", tmp_path / "x.tsr", "-o", tmp_path / "no" / "p.png")
    assert code == 1 and err.count("\n") == 1
    assert not (tmp_path / "e.png").exists()


def test_without_the_extra(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No matplotlib: one line naming the extra, exit 1, nothing written."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    tsr.save(tmp_path / "x.tsr", np.zeros((2, 2), np.float32))
    code, out, err = run(capsys, "show", tmp_path / "x.tsr", "-o", tmp_path / "x.png")
    assert (code, out) == (1, "")
    assert err == "tsr: show: pictures need matplotlib: pip install 'tsr-tensor[show]'\n"
    assert not (tmp_path / "x.png").exists()
