"""The C++ kit itself: SHA-256 against hashlib, and the kit against what the real C++
framework wrote (vectors/manifest.json) and did (vectors/malformed/index.json)."""

from __future__ import annotations

import hashlib
import json
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from .kitlib import CppKit, CppRead

pytestmark = pytest.mark.interop

RAMP_FORMULAS = {"i*0.5 - 3.25 (computed in float32)", "(i*7 % 23) - 11"}


def _manifest(vectors_dir: Path) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = json.loads((vectors_dir / "manifest.json").read_text())["files"]
    assert files, "manifest lists no files"
    return files


# ---------------------------------------------------------------- SHA-256


def test_sha256_matches_hashlib_at_block_boundaries(kit: CppKit, tmp_path: Path) -> None:
    rng = random.Random(5)
    lengths = [
        0,
        1,
        3,
        55,
        56,
        57,
        63,
        64,
        65,
        111,
        112,
        119,
        120,
        127,
        128,
        129,
        1000,
        65536,
        65537,
        200_003,
    ]
    paths = []
    expected = []
    for n in lengths:
        data = bytes(rng.getrandbits(8) for _ in range(n))
        p = tmp_path / f"blob_{n}"
        p.write_bytes(data)
        paths.append(p)
        expected.append(hashlib.sha256(data).hexdigest())
    assert kit.sha256(paths) == expected


def test_sha256_known_answers_and_stdin(kit: CppKit) -> None:
    # FIPS 180-4 examples, through standard input.
    assert kit.sha256(["-"], stdin=b"abc") == [
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    ]
    two_blocks = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
    assert kit.sha256(["-"], stdin=two_blocks) == [
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    ]
    assert kit.sha256(["-"], stdin=b"") == [hashlib.sha256(b"").hexdigest()]


# ---------------------------------------------------------------- reader vs real C++ files


def test_kit_reads_every_vector_as_the_manifest_says(kit: CppKit, vectors_dir: Path) -> None:
    for entry in _manifest(vectors_dir):
        got, lines = kit.values(vectors_dir / entry["file"])
        where = entry["file"]
        assert got.accepted, (where, got.line)
        assert got.dtype == entry["dtype"], where
        assert got.shape == tuple(entry["shape"]), where
        assert got.line.split()[2] == entry["shape_str"], where
        assert got.numel == entry["numel"] == len(lines), where
        assert got.sha256 == entry["payload_sha256"], where
        if entry["dtype"] == "FP32":
            assert [ln.split()[0] for ln in lines] == entry["bits_hex"], where
        else:
            assert [int(ln) for ln in lines] == entry["values"], where


def test_kit_writer_reproduces_every_vector_byte_for_byte(
    kit: CppKit, vectors_dir: Path, tmp_path: Path
) -> None:
    entries = _manifest(vectors_dir)
    outs = []
    for entry in entries:
        assert entry["formula"] in RAMP_FORMULAS, entry["formula"]
        out = tmp_path / entry["file"]
        status, line = kit.write(entry["dtype"], out, "ramp", entry["shape"])
        assert status == 0, line
        assert line == (
            f"wrote: {entry['dtype']} {entry['shape_str']} numel={entry['numel']}"
            f" file_size={entry['file_size']}"
        )
        outs.append(out)
    got = kit.sha256(outs)
    for entry, out, sha in zip(entries, outs, got, strict=True):
        assert sha == entry["file_sha256"], entry["file"]
        assert out.read_bytes() == (vectors_dir / entry["file"]).read_bytes(), entry["file"]


def test_kit_writer_from_stdin_writes_the_given_bytes(kit: CppKit, tmp_path: Path) -> None:
    payload = struct.pack("<6i", -(2**31), 2**31 - 1, 0, -1, 7, 42)
    out = tmp_path / "x.tsr"
    status, line = kit.write("INT32", out, "stdin", [2, 3], stdin=payload)
    assert status == 0, line
    data = out.read_bytes()
    assert data[64:] == payload
    assert struct.unpack_from("<4s5i4iqqq", data) == (
        b"TSR!",
        1,
        64,
        0,
        3,
        2,
        1,
        1,
        2,
        3,
        6,
        0,
        0,
    )


def test_kit_reader_matches_real_reader_on_every_malformed_file(
    kit: CppKit, malformed_dir: Path
) -> None:
    index = json.loads((malformed_dir / "index.json").read_text())["files"]
    assert len(index) >= 10
    names = [e["file"] for e in index]
    # Run from inside the directory so a message that quotes the path quotes the same text.
    lines = kit.read_lines(names, cwd=malformed_dir)
    for entry, line in zip(index, lines, strict=True):
        assert line == entry["cpp_import"], (entry["file"], entry["change"])


# ---------------------------------------------------------------- the framework's Shape quirks


def test_writer_shape_of_a_single_zero_dim_is_silently_a_scalar(
    kit: CppKit, tmp_path: Path
) -> None:
    # The framework's Shape(0) is a scalar: the writer exports a rank-0, one-element file.
    out = tmp_path / "s.tsr"
    status, line = kit.write("FP32", out, "fill:2.5", [0])
    assert (status, line) == (0, "wrote: FP32 () numel=1 file_size=68")
    data = out.read_bytes()
    assert struct.unpack_from("<i4iq", data, 20) == (0, 1, 1, 1, 1, 1)
    assert struct.unpack_from("<f", data, 64) == (2.5,)


@pytest.mark.parametrize("dims", [[3, 0], [0, 4], [2, 0, 4], [2, 3, 4, 0], [0, 1, 1, 1], [-1, 2]])
def test_writer_refuses_zero_and_negative_dims_like_shape(
    kit: CppKit, tmp_path: Path, dims: list[int]
) -> None:
    out = tmp_path / "z.tsr"
    status, line = kit.write("FP32", out, "ramp", dims)
    assert status == 1
    assert line.startswith("error: [Shape] Dimension must be positive"), line
    assert not out.exists()


def test_writer_wrapping_shape_cannot_allocate(kit: CppKit, tmp_path: Path) -> None:
    # 65536**4 == 2**64 wraps to 0 elements in int64: the allocation refuses zero bytes.
    status, line = kit.write("INT8", tmp_path / "w.tsr", "ramp", [65536] * 4)
    assert (status, line) == (1, "error: Cannot allocate zero bytes")


def test_read_result_parser_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        CppRead.parse("accept: FP64 (1) numel=1 sha256=00 sum=0")
    r = CppRead.parse("reject: Invalid ndim value: 5. Must be between 0 and 4")
    assert not r.accepted
    assert r.message.startswith("Invalid ndim")


def test_reject_lines_stay_one_line_per_file(kit: CppKit, tmp_path: Path) -> None:
    # The magic message quotes the file's raw bytes: the CLI escapes the unprintable ones,
    # so a batch read still gives one line per file.
    good = tmp_path / "good.tsr"
    assert kit.write("FP32", good, "ramp", [3, 4])[0] == 0
    bad = tmp_path / "bad.tsr"
    bad.write_bytes(b"T\nR\xff" + good.read_bytes()[4:])
    lines = kit.read_lines([bad, good])
    assert lines[0] == ("reject: Invalid TSR file magic number. Expected 'TSR!', got: T\\x0aR\\xff")
    assert lines[1].startswith("accept: FP32 (3,4) numel=12 ")
