"""The CRC-32 the codec computes is zlib's, whichever library computes it (ISA-L's where
python-isal is installed): the same value for every length and starting value, the split
parallel form included."""

from __future__ import annotations

import builtins
import zlib
from typing import Any

import numpy as np
import pytest

from tsr import _zlib

RNG = np.random.default_rng(32)
SIZES = [0, 1, 3, 7, 8, 15, 16, 63, 64, 255, 1024, 5119, 5120, 65537, (1 << 20) + 13]
STARTS = [0, 1, 0xFFFFFFFF, 0x12345678, 0xDEADBEEF]


@pytest.mark.parametrize("size", SIZES)
def test_the_step_function_is_zlibs_crc32(size: int) -> None:
    data = RNG.integers(0, 256, size, dtype=np.uint8).tobytes()
    for start in STARTS:
        assert _zlib.crc32_step(data, start) == zlib.crc32(data, start)
        assert _zlib.crc32(data, start) == zlib.crc32(data, start)
    half = size // 2
    assert _zlib.crc32_step(data[half:], _zlib.crc32_step(data[:half], 0)) == zlib.crc32(data)


def test_isal_is_used_where_installed_and_zlib_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import isal  # noqa: F401
    except ImportError:
        assert _zlib.CRC_IMPLEMENTATION == "zlib"
    else:
        assert _zlib.CRC_IMPLEMENTATION == "isal"
    real = builtins.__import__

    def no_isal(name: str, *args: Any, **kw: Any) -> Any:
        if name.startswith("isal"):
            raise ImportError(name)
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_isal)
    assert _zlib._fast_crc32() == (zlib.crc32, "zlib")


def test_the_parallel_split_gives_the_same_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_zlib, "PARALLEL_CRC_MIN", 1 << 16)  # split small buffers too
    monkeypatch.setattr(_zlib, "threads", lambda: 3)
    data = RNG.integers(0, 256, (1 << 18) + 5, dtype=np.uint8)
    for start in STARTS:
        assert _zlib.crc32(data, start) == zlib.crc32(data.tobytes(), start)
