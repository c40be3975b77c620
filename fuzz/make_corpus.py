"""Write the committed seed corpus of the reader harness, with tsr itself.

Usage: ``.venv/bin/python -m fuzz.make_corpus [--check]``. Reader seeds are the shared valid
vectors (the same formulas as ``tests/data/vectors1/manifest.json``, the repository's copy
of the shared vectors; their bytes are checked against those files), small files of the
reserved dtypes and zero-size shapes, and mutations of ``fp32_2d_3x4`` like the shared
malformed set plus a few wrap-around and range edge cases. Worker seeds
(:func:`worker_corpus`) are requests of every command with valid inputs and bad requests and
files of every kind. ``--check`` verifies ``fuzz/corpus/reader`` and ``fuzz/corpus/worker``
hold exactly these files and exits 1 if not.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import tsr

HERE = Path(__file__).resolve().parent
READER_DIR = HERE / "corpus" / "reader"
WORKER_DIR = HERE / "corpus" / "worker"
SHARED_VECTORS = HERE.parent / "tests" / "data" / "vectors1"  # the copy of ../shared/vectors
LAYOUT = struct.Struct("<4siiiii4iqqq")

WRAP_NEGATIVE_TOTAL = (2743, 5295463, 952469857, 1)
"""ndim 1: the product is 3 * 2**62 + 1, so total_elements wraps to -(2**62) + 1 and
64 + 4 * total_elements wraps to 68: C++ reads a (1,) FP32 tensor from a 68-byte file."""
WRAP_NUMEL_OVER_TOTAL = (27905, 34724, 49477, 384773)
"""ndim 4: the product is 2**64 + 4, so total_elements wraps to 4: C++ accepts an 80-byte
file and builds a tensor of this shape over 16 bytes of storage."""


def _fp32(shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n, dtype=np.float32)
    return (i * np.float32(0.5) - np.float32(3.25)).astype(np.float32).reshape(shape)


def _ints(shape: tuple[int, ...], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n, dtype=np.int64)
    return ((i * 7 % 23) - 11).astype(dtype).reshape(shape)


def valid_vectors() -> dict[str, bytes]:
    """The nine valid shared vectors, written by tsr."""
    out = {
        "fp32_0d_scalar.tsr": tsr.to_bytes(_fp32(())),
        "fp32_1d_5.tsr": tsr.to_bytes(_fp32((5,))),
        "fp32_2d_3x4.tsr": tsr.to_bytes(_fp32((3, 4))),
        "fp32_3d_2x3x4.tsr": tsr.to_bytes(_fp32((2, 3, 4))),
        "fp32_4d_2x3x4x5.tsr": tsr.to_bytes(_fp32((2, 3, 4, 5))),
        "int8_2d_3x4.tsr": tsr.to_bytes(_ints((3, 4), np.int8)),
        "int8_4d_2x3x4x5.tsr": tsr.to_bytes(_ints((2, 3, 4, 5), np.int8)),
        "int32_2d_3x4.tsr": tsr.to_bytes(_ints((3, 4), np.int32)),
        "int32_3d_2x3x4.tsr": tsr.to_bytes(_ints((2, 3, 4), np.int32)),
    }
    return out


def other_valid() -> dict[str, bytes]:
    """Reserved dtypes (opt-in), zero-size shapes, non-finite floats."""
    base = np.arange(6).reshape(2, 3)
    out = {
        f"reserved_{name}_2x3.tsr": tsr.to_bytes(base.astype(name), reserved_dtypes=True)
        for name in ("float16", "float64", "int16", "uint8")
    }
    out["zero_fp32_0.tsr"] = tsr.to_bytes(np.zeros((0,), np.float32))
    out["zero_int8_2x0x3.tsr"] = tsr.to_bytes(np.zeros((2, 0, 3), np.int8))
    out["fp32_nonfinite_4.tsr"] = tsr.to_bytes(np.array([np.nan, np.inf, -np.inf, -0.0], "<f4"))
    try:
        import torch

        import tsr.torch as tsr_torch
    except ImportError:
        return out
    bf16 = HERE / "corpus-work" / "bf16.tmp"
    bf16.parent.mkdir(parents=True, exist_ok=True)
    tsr_torch.save(bf16, torch.arange(6.0).reshape(2, 3).bfloat16(), reserved_dtypes=True)
    out["reserved_bfloat16_2x3.tsr"] = bf16.read_bytes()
    bf16.unlink()
    return out


def _patch(base: bytes, fmt: str, offset: int, value: int | bytes) -> bytes:
    raw = bytearray(base)
    struct.pack_into(fmt, raw, offset, value)
    return bytes(raw)


def _header(code: int, ndim: int, dims: tuple[int, int, int, int], total: int) -> bytes:
    return LAYOUT.pack(b"TSR!", 1, 64, 0, code, ndim, *dims, total, 0, 0)


def mutations(base: bytes) -> dict[str, bytes]:
    """Broken variants of one valid file (``fp32_2d_3x4``)."""
    m = 2**31 - 1
    big = base + base[64:]
    leading = _patch(_patch(big, "<i", 24, 2), "<q", 40, 24)
    return {
        "bad_magic.tsr": _patch(base, "4s", 0, b"TSR?"),
        "version_2.tsr": _patch(base, "<i", 4, 2),
        "header_size_128.tsr": _patch(base, "<i", 8, 128),
        "reserved_1_7.tsr": _patch(base, "<i", 12, 7),
        "dtype_9.tsr": _patch(base, "<i", 16, 9),
        "dtype_0.tsr": _patch(base, "<i", 16, 0),
        "ndim_5.tsr": _patch(base, "<i", 20, 5),
        "ndim_minus1.tsr": _patch(base, "<i", 20, -1),
        "ndim2_leading_dim_2.tsr": leading,
        "negative_dim.tsr": _patch(base, "<i", 32, -3),
        "count_mismatch_13.tsr": _patch(base, "<q", 40, 13),
        "reserved_3_1.tsr": _patch(base, "<q", 56, 1),
        "truncated_payload_4.tsr": base[:-4],
        "trailing_1_byte.tsr": base + b"\0",
        "truncated_header_40.tsr": base[:40],
        "header_only.tsr": base[:64],
        "wrap_65536x4_total0.tsr": _header(1, 4, (65536,) * 4, 0),
        "huge_total_small_file.tsr": _header(1, 4, (m, m, m, m), m**4 % (1 << 63)),
        "zero_dim_huge_others.tsr": _header(1, 3, (1, 0, m, m), 0),
        # C++ accepts these two through int64 wrap-around (see tests/robustness):
        "cpp_wrap_negative_total.tsr": _header(1, 1, WRAP_NEGATIVE_TOTAL, -(2**62) + 1)
        + base[64:68],
        "cpp_wrap_numel_over_total.tsr": _header(1, 4, WRAP_NUMEL_OVER_TOTAL, 4) + base[64:80],
    }


def _req(cmd: str, params: str | None = None) -> bytes:
    body = f'{{"cmd": "{cmd}"' + ("" if params is None else f', "params": "{params}"') + "}"
    return body.encode()


def worker_corpus() -> dict[str, bytes]:
    """Seeds of the worker harness: every command with valid inputs, and bad requests
    and bad files of every kind (encoded with ``fuzz.worker_harness.encode``)."""
    from fuzz.worker_harness import Case, Entry, encode

    def f32(*shape: int) -> bytes:
        return tsr.to_bytes(_fp32(shape))

    def case(request: bytes, *files: tuple[str, str, bytes]) -> bytes:
        return encode(Case(request, tuple(Entry(k, t.encode(), c) for k, t, c in files)))

    a, b = f32(4, 3), f32(3, 5)
    img, w3 = f32(1, 2, 6, 6), f32(3, 2, 3, 3)
    big_header = _header(1, 4, (1000, 1000, 1000, 25), 25 * 10**9)  # 100 GB declared
    seeds = {
        "hello.bin": case(_req("hello", "world")),
        "hi_upper.bin": case(_req("HI", "there")),
        "legacy_text.bin": case(b"hello big world"),
        "legacy_matmul.bin": case(b"matmul a b", ("file", "a", a), ("file", "b", b)),
        "matmul.bin": case(_req("matmul", "a,b"), ("file", "a", a), ("file", "b", b)),
        "add_broadcast.bin": case(_req("add", "a,b"), ("file", "a", a), ("file", "b", f32(3))),
        "relu_int8.bin": case(
            _req("relu", "x"), ("file", "x", tsr.to_bytes(_ints((2, 3), np.int8)))
        ),
        "sqrt_int32.bin": case(
            _req("sqrt", "x"), ("file", "x", tsr.to_bytes(_ints((5,), np.int32)))
        ),
        "transpose.bin": case(_req("transpose", "x"), ("file", "x", a)),
        "conv.bin": case(_req("conv_k3_s1_p0", "x,w"), ("file", "x", img), ("file", "w", w3)),
        "tconv.bin": case(
            _req("tconv_k3_s2_p1", "x,w"), ("file", "x", f32(1, 3, 4, 4)), ("file", "w", w3)
        ),
        "tensor_square.bin": case(_req("tensor_square"), ("file", "input", a)),
        "same_tag_twice.bin": case(_req("add", "a,a"), ("file", "a", a)),
        "exit.bin": case(_req("exit")),
        "missing_input.bin": case(_req("relu", "nothere")),
        "wrong_count.bin": case(_req("matmul", "a"), ("file", "a", a)),
        "bad_tag_parent.bin": case(_req("relu", "../x")),
        "bad_tag_hidden.bin": case(_req("relu", ".x"), ("file", ".x", a)),
        "symlink_out.bin": case(_req("relu", "s"), ("link_out", "s", b"")),
        "symlink_in.bin": case(_req("relu", "s"), ("file", "a", a), ("link_in", "s", b"")),
        "fifo.bin": case(_req("relu", "p"), ("fifo", "p", b"")),
        "directory.bin": case(_req("relu", "d"), ("dir", "d", b"")),
        "garbage.bin": case(b'{"cmd": "matmul", "par'),
        "empty.bin": case(b""),
        "not_utf8.bin": case(b'{"cmd": "hello", "params": "\xff\xfe"}'),
        "raw_not_utf8.bin": case(b"\xff\xfe\x00garbage"),
        "json_array.bin": case(b'["hello"]'),
        "cmd_number.bin": case(b'{"cmd": 5}'),
        "params_number.bin": case(b'{"cmd": "hello", "params": 7}'),
        "deep_json.bin": case(b"[" * 5000),
        "params_too_long.bin": case(_req("hello", "x" * 300)),
        "request_too_large.bin": case(_req("hello", "y" * 2100)),
        "unknown_cmd.bin": case(_req("frobnicate", "a")),
        "unsafe_reply.bin": case(_req("hello", 'say \\"hi\\"')),
        "unicode_reply.bin": case('{"cmd": "hello", "params": "w\u00f6rld"}'.encode()),
        "truncated_input.bin": case(_req("relu", "a"), ("file", "a", a[:-4])),
        "trailing_input.bin": case(_req("relu", "a"), ("file", "a", a + b"\0")),
        "garbage_input.bin": case(_req("relu", "a"), ("file", "a", b"not a tensor at all")),
        "reserved_dtype_input.bin": case(
            _req("relu", "a"),
            ("file", "a", tsr.to_bytes(np.ones(3, np.float64), reserved_dtypes=True)),
        ),
        "declares_100GB.bin": case(_req("relu", "a"), ("file", "a", big_header)),
        "input_over_limit.bin": case(_req("relu", "a"), ("file", "a", f32(5, 1000))),
        "zero_size_input.bin": case(_req("relu", "a"), ("file", "a", f32(0, 3))),
        "zero_size_huge_dims.bin": case(
            _req("relu", "a"), ("file", "a", _header(1, 3, (1, 0, 2**31 - 1, 2**31 - 1), 0))
        ),
        "matmul_bad_shapes.bin": case(_req("matmul", "a,b"), ("file", "a", a), ("file", "b", a)),
    }
    return seeds


def corpus() -> dict[str, bytes]:
    """Every seed of the reader corpus, by file name."""
    valid = valid_vectors()
    return {**valid, **other_valid(), **mutations(valid["fp32_2d_3x4.tsr"])}


def check_shared(valid: dict[str, bytes]) -> list[str]:
    """Differences between our valid seeds and the shared vectors (if present)."""
    problems = []
    for name, data in valid.items():
        shared = SHARED_VECTORS / name
        if shared.is_file() and shared.read_bytes() != data:
            problems.append(f"{name}: differs from {shared}")
    return problems


def main(argv: list[str]) -> int:
    problems = check_shared(valid_vectors())
    for directory, files in ((READER_DIR, corpus()), (WORKER_DIR, worker_corpus())):
        if "--check" in argv:
            present = {p.name: p.read_bytes() for p in directory.glob("*")}
            if present != files:
                problems.append(
                    f"{directory} is stale: missing {sorted(set(files) - set(present))}, "
                    f"extra {sorted(set(present) - set(files))}, changed "
                    f"{sorted(k for k in files if k in present and present[k] != files[k])}"
                )
            continue
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*"):
            if old.name not in files:
                old.unlink()
        for name, data in files.items():
            (directory / name).write_bytes(data)
        digest = hashlib.sha256(b"".join(files[k] for k in sorted(files))).hexdigest()[:16]
        print(f"wrote {len(files)} seeds to {directory} (digest {digest})")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
