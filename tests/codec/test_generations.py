"""The generation-neutral API over v1 and TSR3: open, load_all, save(format=), save_all,
read_header, validate; the generation comes from the magic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tsr
from tsr import _formats

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "tests" / "data" / "vectors1" / "fp32_2d_3x4.tsr"
V3 = REPO / "tests" / "data" / "vectors3" / "fp32_r2_3x4_raw.tsr"


def test_registry_detects_each_generation_by_magic() -> None:
    assert _formats.detect(b"TSR!").name == "v1" and _formats.detect(b"TSR3").name == "v3"
    assert _formats.detect(b"nope").name == "v1"  # unknown: judged (and refused) as v1
    assert tsr.read_header(V1).format == "v1" and tsr.read_header(V3).format == "v3"
    with pytest.raises(tsr.BadMagicError):
        tsr.load(REPO / "README.md")


@pytest.mark.parametrize("path", [V1, V3], ids=["v1", "v3"])
def test_open_lists_without_reading_and_reads_by_index(path: Path) -> None:
    with tsr.open(path) as f:
        assert len(f) == 1 and f.format in ("v1", "v3")
        info = f.tensors[0]
        assert info.shape == (3, 4) and info.dtype == "FP32" and info.nbytes == 48
        arr = f[0]
        assert np.array_equal(arr, tsr.load(path)) and [a.shape for a in f] == [(3, 4)]
        with pytest.raises(IndexError):
            f[1]
    with pytest.raises(tsr.BadArgumentError, match="closed"):
        f[0]
    assert arr.sum() == tsr.load(path).sum()  # still valid after close
    assert [a.shape for a in tsr.load_all(path)] == [(3, 4)]


def test_open_reads_no_payload_a_corrupt_payload_fails_only_when_read(tmp_path: Path) -> None:
    data = bytearray(V3.read_bytes())
    data[-1] ^= 0xFF
    path = tmp_path / "bad.tsr"
    path.write_bytes(bytes(data))
    with tsr.open(path) as f:
        assert f.tensors[0].crc32 is not None
        with pytest.raises(tsr.ChecksumError):
            f[0]
    arr = tsr.load(path, verify=False)  # the documented opt-out for RAW maps
    assert arr.tobytes() == bytes(data[256:])
    with pytest.raises(tsr.ChecksumError):
        tsr.load(path, mmap=True)


def test_open_on_an_open_file_leaves_it_open(tmp_path: Path) -> None:
    with open(V3, "rb") as fh:
        with tsr.open(fh) as f:
            assert f[0].shape == (3, 4)
        assert os.fstat(fh.fileno()).st_size == V3.stat().st_size


def test_save_formats_and_save_all(tmp_path: Path) -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    for fmt in ("v1", "v3"):
        tsr.save(tmp_path / f"{fmt}.tsr", a, format=fmt)
        assert tsr.read_header(tmp_path / f"{fmt}.tsr").format == fmt
        tsr.save_all(tmp_path / f"all_{fmt}.tsr", [a], format=fmt)
        one, alls = tmp_path / f"{fmt}.tsr", tmp_path / f"all_{fmt}.tsr"
        assert alls.read_bytes() == one.read_bytes()
        with pytest.raises(tsr.BadArgumentError, match="exactly one tensor"):
            tsr.save_all(tmp_path / "two.tsr", [a, a], format=fmt)
    tsr.save(tmp_path / "again.tsr", tsr.load(V3), format="v3")
    assert (tmp_path / "again.tsr").read_bytes() == V3.read_bytes()
    assert not (tmp_path / "two.tsr").exists()


def test_validate_reports_format_tensors_and_every_cpp_path() -> None:
    r1, r3 = tsr.validate(V1), tsr.validate(V3)
    assert (r1.format, r3.format) == ("v1", "v3")
    assert r1.ok and r3.ok and r1.cpp.accepts and r3.cpp.accepts
    assert [v.path for v in r3.cpp_paths] == ["mmap", "read"]
    d = r3.to_dict()
    assert d["format"] == "v3" and d["tensors"][0]["shape"] == [3, 4]
    assert d["dtype"] == "FP32" and [v["path"] for v in d["cpp_paths"]] == ["mmap", "read"]


def test_load_of_a_multi_tensor_file_names_load_all_and_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generation with several tensors per file (TSR4) through the neutral API: load
    refuses with the way out, open/load_all read each tensor. Shown with a stand-in
    generation that stores two TSR3 RAW blocks behind its own magic."""
    from tsr import _model, v3

    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(4, dtype=np.int8)
    arrays: tuple[npt.NDArray[Any], ...] = (a, b)
    blocks = [tsr._api.encode(x, format="v3") for x in (a, b)]
    data = b"FAKE" + bytes(252) + blocks[0][256:] + blocks[1][256:]

    class Two:
        name = "v4"
        magic = b"FAKE"
        head_size = 4
        multi_tensor = True
        compressions = (None,)

        def parse(self, head: bytes, size: int, read_at: object, **kw: object) -> object:
            infos = []
            offset = 256
            for i, x in enumerate(arrays):
                h = v3.decode(blocks[i])
                infos.append(_model.TensorInfo(i, h.dtype.name, x.shape, offset, x.nbytes,
                                               x.nbytes, None, h.crc32, x.itemsize))  # fmt: skip
                offset += x.nbytes
            return _model.Directory("v4", None, tuple(infos), ())

    monkeypatch.setitem(_formats.BY_MAGIC, b"FAKE", Two())
    path = tmp_path / "two.tsr"
    path.write_bytes(data)
    with pytest.raises(tsr.TSRError, match=r"holds 2 tensors.*tsr\.load_all.*tsr\.open"):
        tsr.load(path)
    got = tsr.load_all(path)
    assert [x.dtype for x in got] == [a.dtype, b.dtype]
    assert np.array_equal(got[0], a) and np.array_equal(got[1], b)
    with tsr.open(path) as f:
        assert len(f) == 2 and f.format == "v4" and np.array_equal(f[1], b)
