"""The shared zlib helper: byte-exact compression, bounded inflation, CRC, parallel maps."""

from __future__ import annotations

import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsr import _zlib
from tsr.errors import CompressionError

from .conftest import VECTORS4, manifest4


def _zlib_payloads() -> list[tuple[str, bytes, bytes]]:
    """(file, uncompressed tensor bytes, stored payload) of every C++-written ZLIB tensor."""
    out = []
    raw_files = {e["file"]: e for e in manifest4() if e["mode"] == "RAW"}
    for entry in manifest4():
        if entry["mode"] != "ZLIB":
            continue
        blob = (VECTORS4 / entry["file"]).read_bytes()
        raw = (VECTORS4 / entry["file"].replace("_zlib", "_raw")).read_bytes()
        raw_entry = raw_files[entry["file"].replace("_zlib", "_raw")]
        for t, r in zip(entry["tensors"], raw_entry["tensors"], strict=True):
            data = raw[r["data_offset"] : r["data_offset"] + r["nbytes"]]
            out.append(
                (entry["file"], data, blob[t["data_offset"] : t["data_offset"] + t["payload_size"]])
            )
    return out


def test_compress_is_byte_exact_with_the_cpp_writer() -> None:
    payloads = _zlib_payloads()
    assert len(payloads) >= 28
    for name, data, stored in payloads:
        c = _zlib.compress(data)
        assert c.data == stored, name
        assert c.crc32 == zlib.crc32(data)
        got = _zlib.inflate(stored, len(data))
        assert got.data.tobytes() == data and got.crc32 == zlib.crc32(data) and got.trailing == 0


def test_crc32_in_chunks_equals_zlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_zlib, "CRC_CHUNK", 7)
    data = np.arange(1000, dtype="<f2")
    assert _zlib.crc32(data) == zlib.crc32(data.tobytes())
    assert _zlib.crc32(b"") == 0
    assert _zlib.crc32(b"abc", _zlib.crc32(b"xy")) == zlib.crc32(b"xyabc")


def test_a_zlib_bomb_stops_at_the_declared_size() -> None:
    bomb = zlib.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in ~65 KB
    tracemalloc.start()
    try:
        with pytest.raises(CompressionError) as info:
            _zlib.inflate(bomb, 1000, what="tensor 0")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.found == "too_long" and "tensor 0" in info.value.message
    assert peak < 2 * _zlib.IN_STEP + (1 << 20)  # never near the 64 MiB the stream holds


def test_nbytes_past_the_deflate_ratio_is_refused_before_allocating() -> None:
    zeros = bytes(16 << 20)
    for level in (1, 6, 9):
        c = zlib.compress(zeros, level)
        assert len(zeros) <= _zlib.max_inflated_size(len(c))  # the bound is real
    payload = zlib.compress(b"x" * 100)
    with pytest.raises(CompressionError) as info:
        _zlib.inflate(payload, 1 << 62)
    assert info.value.found == "ratio" and "1032:1" in info.value.message
    with pytest.raises(CompressionError) as info:
        _zlib.inflate(payload, _zlib.max_inflated_size(len(payload)))
    assert info.value.found == "too_short"


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda p: b"\x00" + p[1:], "corrupt"),
        (lambda p: p[:-5], "truncated"),
        (lambda p: p[:2], "truncated"),
        (lambda p: b"", "ratio"),
        (lambda p: zlib.compress(b"y" * 99, 6), "too_short"),
        (lambda p: zlib.compress(b"y" * 104, 6), "too_long"),
        (lambda p: _raw_deflate(bytes(range(100))), "corrupt"),
    ],
)
def test_broken_streams_are_named(mutate: object, problem: str) -> None:
    payload = zlib.compress(bytes(range(100)), 6)
    bad = mutate(payload)  # type: ignore[operator]
    with pytest.raises(CompressionError) as info:
        _zlib.inflate(bad, 100, what="tensor 2")
    assert info.value.found == problem
    assert info.value.message.startswith("tensor 2: ")


def test_junk_after_the_stream_is_counted_not_refused() -> None:
    data = bytes(range(200))
    got = _zlib.inflate(zlib.compress(data, 6) + b"JUNKJUNK", 200)
    assert got.data.tobytes() == data and got.trailing == 8


def test_stored_streams_inflate() -> None:
    data = bytes(range(256)) * 10
    assert _zlib.inflate(zlib.compress(data, 0), len(data)).data.tobytes() == data


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=5000),
    repeat=st.integers(1, 50),
    in_step=st.integers(1, 300),
    out_step=st.integers(1, 300),
    level=st.integers(0, 9),
)
def test_inflate_in_tiny_steps_round_trips(
    data: bytes, repeat: int, in_step: int, out_step: int, level: int
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_zlib, "IN_STEP", in_step)
        mp.setattr(_zlib, "OUT_STEP", out_step)
        block = data * repeat
        payload = zlib.compress(block, level)
        got = _zlib.inflate(payload, len(block))
        assert got.data.tobytes() == block and got.crc32 == zlib.crc32(block)
        if block:
            with pytest.raises(CompressionError) as info:
                _zlib.inflate(payload, len(block) - 1)
            assert info.value.found == "too_long"


def test_parallel_maps_equal_the_sequential_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_zlib, "PARALLEL_MIN_BYTES", 0)
    rng = np.random.default_rng(1)
    blocks = [rng.integers(0, 8, size=n, dtype=np.uint8) for n in (0, 1, 5000, 300_000, 77)]
    seq = [_zlib.compress(b) for b in blocks]
    par = _zlib.compress_many(blocks, workers=3)
    assert par == seq
    jobs = [
        (c.data, b.nbytes, f"tensor {i}") for i, (c, b) in enumerate(zip(seq, blocks, strict=True))
    ]
    back = _zlib.inflate_many(jobs, workers=3)
    assert [x.data.tobytes() for x in back] == [b.tobytes() for b in blocks]
    assert [x.crc32 for x in back] == [c.crc32 for c in seq]
    # two broken blocks: the error is the first one's, whichever thread finishes first
    jobs[1] = (b"\x00" * 9, 1, "tensor 1")
    jobs[3] = (jobs[3][0][:50], jobs[3][1], "tensor 3")
    with pytest.raises(CompressionError) as info:
        _zlib.inflate_many(jobs, workers=3)
    assert info.value.message.startswith("tensor 1: ")


@settings(max_examples=80, deadline=None)
@given(a=st.binary(max_size=3000), b=st.binary(max_size=3000), seed=st.integers(0, 2**32 - 1))
def test_crc32_combine_equals_the_crc_of_the_concatenation(a: bytes, b: bytes, seed: int) -> None:
    joined = _zlib.crc32_combine(zlib.crc32(a, seed), zlib.crc32(b), len(b))
    assert joined == zlib.crc32(a + b, seed)


def test_parallel_crc32_equals_zlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_zlib, "PARALLEL_CRC_MIN", 1000)
    monkeypatch.setattr(_zlib, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(_zlib, "threads", lambda: 3)
    data = np.random.default_rng(3).integers(0, 255, size=100_001, dtype=np.uint8)
    assert _zlib.crc32(data) == zlib.crc32(data.tobytes())
    assert _zlib.crc32(data, 12345) == zlib.crc32(data.tobytes(), 12345)
    assert _zlib.crc32(data[:1500]) == zlib.crc32(data[:1500].tobytes())
