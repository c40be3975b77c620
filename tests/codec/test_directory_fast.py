"""TSR4's fast directory path (one NumPy pass over the whole directory, TensorInfo built
straight from the bytes) gives exactly what the entry-by-entry path gives, and passes only
directories in which that path finds nothing."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

import tsr
from tsr import v4
from tsr._model import Compression, Directory, ReadAt

DATA = Path(__file__).resolve().parents[1] / "data"

VECTORS4 = DATA / "vectors4"
FIELDS = [f for f in v4.ENTRY_LAYOUT.fields if f.kind != "bytes"]
EDGES = [0, 1, 2, 255, 256, 257, 2**31 - 1, 2**31, 2**32, 2**32 - 1, 2**62, 2**63 - 1,
         2**63, 2**64 - 1, -1, -(2**31)]  # fmt: skip


def _reader(blob: bytes) -> ReadAt:
    return lambda o, n: blob[o : o + n]


def _directory(blob: bytes, *, fast: bool, monkeypatch: pytest.MonkeyPatch) -> Directory:
    with monkeypatch.context() as m:
        if not fast:
            m.setattr(v4, "writer_exact", lambda *a: False)
        return v4.GENERATION.parse(blob[:128], len(blob), _reader(blob))


def _exact(blob: bytes) -> bool:
    h = v4.decode_header(blob[:128])
    return v4.writer_exact(h, blob[128 : 128 + 64 * h.tensor_count], len(blob))


@pytest.mark.parametrize("path", sorted(VECTORS4.glob("*.tsr")), ids=lambda p: p.name)
def test_cpp_written_files_give_the_same_directory(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = path.read_bytes()
    fast = _directory(blob, fast=True, monkeypatch=monkeypatch)
    assert fast == _directory(blob, fast=False, monkeypatch=monkeypatch)
    h = v4.decode_header(blob[:128])
    entries = v4.decode_directory(blob[128 : 128 + 64 * h.tensor_count], h.tensor_count)
    if _exact(blob):
        assert v4.directory_problems(h, entries, len(blob)) == []


def test_files_this_library_writes_take_the_fast_path() -> None:
    arrays = [np.arange(i + 1, dtype=dt) for i, dt in enumerate(["<f4", "<f2", "i1", "<i4"] * 3)]
    compressions: list[Compression] = [None, "zlib"]
    for compression in compressions:
        blob = v4.to_bytes(arrays, compression)
        assert _exact(blob)
        info = v4.GENERATION.parse(blob[:128], len(blob), _reader(blob)).tensors
        assert [t.shape for t in info] == [(1, 1, 1, len(a)) for a in arrays]


def _set(blob: bytearray, index: int, name: str, value: int, slot: int = 0) -> None:
    f = v4.ENTRY_LAYOUT.by_name[name]
    at = 128 + 64 * index + v4.ENTRY_LAYOUT.offset_of(name, slot)
    width = f.size // f.count
    blob[at : at + width] = (value % (1 << 8 * width)).to_bytes(width, "little")


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_mutated_directories_agree_with_the_entry_by_entry_path(
    compression: Compression, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Soundness: whatever the fast check passes, the slow rules find nothing in; and the
    Directory (tensors and problems) is the same either way."""
    arrays = [np.arange(40, dtype="<f4").reshape(2, 20), np.ones((3, 3), "i1"),
              np.zeros(300, "<f2")]  # fmt: skip
    good = v4.to_bytes(arrays, compression)
    rng = random.Random(9)
    passed = 0
    for _ in range(600):
        blob = bytearray(good)
        for _ in range(rng.choice([1, 1, 2])):
            f = rng.choice(FIELDS)
            i = rng.randrange(3)
            slot = rng.randrange(f.count)
            old = int.from_bytes(blob[128 + 64 * i + f.offset + slot * (f.size // f.count):][
                : f.size // f.count], "little")  # fmt: skip
            value = rng.choice([*EDGES, old + 1, old - 1, old + 256, old * 2])
            _set(blob, i, f.name, value, slot)
        data = bytes(blob)
        if _exact(data):
            passed += 1
            h = v4.decode_header(data[:128])
            assert v4.directory_problems(h, v4.decode_directory(data[128:320], 3), len(data)) == []
        assert _directory(data, fast=True, monkeypatch=monkeypatch) == _directory(
            data, fast=False, monkeypatch=monkeypatch
        )
    assert passed  # some mutations keep the file exact (e.g. a crc or a value rewritten)


def test_a_shape_whose_product_wraps_is_not_taken_for_exact(tmp_path: Path) -> None:
    """(2**16)**4 is 2**64, 0 modulo 2**64: with numel, nbytes and payload_size 0 every
    wrapped equation would hold."""
    blob = bytearray(v4.to_bytes([np.zeros(1, "<f4")]))
    for d in range(4):
        _set(blob, 0, "shape", 1 << 16, d)
    for name in ("numel", "nbytes", "payload_size", "row_stride"):
        _set(blob, 0, name, 0)
    data = bytes(blob[:256])
    assert not _exact(data)
    (tmp_path / "wrap.tsr").write_bytes(data)
    with pytest.raises(tsr.BadFieldError, match="overflows"):
        tsr.load_all(tmp_path / "wrap.tsr", strict=False)
