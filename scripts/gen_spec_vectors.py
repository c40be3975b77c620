"""Generate spec/vectors/ (test vectors of spec/tsr-v1.md) and their index.

    python scripts/gen_spec_vectors.py          # (re)write spec/vectors and the spec's table
    python scripts/gen_spec_vectors.py --check  # exit 1 if anything on disk differs

Valid vectors are written with ``tsr``; malformed ones are hand-made mutations. The index
records, for each file, its SHA-256 and either its values or the error a strict reader
raises, with the C++ reader's verdict.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import tsr
from tsr import _schema, header
from tsr.validate import validate_bytes

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "spec" / "vectors"
SPEC = ROOT / "spec" / "tsr-v1.md"
BEGIN, END = "<!-- vectors:begin -->", "<!-- vectors:end -->"


@dataclass(frozen=True)
class Vector:
    name: str
    about: str
    data: bytes


def f32_bits(*bits: int) -> npt.NDArray[np.float32]:
    return np.array(bits, dtype="<u4").view("<f4")


def _valid() -> list[tuple[str, str, npt.NDArray[Any]]]:
    ramp = np.arange(24, dtype=np.float32) * np.float32(0.5) - np.float32(3.25)
    specials = f32_bits(
        0x7FC00000, 0x7FC00001, 0xFFC00000, 0x7F800001,  # NaN: quiet, payload, negative, signalling
        0x80000000, 0x7F800000, 0xFF800000, 0x00000001,  # -0.0, inf, -inf, smallest subnormal
        0x7F7FFFFF, 0xFF7FFFFF, 0x3F800000, 0x00000000,  # max, lowest, 1.0, +0.0
    )  # fmt: skip
    return [
        ("fp32_scalar", "FP32 scalar -3.25 (ndim 0, dims 1,1,1,1)", np.array(-3.25, np.float32)),
        ("fp32_1d_5", "FP32 (5,) ramp", ramp[:5].copy()),
        ("fp32_2d_3x4_specials", "FP32 (3,4): NaNs with payloads, -0.0, inf, subnormal, max",
         specials.reshape(3, 4)),
        ("fp32_3d_2x3x4", "FP32 (2,3,4) ramp", ramp.reshape(2, 3, 4)),
        ("fp32_4d_2x1x1x3", "FP32 (2,1,1,3): rank 4 with unit dims", ramp[:6].reshape(2, 1, 1, 3)),
        ("int8_2d_3x4", "INT8 (3,4) with -128 and 127",
         np.array([-128, -1, 0, 1, 127, 5, -5, 64, -64, 2, -2, 100], np.int8).reshape(3, 4)),
        ("int32_3d_2x3x4", "INT32 (2,3,4) with INT32_MIN and INT32_MAX",
         np.concatenate([[np.iinfo(np.int32).min, np.iinfo(np.int32).max],
                         np.arange(22) * 7 - 70]).astype(np.int32).reshape(2, 3, 4)),
        ("fp32_empty_0x3", "FP32 (0,3): zero-size dim, header only (C++ cannot read it)",
         np.zeros((0, 3), np.float32)),
        ("int8_empty_4d", "INT8 (2,0,1,1): zero-size dim at rank 4 (C++ cannot read it)",
         np.zeros((2, 0, 1, 1), np.int8)),
        ("fp16_3_reserved", "FP16 (3,), reserved code 4", np.array([1.0, -2.5, np.inf], "<f2")),
        ("fp64_2_reserved", "FP64 (2,), reserved code 6", np.array([np.pi, -0.0], "<f8")),
        ("int16_3_reserved", "INT16 (3,), reserved code 7", np.array([-32768, 0, 32767], "<i2")),
        ("uint8_4_reserved", "UINT8 (4,), reserved code 8", np.array([0, 1, 128, 255], "u1")),
    ]  # fmt: skip


def _mutate(base: bytes, payload: bytes | None = None, **fields: Any) -> bytes:
    values = _schema.unpack(base)
    values.update(fields)
    return _schema.pack(values) + (base[64:] if payload is None else payload)


def vectors() -> list[Vector]:
    out = []
    for name, about, arr in _valid():
        out.append(Vector(name, about, tsr.to_bytes(arr, reserved_dtypes=True)))
    bf16_bits = np.array([0x3F80, 0xC000, 0x7FC0], "<u2")  # 1.0, -2.0, NaN
    out.append(Vector("bf16_3_reserved", "BF16 (3,) 1.0, -2.0, NaN; reserved code 5",
                      header.encode((3,), tsr.BF16) + bf16_bits.tobytes()))  # fmt: skip
    base = out[2].data  # fp32 (3,4)
    body = base[64:]
    bad = [
        ("bad_magic", "magic `TSR?`", b"TSR?" + base[4:]),
        ("version_2", "version 2", _mutate(base, version=2)),
        ("dtype_0", "dtype 0 (UNKNOWN)", _mutate(base, dtype=0)),
        ("dtype_9", "dtype 9 (undefined)", _mutate(base, dtype=9)),
        ("ndim_5", "ndim 5", _mutate(base, ndim=5)),
        ("negative_dim", "dims 1,1,-3,4 total -12: C++ passes the count check, fails on the dim",
         _mutate(base, dims=(1, 1, -3, 4), total_elements=-12)),
        ("count_mismatch", "total_elements 13 for dims 1,1,3,4", _mutate(base, total_elements=13)),
        ("count_wraps_int64", "dims 65536×4, total 0: passes C++'s wrapping count check",
         _mutate(base, b"", ndim=4, dims=(65536,) * 4, total_elements=0)),
        ("cpp_wrap_negative_total", "dims 2743,5295463,952469857,1 (product wraps to -2^62+1), "
         "ndim 1, 68 bytes: C++ accepts a (1,) tensor", _mutate(
             base, body[:4], ndim=1, dims=(2743, 5295463, 952469857, 1),
             total_elements=-(2**62) + 1)),
        ("cpp_shape_too_large", "dims 2147418113,429509837,5,1 (product wraps to 2^62+1), "
         "ndim 4, 68 bytes: passes every C++ header check, then Shape refuses the dims",
         _mutate(base, body[:4], ndim=4, dims=(2147418113, 429509837, 5, 1),
                 total_elements=2**62 + 1)),
        ("negative_dims_first_named", "dims 1,1,-2,-5 total 10: C++ names index 2, not the "
         "smallest", _mutate(base, body[:40], dims=(1, 1, -2, -5), total_elements=10)),
        ("leading_dim_2", "ndim 2, dims 2,1,3,4, total 24: C++ reads a (3,4) tensor",
         _mutate(base, body + body, dims=(2, 1, 3, 4), total_elements=24)),
        ("ndim_0_dims_3x4", "ndim 0 with dims 1,1,3,4: C++ reads a scalar", _mutate(base, ndim=0)),
        ("header_size_128", "header_size 128 (data still at 64): lenient readers accept",
         _mutate(base, header_size=128)),
        ("reserved_nonzero", "reserved_2 = 1: lenient readers accept", _mutate(base, reserved_2=1)),
        ("truncated_header", "40 bytes", base[:40]),
        ("truncated_payload", "payload 4 bytes short", base[:-4]),
        ("trailing_byte", "one byte after the payload", base + b"\0"),
    ]  # fmt: skip
    out.extend(Vector(n, a, d) for n, a, d in bad)
    return out


def describe(v: Vector) -> dict[str, Any]:
    report = validate_bytes(v.data)
    entry: dict[str, Any] = {
        "file": f"{v.name}.tsr",
        "about": v.about,
        "size": len(v.data),
        "sha256": hashlib.sha256(v.data).hexdigest(),
        "valid": report.ok,
    }
    if report.ok and v.data[16] == tsr.BF16.code:  # NumPy has no bfloat16: record the bits
        h = header.decode_raw(v.data)
        bits = np.frombuffer(v.data, "<u2", offset=64).tolist()
        entry.update(dtype="BF16", shape=list(h.shape), bits_hex=[f"{b:04x}" for b in bits])
    else:
        _add_content(entry, v.data)
    entry["warnings"] = [f.field for f in report.warnings]
    entry["cpp"] = {
        "accepts": report.cpp.accepts,
        "check": report.cpp.check,
        "shape": list(report.cpp.shape) if report.cpp.shape is not None else None,
        "different_tensor": report.cpp.different_tensor,
    }
    return entry


def _add_content(entry: dict[str, Any], data: bytes) -> None:
    try:
        arr = tsr.from_bytes(data, reserved_dtypes=True)
    except tsr.TSRError as exc:
        entry["error"] = {"class": type(exc).__name__, "field": exc.field, "offset": exc.offset}
    else:
        h = header.decode_raw(data)
        entry.update(dtype=h.dtype.name, shape=list(arr.shape))
        flat = arr.reshape(-1)
        if h.dtype is tsr.FP32:
            entry["bits_hex"] = [f"{b:08x}" for b in flat.view("<u4").tolist()]
        else:
            entry["values"] = ["nan" if math.isnan(x) else x for x in flat.tolist()]


def spec_rows(entries: list[dict[str, Any]]) -> str:
    rows = []
    for e in entries:
        verdict = "accepts" if e["cpp"]["accepts"] else f"rejects ({e['cpp']['check']})"
        if e["cpp"]["different_tensor"]:
            verdict += ", different tensor"
        strict = "valid" if e["valid"] else f"{e['error']['class']} ({e['error']['field']})"
        rows.append(f"| `{e['file']}` | {e['about']} | {strict} | {verdict} |")
    head = "| file | content | strict reader | C++ reader |\n|---|---|---|---|"
    return head + "\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify instead of writing")
    args = parser.parse_args(argv)
    vs = vectors()
    entries = [describe(v) for v in vs]
    index = json.dumps({"generator": "scripts/gen_spec_vectors.py", "files": entries},
                       indent=1) + "\n"  # fmt: skip
    spec = SPEC.read_text(encoding="utf-8")
    start, end = spec.index(BEGIN) + len(BEGIN), spec.index(END)
    new_spec = spec[:start] + "\n" + spec_rows(entries) + "\n" + spec[end:]
    wanted = {OUT / f"{v.name}.tsr": v.data for v in vs}
    wanted[OUT / "index.json"] = index.encode()
    if args.check:
        stale = [str(p) for p, d in wanted.items() if not p.is_file() or p.read_bytes() != d]
        extra = sorted(set(OUT.glob("*")) - set(wanted))
        stale += [f"{p} (not generated)" for p in extra]
        if new_spec != spec:
            stale.append(f"{SPEC} (vector table)")
        for s in stale:
            print(f"out of date: {s}", file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for p, d in wanted.items():
        p.write_bytes(d)
    SPEC.write_text(new_spec, encoding="utf-8")
    print(f"wrote {len(vs)} vectors to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
