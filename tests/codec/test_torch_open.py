"""``tsr.torch.open``: the context manager of ``tsr.open`` with torch tensors from ``f[i]``
(``device=`` as the other tsr.torch functions), and ``tsr.torch.load_all`` through it."""

from __future__ import annotations

from pathlib import Path

import pytest

import tsr

torch = pytest.importorskip("torch")
import tsr.torch as tt  # noqa: E402

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
DATA = Path(__file__).resolve().parents[1] / "data"
MULTI = sorted(DATA.glob("vectors4/multi*.tsr"))


@pytest.mark.parametrize("path", MULTI, ids=lambda p: p.name)
@pytest.mark.parametrize("mmap", [True, False])
def test_open_gives_the_numpy_tensors_as_torch(path: Path, mmap: bool) -> None:
    with tsr.open(path) as ref, tt.open(path, mmap=mmap) as f:
        assert isinstance(f, tt.TorchFile) and len(f) == len(ref) > 1
        assert (f.format, f.header, f.tensors, f.warnings) == (
            ref.format, ref.header, ref.tensors, ref.warnings
        )  # fmt: skip
        for i in range(len(f)):
            t = f[i]
            assert isinstance(t, torch.Tensor) and t.device.type == "cpu"
            assert t.numpy().dtype == ref[i].dtype and t.shape == ref[i].shape
            assert t.numpy().tobytes() == ref[i].tobytes()  # NaN payloads too
        assert [x.shape for x in f] == [tuple(info.shape) for info in f.tensors]
        every = f.read_all()
        assert [t.numpy().tobytes() for t in every] == [ref[i].tobytes() for i in range(len(f))]
        assert repr(f).startswith("<tsr.torch.TorchFile ")
    with pytest.raises(tsr.BadArgumentError, match="closed"):
        f[0]
    got = tt.load_all(path, mmap=mmap)
    assert [t.numpy().tobytes() for t in got] == [a.tobytes() for a in tsr.load_all(path)]


def test_raw_tensors_are_writable_copy_on_write_maps(tmp_path: Path) -> None:
    path = tmp_path / "m.tsr"
    tt.save_all(path, [torch.arange(6, dtype=torch.int32), torch.ones(2, 2)], format="v4")
    before = path.read_bytes()
    with tt.open(path) as f:
        t = f[0]
        t += 1  # no read-only warning, no change to the file
        assert t.flatten().tolist() == [1, 2, 3, 4, 5, 6]
    assert path.read_bytes() == before


def test_bf16_and_every_generation(tmp_path: Path) -> None:
    b = torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16)
    tt.save(tmp_path / "b.tsr", b, format="v3", compression="zlib")
    with tt.open(tmp_path / "b.tsr") as f:
        assert f.format == "v3" and f[0].dtype == torch.bfloat16 and torch.equal(f[0], b)
    tt.save(tmp_path / "one.tsr", torch.ones(3))
    with tt.open(tmp_path / "one.tsr") as f:
        assert f.format == "v1" and len(f) == 1 and torch.equal(f[0], torch.ones(3))


def test_device_and_errors(tmp_path: Path) -> None:
    tt.save_all(tmp_path / "m.tsr", [torch.ones(3), torch.zeros(2)], format="v4")
    with tt.open(tmp_path / "m.tsr", device="meta") as f:
        assert f[1].device.type == "meta" and f[1].shape == (1, 1, 1, 2)
    (tmp_path / "bad.tsr").write_bytes(b"TSR4" + bytes(200))
    with pytest.raises(tsr.TSRError) as info:
        tt.open(tmp_path / "bad.tsr")
    with pytest.raises(type(info.value)):
        tsr.open(tmp_path / "bad.tsr")


@CUDA
def test_cuda_open(tmp_path: Path) -> None:
    tt.save_all(tmp_path / "m.tsr", [torch.ones(3), torch.arange(4, dtype=torch.int8)])
    with tt.open(tmp_path / "m.tsr", device="cuda") as f:
        assert all(t.device.type == "cuda" for t in f)
        assert torch.equal(f[1].cpu().flatten(), torch.arange(4, dtype=torch.int8))
