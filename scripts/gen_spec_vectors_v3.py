"""Generate spec/vectors3/ (test vectors of spec/tsr-v3.md), their index and the spec's
field and vector tables.

    python scripts/gen_spec_vectors_v3.py          # (re)write spec/vectors3 and the tables
    python scripts/gen_spec_vectors_v3.py --check  # exit 1 if anything on disk differs

Valid vectors are written with ``tsr.save(format="v3")`` (checked byte for byte against the
C++-written files in tests/data/vectors3 by the test suite); malformed ones are mutations.
The index records each file's SHA-256 and either its values or the error a strict reader
raises, with the verdicts of both paths of the C++ importer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np

import tsr
from tsr import _api, v3
from tsr._model import Compression

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "spec" / "vectors3"
SPEC = ROOT / "spec" / "tsr-v3.md"


def _valid() -> list[tuple[str, str, Any, Compression]]:
    ramp = np.arange(6, dtype=np.float32) * np.float32(0.5) - np.float32(1.25)
    bf16 = np.array([0x3F80, 0xC000, 0x7FC0], "<u2").view(tsr._model.BF16_BITS)
    return [
        ("fp32_scalar_raw", "FP32 scalar -3.25 (ndim 0, dims 0,0,0,0, numel 1)",
         np.array(-3.25, np.float32), None),
        ("fp32_scalar_zlib", "the same, ZLIB", np.array(-3.25, np.float32), "zlib"),
        ("fp32_1_raw", "FP32 (1,): rank 1, dims 0,0,0,1 (not a scalar)",
         np.array([-3.25], np.float32), None),
        ("fp32_2x3_zlib", "FP32 (2,3) ramp, ZLIB", ramp.reshape(2, 3), "zlib"),
        ("bf16_3_raw", "BF16 (3,) bits 3f80 c000 7fc0 (1.0, -2.0, NaN)", bf16, None),
        ("int32_2x1x3_raw", "INT32 (2,1,3) with INT32_MIN and INT32_MAX",
         np.array([-(2**31), 2**31 - 1, 0, 1, -1, 7], np.int32).reshape(2, 1, 3), None),
        ("int8_1x2x1x3_zlib", "INT8 (1,2,1,3) with -128 and 127, ZLIB",
         np.array([-128, 127, 0, 1, -1, 5], np.int8).reshape(1, 2, 1, 3), "zlib"),
    ]  # fmt: skip


def _mutate(base: bytes, payload: bytes | None = None, **fields: Any) -> bytes:
    values = v3.LAYOUT.unpack(base)
    values.update(fields)
    rest = base[v3.HEADER_SIZE :] if payload is None else payload
    return v3.LAYOUT.pack(values) + rest


def vectors() -> list[tuple[str, str, bytes]]:
    out = []
    for name, about, arr, compression in _valid():
        out.append((name, about, _api.encode(arr, format="v3", compression=compression)))
    raw = _api.encode(np.arange(6, dtype=np.float32).reshape(2, 3), format="v3")
    z = out[3][2]
    data = raw[256:]
    crc0 = bytearray(raw)
    crc0[260] ^= 0x01
    bad = [
        ("bad_magic", "magic `tsr3`", b"tsr3" + raw[4:]),
        ("version_4", "version 4", _mutate(raw, version=4)),
        ("file_mode_2", "file_mode 2", _mutate(raw, file_mode=2)),
        ("dtype_0", "dtype 0 (INVALID)", _mutate(raw, dtype=0)),
        ("ndim_5", "ndim 5", _mutate(raw, ndim=5)),
        ("raw_data_offset_128", "RAW with data_offset 128", _mutate(raw, data_offset=128)),
        ("ndim1_on_2x3", "ndim 1 with dims 0,0,2,3: C++ reads (3,) and its read path "
         "writes 24 bytes into a 12-byte buffer", _mutate(raw, ndim=1)),
        ("zero_dim", "dims 0,0,0,3 ndim 2: a zero dim inside the shape, numel 3",
         _mutate(raw, raw[128:268], dims=(0, 0, 0, 3), numel=3, raw_data_size=12,
                 payload_size=12, crc32=zlib.crc32(raw[256:268]))),
        ("numel_7", "numel 7 for dims 2,3", _mutate(raw, numel=7)),
        ("raw_data_size_28", "raw_data_size 28 for 6 FP32", _mutate(raw, raw_data_size=28)),
        ("raw_truncated", "RAW data 4 bytes short", raw[:-4]),
        ("raw_trailing_byte", "one byte after the RAW data (lenient readers accept)",
         raw + b"\0"),
        ("raw_crc0_bitflip", "crc32 0 and a flipped data bit: C++ skips the RAW check",
         _mutate(bytes(crc0), crc32=0)),
        ("raw_payload_size_0", "RAW payload_size 0 (lenient readers accept)",
         _mutate(raw, payload_size=0)),
        ("reserved_2", "reserved_2 = 1 (C++ warns; lenient readers accept)",
         _mutate(raw, reserved_2=1)),
        ("gap_nonzero", "byte 128 = 0xFF (lenient readers accept)",
         raw[:128] + b"\xff" + raw[129:]),
        ("zlib_bomb_claim", "ZLIB raw_data_size 2^40 for a 14-byte stream, dims to match",
         _mutate(z, dims=(1, 1, 1 << 19, 1 << 19), ndim=4, numel=1 << 38,
                 raw_data_size=1 << 40)),
        ("zlib_corrupt", "ZLIB stream with a flipped byte", z[:140] + bytes([z[140] ^ 0xFF])
         + z[141:]),
        ("zlib_short", "ZLIB stream of 5 elements, header says 6",
         _mutate(z, zlib.compress(data[:20], 6), payload_size=len(zlib.compress(data[:20], 6)))),
        ("zlib_payload_2pow64m128", "ZLIB payload_size 2^64-128: C++ wraps the truncation "
         "check, then cannot create the vector", _mutate(z, payload_size=2**64 - 128)),
    ]  # fmt: skip
    return out + bad


def describe(name: str, about: str, data: bytes) -> dict[str, Any]:
    path = OUT / f"{name}.tsr"
    report = tsr.validate(path, format="v3")
    entry: dict[str, Any] = {
        "file": path.name, "about": about, "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "valid": report.ok,
    }  # fmt: skip
    if report.ok:
        h = v3.decode(data)
        info = report.tensors[0]
        raw = data[256:] if h.file_mode == v3.RAW else zlib.decompress(data[128:])
        entry.update(dtype=info.dtype, shape=list(info.shape), mode=h.file_mode,
                     data_hex=raw.hex())  # fmt: skip
    else:
        first = report.errors[0]
        entry["error"] = {"class": first.error, "field": first.field, "offset": first.offset}
    entry["warnings"] = [f.field for f in report.warnings]
    entry["lenient_valid"] = tsr.validate(path, strict=False, format="v3").ok
    entry["cpp"] = {
        v.path: {
            "accepts": v.accepts,
            "check": v.check,
            "unsafe": bool(v.hazard),
            "different_tensor": v.different_tensor,
        }
        for v in report.cpp_paths
    }
    return entry


def spec_rows(entries: list[dict[str, Any]]) -> str:
    def verdict(v: dict[str, Any]) -> str:
        if not v["accepts"]:
            return f"rejects ({v['check']})"
        if v["unsafe"]:
            return "accepts, unsafe"
        return "accepts, a different tensor" if v["different_tensor"] else "accepts"

    rows = []
    for e in entries:
        strict = "valid" if e["valid"] else f"{e['error']['class']} ({e['error']['field']})"
        if not e["valid"] and e["lenient_valid"]:
            strict += "; lenient: valid"
        rows.append(f"| `{e['file']}` | {e['about']} | {strict} | {verdict(e['cpp']['mmap'])} "
                    f"| {verdict(e['cpp']['read'])} |")  # fmt: skip
    head = ("| file | content | strict reader | C++ mmap path | C++ read path |\n"
            "|---|---|---|---|---|")  # fmt: skip
    return head + "\n" + "\n".join(rows)


def _fill(spec: str, mark: str, text: str) -> str:
    begin, end = f"<!-- {mark}:begin -->", f"<!-- {mark}:end -->"
    start, stop = spec.index(begin) + len(begin), spec.index(end)
    return spec[:start] + "\n" + text + "\n" + spec[stop:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify instead of writing")
    args = parser.parse_args(argv)
    vs = vectors()
    wanted = {OUT / f"{n}.tsr": d for n, _, d in vs}
    if not args.check:
        OUT.mkdir(parents=True, exist_ok=True)
        for p, d in wanted.items():
            p.write_bytes(d)
    stale = [str(p) for p, d in wanted.items() if not p.is_file() or p.read_bytes() != d]
    if stale:  # describe() reads the files: they must be there first
        for s in stale:
            print(f"out of date: {s}", file=sys.stderr)
        return 1
    entries = [describe(n, a, d) for n, a, d in vs]
    index = json.dumps({"generator": "scripts/gen_spec_vectors_v3.py", "files": entries},
                       indent=1) + "\n"  # fmt: skip
    spec = SPEC.read_text(encoding="utf-8")
    new_spec = spec
    new_spec = _fill(new_spec, "header-table", v3.LAYOUT.spec_table())
    new_spec = _fill(new_spec, "vectors", spec_rows(entries))
    wanted[OUT / "index.json"] = index.encode()
    if args.check:
        stale = [str(p) for p, d in wanted.items() if not p.is_file() or p.read_bytes() != d]
        stale += [f"{p} (not generated)" for p in sorted(set(OUT.glob("*")) - set(wanted))]
        if new_spec != spec:
            stale.append(f"{SPEC} (tables)")
        for s in stale:
            print(f"out of date: {s}", file=sys.stderr)
        return 1 if stale else 0
    (OUT / "index.json").write_bytes(index.encode())
    SPEC.write_text(new_spec, encoding="utf-8")
    print(f"wrote {len(vs)} vectors to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
