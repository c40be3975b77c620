"""The torch front end: dtypes, devices, layouts, and that loads are writable copies-on-write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tsr

torch = pytest.importorskip("torch")
import tsr.torch as tt  # noqa: E402

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.mark.parametrize(
    ("dtype", "reserved"),
    [
        (torch.float32, False),
        (torch.int8, False),
        (torch.int32, False),
        (torch.float16, True),
        (torch.bfloat16, True),
        (torch.float64, True),
        (torch.int16, True),
        (torch.uint8, True),
    ],
)
@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip(tmp_path: Path, dtype: Any, reserved: bool, mmap: bool) -> None:
    t = (torch.arange(24) % 7).to(dtype).reshape(2, 3, 4)
    path = tmp_path / "t.tsr"
    tt.save(path, t, reserved_dtypes=reserved)
    out = tt.load(path, mmap=mmap, reserved_dtypes=reserved)
    assert out.dtype == dtype and out.shape == t.shape
    assert torch.equal(out, t)
    if not reserved:
        assert tsr.load(path).tolist() == t.tolist()


def test_loaded_tensor_is_writable_but_file_is_not_changed(tmp_path: Path) -> None:
    path = tmp_path / "t.tsr"
    tt.save(path, torch.zeros(4))
    before = path.read_bytes()
    t = tt.load(path)
    t += 5
    assert t.tolist() == [5.0] * 4
    assert path.read_bytes() == before


def test_non_contiguous_and_grad_tensors(tmp_path: Path) -> None:
    base = torch.arange(20, dtype=torch.float32, requires_grad=True).reshape(4, 5)
    view = base.t()[1:, ::2]
    tt.save(tmp_path / "v.tsr", view)
    assert torch.equal(tt.load(tmp_path / "v.tsr"), view.detach())


def test_reserved_torch_dtype_needs_opt_in(tmp_path: Path) -> None:
    with pytest.raises(tsr.UnsupportedDTypeError, match="reserved_dtypes=True"):
        tt.save(tmp_path / "x.tsr", torch.zeros(2, dtype=torch.bfloat16))
    with pytest.raises(tsr.UnsupportedDTypeError, match="int64"):
        tt.save(tmp_path / "x.tsr", torch.zeros(2, dtype=torch.int64))
    assert not (tmp_path / "x.tsr").exists()


def test_scalar_and_empty(tmp_path: Path) -> None:
    tt.save(tmp_path / "s.tsr", torch.tensor(2.5))
    s = tt.load(tmp_path / "s.tsr")
    assert s.shape == () and s.item() == 2.5
    tt.save(tmp_path / "e.tsr", torch.zeros(0, 3, dtype=torch.int32))
    e = tt.load(tmp_path / "e.tsr")
    assert e.shape == (0, 3) and e.dtype == torch.int32


def test_meta_device_placement_and_cpu_default(tmp_path: Path) -> None:
    tt.save(tmp_path / "x.tsr", torch.ones(3))
    assert tt.load(tmp_path / "x.tsr").device.type == "cpu"
    meta = tt.load(tmp_path / "x.tsr", device="meta")  # placement goes through .to(device)
    assert meta.device.type == "meta" and meta.shape == (3,)


@CUDA
def test_cuda_save_and_load(tmp_path: Path) -> None:
    t = torch.arange(6, dtype=torch.float32, device="cuda").reshape(2, 3)
    tt.save(tmp_path / "c.tsr", t)
    out = tt.load(tmp_path / "c.tsr", device="cuda")
    assert out.device.type == "cuda" and torch.equal(out.cpu(), t.cpu())


def test_errors_match_numpy_front_end(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsr"
    path.write_bytes(b"TSR?" + bytes(60))
    with pytest.raises(tsr.BadMagicError):
        tt.load(path)
    with pytest.raises(tsr.BadMagicError) as np_err:
        tsr.load(path)
    assert np_err.value.field == "magic"
    assert np.array_equal(
        tt.load(Path(__file__).parents[2] / "spec" / "vectors" / "fp32_1d_5.tsr").numpy(),
        tsr.load(Path(__file__).parents[2] / "spec" / "vectors" / "fp32_1d_5.tsr"),
    )
