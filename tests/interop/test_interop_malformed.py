"""The malformed-file matrix: what the C++ reader does with each file, three ways.

1. The brief (tsr-v1-format.md) says which check fails, or which shape C++ reads: each
   generated case carries that expectation, and the kit's reader must meet it.
2. The kit's reader actually runs on the file.
3. ``tsr.validate(path).cpp`` predicts it: accepts, check, shape and different_tensor must
   agree with the kit, file by file (plus the shared real-C++ files in vectors/).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import tsr

from .kitlib import MALFORMED, VECTORS, CppKit, CppRead, check_name, key_text

pytestmark = pytest.mark.interop

I32_MAX = 2**31 - 1


def header(
    *,
    magic: bytes = b"TSR!",
    version: int = 1,
    header_size: int = 64,
    reserved_1: int = 0,
    dtype: int = 1,
    ndim: int = 2,
    dims: tuple[int, int, int, int] = (1, 1, 3, 4),
    total: int = 12,
    reserved_2: int = 0,
    reserved_3: int = 0,
) -> bytes:
    return magic + struct.pack(
        "<5i4iqqq", version, header_size, reserved_1, dtype, ndim, *dims, total, reserved_2,
        reserved_3,
    )  # fmt: skip


def payload(nbytes: int) -> bytes:
    ramp = (np.arange((nbytes + 3) // 4, dtype=np.float32) * np.float32(0.5)) - np.float32(3.25)
    return ramp.tobytes()[:nbytes]


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    check: str | None  # the brief's expectation: failing check, or None = accepted
    shape: tuple[int, ...] | None = None  # the shape C++ reads, when accepted


def _c(name: str, data: bytes, check: str | None, shape: tuple[int, ...] | None = None) -> Case:
    return Case(name, data, check, shape)


GOOD = header() + payload(48)
W = 65536

CASES: list[Case] = [
    # valid files
    _c("valid_fp32_3x4", GOOD, None, (3, 4)),
    _c("valid_int8_2x3x4x5", header(dtype=2, ndim=4, dims=(2, 3, 4, 5), total=120)
       + payload(120), None, (2, 3, 4, 5)),
    _c("valid_int32_scalar", header(dtype=3, ndim=0, dims=(1, 1, 1, 1), total=1) + payload(4),
       None, ()),
    _c("valid_fp32_1d", header(ndim=1, dims=(1, 1, 1, 7), total=7) + payload(28), None, (7,)),
    # 1. file too small
    _c("empty_file", b"", "file_too_small"),
    _c("header_63_bytes", GOOD[:63], "file_too_small"),
    _c("garbage_40_bytes", b"\xff" * 40, "file_too_small"),
    # 2. magic
    _c("magic_lowercase", header(magic=b"tsr!") + payload(48), "magic"),
    _c("magic_tsr4", header(magic=b"TSR4") + payload(48), "magic"),
    _c("magic_zero", header(magic=b"\0\0\0\0") + payload(48), "magic"),
    # 3. version
    _c("version_0", header(version=0) + payload(48), "version"),
    _c("version_minus_1", header(version=-1) + payload(48), "version"),
    _c("version_max", header(version=I32_MAX) + payload(48), "version"),
    # 4. dtype, including the codes reserved for future builds
    *[_c(f"dtype_{code}", header(dtype=code) + payload(48), "dtype")
      for code in (0, -1, 4, 5, 6, 7, 8, 9, I32_MAX)],
    # 5. ndim
    _c("ndim_minus_1", header(ndim=-1) + payload(48), "ndim"),
    _c("ndim_5", header(ndim=5) + payload(48), "ndim"),
    _c("ndim_max", header(ndim=I32_MAX) + payload(48), "ndim"),
    # 6. element count (int64 product of all four dims)
    _c("count_11", header(total=11) + payload(48), "element_count"),
    _c("count_minus_12", header(total=-12) + payload(48), "element_count"),
    _c("count_ignores_ndim", header(ndim=1, dims=(1, 1, 3, 4), total=4) + payload(16),
       "element_count"),
    # 7. negative dims (only once the count matches)
    _c("negative_dim", header(dims=(1, 1, -3, 4), total=-12) + payload(48), "dimension"),
    _c("negative_dim_bad_size", header(dims=(1, 1, -3, 4), total=-12), "dimension"),
    _c("two_negative_leading_dims", header(dims=(-1, -1, 3, 4), total=12) + payload(48),
       "dimension"),
    # 8. file size: trailing bytes rejected as well as truncation
    _c("header_only", GOOD[:64], "file_size"),
    _c("truncated_1", GOOD[:-1], "file_size"),
    _c("trailing_1", GOOD + b"\0", "file_size"),
    _c("trailing_64", GOOD + bytes(64), "file_size"),
    _c("int8_code_fp32_payload", header(dtype=2) + payload(48), "file_size"),
    # int64 wrap in the element count: 65536**4 == 2**64 == 0
    _c("wrap_65536x4_total_0", header(ndim=4, dims=(W, W, W, W), total=0), "allocation"),
    _c("wrap_65536x4_total_0_ndim2", header(ndim=2, dims=(W, W, W, W), total=0), "allocation"),
    _c("wrap_65536x4_total_0_payload", header(ndim=4, dims=(W, W, W, W), total=0) + payload(48),
       "file_size"),
    # 65536**3 * 32768 == 2**63: total -2**63, and 64 + total*4 wraps back to 64
    _c("wrap_total_int64_min", header(ndim=4, dims=(W, W, W, 32768), total=-(2**63)),
       "allocation"),
    # 65536**3 * 16384 == 2**62: no wrap in the count, but 64 + 2**62 * 4 wraps to 64, so a
    # header-only file passes the size check; then there is no payload to read
    _c("wrap_size_total_2p62_ndim4", header(ndim=4, dims=(W, W, W, 16384), total=2**62),
       "allocation"),
    _c("wrap_size_total_2p62_ndim1", header(ndim=1, dims=(W, W, W, 16384), total=2**62),
       "allocation"),
    _c("wrap_size_total_minus_2p62", header(ndim=4, dims=(W, W, W, 49152), total=-(2**62)),
       "allocation"),
    # the count wraps to 2**62+1 and the size check to 68 bytes, but Shape refuses dims
    # whose running product passes INT64_MAX / 1000 (issue 14)
    _c("shape_dims_too_large", header(ndim=4, dims=(2147418113, 429509837, 5, 1),
       total=2**62 + 1) + payload(4), "allocation"),
    _c("wrap_65536x65536_total_2p32", header(dims=(1, 1, W, W), total=2**32) + payload(48),
       "file_size"),
    # accepted quirks: not checked by C++
    _c("header_size_0", header(header_size=0) + payload(48), None, (3, 4)),
    _c("header_size_minus_1", header(header_size=-1) + payload(48), None, (3, 4)),
    _c("header_size_128", header(header_size=128) + payload(48), None, (3, 4)),
    _c("reserved_1_7", header(reserved_1=7) + payload(48), None, (3, 4)),
    _c("reserved_2_minus_1", header(reserved_2=-1) + payload(48), None, (3, 4)),
    _c("reserved_3_big", header(reserved_3=2**62) + payload(48), None, (3, 4)),
    _c("all_reserved_nonzero", header(reserved_1=-1, reserved_2=1, reserved_3=-(2**63))
       + payload(48), None, (3, 4)),
    _c("int32_code_fp32_payload", header(dtype=3) + payload(48), None, (3, 4)),
    # accepted, but C++ reads a different tensor (shape from the last ndim dims)
    _c("ndim_0_dims_1134", header(ndim=0) + payload(48), None, ()),
    _c("ndim_1_dims_1134", header(ndim=1) + payload(48), None, (4,)),
    _c("ndim_2_dims_2134", header(dims=(2, 1, 3, 4), total=24) + payload(96), None, (3, 4)),
    _c("ndim_3_dims_2134", header(ndim=3, dims=(2, 1, 3, 4), total=24) + payload(96), None,
       (1, 3, 4)),
    _c("ndim_2_dims_5134", header(dims=(5, 1, 3, 4), total=60) + payload(240), None, (3, 4)),
    # zero dims: the C++ Shape cannot hold them; every such file fails
    _c("zero_dim_ndim2", header(dims=(1, 1, 3, 0), total=0), "allocation"),
    _c("zero_dim_ndim2_first", header(dims=(1, 1, 0, 4), total=0), "allocation"),
    _c("zero_dim_ndim1", header(ndim=1, dims=(1, 1, 1, 0), total=0), "allocation"),
    _c("zero_dim_ndim0", header(ndim=0, dims=(1, 1, 1, 0), total=0), "allocation"),
    _c("zero_dim_ndim4", header(ndim=4, dims=(2, 0, 3, 4), total=0), "allocation"),
    _c("zero_dims_all", header(ndim=4, dims=(0, 0, 0, 0), total=0), "allocation"),
    _c("zero_unused_leading_dim", header(dims=(0, 1, 3, 4), total=0), "allocation"),
    _c("zero_dim_int8", header(dtype=2, ndim=3, dims=(1, 2, 0, 4), total=0), "allocation"),
    _c("zero_dim_ndim1_with_payload", header(ndim=1, dims=(1, 1, 1, 0), total=0) + payload(4),
       "file_size"),
    # check order
    _c("order_magic_before_version", header(magic=b"TSRX", version=9, dtype=9) + payload(48),
       "magic"),
    _c("order_version_before_dtype", header(version=2, dtype=9, ndim=9) + payload(48),
       "version"),
    _c("order_dtype_before_ndim", header(dtype=0, ndim=9, total=5) + payload(48), "dtype"),
    _c("order_ndim_before_count", header(ndim=7, total=5) + payload(48), "ndim"),
    _c("order_count_before_negative", header(dims=(1, 1, -3, 4), total=12) + payload(48),
       "element_count"),
    _c("order_negative_before_size", header(dims=(-1, -1, 3, 4), total=12) + payload(40),
       "dimension"),
]  # fmt: skip


def _shared_files() -> list[Path]:
    if not (MALFORMED / "index.json").is_file():
        return []
    return sorted(MALFORMED.glob("*.tsr")) + sorted(VECTORS.glob("*.tsr"))


@pytest.fixture(scope="module")
def matrix(
    kit: CppKit, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, CppRead]]:
    """Every case written to disk and read by the kit in one run."""
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names), "duplicate case names"
    d = tmp_path_factory.mktemp("malformed")
    paths: dict[str, Path] = {}
    for c in CASES:
        paths[c.name] = d / f"{c.name}.tsr"
        paths[c.name].write_bytes(c.data)
    for p in _shared_files():
        paths[f"shared/{p.parent.name}/{p.name}"] = p
    reads = kit.read(list(paths.values()))
    return {name: (path, r) for (name, path), r in zip(paths.items(), reads, strict=True)}


def _declared_leading_dims_not_1(path: Path) -> bool:
    data = path.read_bytes()[:64]
    if len(data) < 64:
        return False
    ndim = struct.unpack_from("<i", data, 20)[0]
    dims = struct.unpack_from("<4i", data, 24)
    return 0 <= ndim <= 4 and any(d != 1 for d in dims[: 4 - ndim])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kit_reader_does_what_the_brief_says(
    matrix: dict[str, tuple[Path, CppRead]], case: Case
) -> None:
    _path, got = matrix[case.name]
    assert check_name(got) == case.check, got.line
    if case.check is None:
        assert got.shape == case.shape, got.line


def test_kit_reader_messages_for_generated_cases(
    matrix: dict[str, tuple[Path, CppRead]],
) -> None:
    # Spot-check the framework-style message text, numbers included.
    def msg(name: str) -> str:
        return matrix[name][1].line

    assert msg("dtype_4") == (
        "reject: Unsupported dtype value: 4. Supported values: 1 (FP32), 2 (INT8), 3 (INT32)"
    )
    assert msg("count_minus_12") == (
        "reject: Element count mismatch. Header claims -12 but dimensions suggest 12"
    )
    assert msg("wrap_65536x4_total_0") == "reject: Cannot allocate zero bytes"
    assert msg("wrap_total_int64_min") == "reject: Cannot allocate zero bytes"
    assert msg("negative_dim").startswith("reject: Invalid dimension value")
    assert msg("trailing_64") == "reject: File size mismatch. Expected 112 bytes, got 176 bytes"
    assert msg("zero_dim_ndim2").startswith("reject: [Shape] Dimension must be positive")
    assert msg("zero_dim_ndim1").startswith("reject: Failed to read complete tensor data")
    assert msg("ndim_1_dims_1134").startswith("accept: FP32 (4) numel=4 sha256=")
    assert msg("ndim_0_dims_1134").startswith("accept: FP32 () numel=1 sha256=")


def _all_names() -> list[str]:
    return [c.name for c in CASES] + [f"shared/{p.parent.name}/{p.name}" for p in _shared_files()]


@pytest.mark.parametrize("name", _all_names())
def test_tsr_validate_cpp_verdict_agrees_with_the_kit(
    matrix: dict[str, tuple[Path, CppRead]], name: str
) -> None:
    path, got = matrix[name]
    verdict = tsr.validate(path, format="v1").cpp  # the kit is the v1 importer (TSR4 magic too)
    actual = {
        "accepts": got.accepted,
        "check": check_name(got),
        "shape": got.shape,
        "different_tensor": got.accepted and _declared_leading_dims_not_1(path),
    }
    predicted = {
        "accepts": verdict.accepts,
        "check": verdict.check,
        "shape": tuple(verdict.shape) if verdict.shape is not None else None,
        "different_tensor": verdict.different_tensor,
    }
    assert predicted == actual, f"{name}: C++ kit said {got.line!r}; tsr said {verdict}"


@pytest.mark.parametrize("name", _all_names())
def test_tsr_validate_cpp_message_has_the_readers_key_text(
    matrix: dict[str, tuple[Path, CppRead]], name: str
) -> None:
    _path, got = matrix[name]
    verdict = tsr.validate(_path, format="v1").cpp
    if check_name(got) == "allocation":
        return  # wording of post-check failures is not pinned by the real reader's record
    assert key_text(got) in verdict.message, (got.line, verdict.message)
