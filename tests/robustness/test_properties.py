"""Property tests of the codec: round trips, single-byte header mutations, and a validator
that never raises. The expected bytes are built here with :mod:`struct`, not with tsr."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tsr
from tsr.validate import validate_bytes

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "fuzz" / "corpus" / "reader"
LAYOUT = struct.Struct("<4siiiii4iqqq")
CODES = {"float32": 1, "int8": 2, "int32": 3, "float16": 4, "float64": 6, "int16": 7, "uint8": 8}
CPP_TYPES = ("float32", "int8", "int32")

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)


def expected_file(arr: npt.NDArray[Any], code: int) -> bytes:
    """The TSR bytes of ``arr``, built independently of tsr: right-aligned dims, the
    product as total_elements, the payload little-endian in C order."""
    shape = arr.shape
    dims = (1,) * (4 - len(shape)) + tuple(shape)
    total = int(np.prod(dims, dtype=np.int64))
    head = LAYOUT.pack(b"TSR!", 1, 64, 0, code, len(shape), *dims, total, 0, 0)
    le = arr.dtype.newbyteorder("<")
    return head + np.ascontiguousarray(arr).astype(le, copy=False).tobytes(order="C")


def as_layout(base: npt.NDArray[Any], layout: str) -> npt.NDArray[Any]:
    """An array equal to ``base`` with another memory layout (or, for ``broadcast``, a
    zero-stride array of base's shape)."""
    if base.ndim == 0:
        return base
    every = (slice(None, None, 2),) * base.ndim
    back = (slice(None, None, -1),) * base.ndim
    if layout == "fortran":
        return np.asfortranarray(base)
    if layout == "strided":  # every other element of a buffer twice as large
        big = np.zeros(tuple(2 * d for d in base.shape), base.dtype)
        big[every] = base
        return big[every]
    if layout == "reversed":  # negative strides
        return np.ascontiguousarray(base[back])[back]
    if layout == "transposed":
        return np.ascontiguousarray(base.T).T
    if layout == "broadcast" and base.size:
        return np.broadcast_to(base[(slice(0, 1),) * base.ndim], base.shape)
    return base


@st.composite
def tensors(draw: st.DrawFn) -> tuple[npt.NDArray[Any], str, bool]:
    name = draw(st.sampled_from(sorted(CODES)))
    big_endian = draw(st.booleans()) and np.dtype(name).itemsize > 1
    dtype = np.dtype(name).newbyteorder(">" if big_endian else "<")
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    elements = None
    if dtype.kind == "f":
        width = cast(Literal[16, 32, 64], 8 * dtype.itemsize)
        elements = st.floats(width=width, allow_nan=True, allow_infinity=True)
    base = draw(hnp.arrays(dtype, shape, elements=elements))
    layout = draw(st.sampled_from(["c", "fortran", "strided", "reversed", "transposed",
                                   "broadcast"]))  # fmt: skip
    return as_layout(base, layout), layout, name not in CPP_TYPES


@PROPERTY
@given(tensors())
def test_any_tensor_round_trips(tmp_path: Path, case: tuple[npt.NDArray[Any], str, bool]) -> None:
    arr, _layout, reserved = case
    code = CODES[arr.dtype.name]
    want = expected_file(arr, code)
    assert tsr.to_bytes(arr, reserved_dtypes=reserved) == want

    back = tsr.from_bytes(want, reserved_dtypes=reserved)
    assert back.shape == arr.shape and back.dtype == arr.dtype.newbyteorder("<")
    assert back.dtype.byteorder in "<|="  # always little-endian out
    assert back.tobytes() == want[64:]

    path = tmp_path / "t.tsr"
    tsr.save(path, arr, reserved_dtypes=reserved)
    assert path.read_bytes() == want
    for mmap in (True, False):
        loaded = tsr.load(path, mmap=mmap, reserved_dtypes=reserved)
        assert loaded.shape == arr.shape and loaded.tobytes() == want[64:]
    report = tsr.validate(path)
    assert report.ok and not report.errors
    assert report.cpp.accepts == (not reserved and arr.size > 0)
    if reserved:  # reserved codes need the opt-in, both ways
        with pytest.raises(tsr.UnsupportedDTypeError):
            tsr.to_bytes(arr)
        with pytest.raises(tsr.UnsupportedDTypeError):
            tsr.from_bytes(want)


TORCH_CODES = {
    "float32": 1, "int8": 2, "int32": 3, "float16": 4, "bfloat16": 5,
    "float64": 6, "int16": 7, "uint8": 8,
}  # fmt: skip


@PROPERTY
@given(
    st.sampled_from(sorted(TORCH_CODES)),
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_torch_round_trip_all_dtypes(
    tmp_path: Path, name: str, shape: tuple[int, ...], transpose: bool, rnd: Any
) -> None:
    """Every dtype incl. BF16 (bits in, bits out) through tsr.torch, also non-contiguous."""
    torch = pytest.importorskip("torch")
    import tsr.torch as tsr_torch

    dtype = getattr(torch, name)
    nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
    raw = bytes(rnd.getrandbits(8) for _ in range(nbytes))
    t = (
        torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)
        if (nbytes)
        else torch.empty(shape, dtype=dtype)
    )
    if transpose and t.ndim >= 2:
        t = t.transpose(0, -1)  # non-contiguous view
    path = tmp_path / "t.tsr"
    reserved = name not in CPP_TYPES
    tsr_torch.save(path, t, reserved_dtypes=reserved)
    data = path.read_bytes()
    assert tsr.validate(path).ok
    dims = (1,) * (4 - t.ndim) + tuple(t.shape)
    assert data[:64] == LAYOUT.pack(
        b"TSR!", 1, 64, 0, TORCH_CODES[name], t.ndim, *dims, t.numel(), 0, 0
    )
    contiguous = t.contiguous().reshape(-1)
    payload = contiguous.view(torch.uint8).numpy().tobytes() if t.numel() else b""
    assert data[64:] == payload
    back = tsr_torch.load(path, reserved_dtypes=reserved)
    assert back.dtype == dtype and tuple(back.shape) == tuple(t.shape)
    back_bytes = back.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    assert back_bytes == payload


# ----------------------------------------------------------------------------- mutations

FIELDS = [  # name, offset, size: the brief's table, not tsr's schema
    ("magic", 0, 4), ("version", 4, 4), ("header_size", 8, 4), ("reserved_1", 12, 4),
    ("dtype", 16, 4), ("ndim", 20, 4), ("dims[0]", 24, 4), ("dims[1]", 28, 4),
    ("dims[2]", 32, 4), ("dims[3]", 36, 4), ("total_elements", 40, 8),
    ("reserved_2", 48, 8), ("reserved_3", 56, 8),
]  # fmt: skip
OFFSET = {name: off for name, off, _ in FIELDS}
OFFSET["payload"] = 64
DIMS = {f"dims[{i}]" for i in range(4)}
ALLOWED = {  # the fields an error may name after a change to this one
    "magic": {"magic"},
    "version": {"version"},
    "header_size": {"header_size"},
    "reserved_1": {"reserved_1"},
    "dtype": {"dtype", "payload"},  # an unknown code, or another item size
    "ndim": {"ndim"} | DIMS,  # out of range, or a now-unused dim that is not 1
    "total_elements": {"total_elements"},
    "reserved_2": {"reserved_2"},
    "reserved_3": {"reserved_3"},
    **{d: {d, "total_elements"} for d in DIMS},
}
MUTATION_SEEDS = [
    "fp32_2d_3x4.tsr", "int8_4d_2x3x4x5.tsr", "fp32_0d_scalar.tsr", "int32_3d_2x3x4.tsr",
    "zero_int8_2x0x3.tsr", "reserved_float64_2x3.tsr",
]  # fmt: skip


def field_at(pos: int) -> str:
    return next(name for name, off, size in FIELDS if off <= pos < off + size)


@pytest.mark.parametrize("seed", MUTATION_SEEDS)
def test_every_single_byte_header_mutation(seed: str) -> None:
    """Each of 64 positions x 7 values: the file either still parses to a valid,
    canonical file, or the reader raises a specific TSRError that names the changed field
    (or the one it contradicts), with that field's offset; validate reports the same."""
    original = (CORPUS / seed).read_bytes()
    seen: dict[str, int] = {"parsed": 0, "rejected": 0}
    for pos in range(64):
        for value in {0x00, 0xFF, 0x01, 0x80, 0x7F, original[pos] ^ 0x01, original[pos] ^ 0x40}:
            if value == original[pos]:
                continue
            mutated = bytearray(original)
            mutated[pos] = value
            data = bytes(mutated)
            field = field_at(pos)
            report = validate_bytes(data)
            code = struct.unpack_from("<i", data, 16)[0]
            try:
                arr = tsr.from_bytes(data, reserved_dtypes=True)
            except tsr.TSRError as exc:
                assert type(exc) is not tsr.TSRError
                if code == tsr.BF16.code and "ml_dtypes" in str(exc):
                    assert report.ok  # valid BF16; NumPy alone cannot hold it
                    continue
                seen["rejected"] += 1
                where = (seed, pos, value, field, exc.field, str(exc))
                assert exc.field in ALLOWED[field], where
                assert exc.offset == OFFSET[exc.field], where
                assert not report.ok, where
                first = report.errors[0]
                assert (first.error, first.field) == (type(exc).__name__, exc.field), where
            else:
                seen["parsed"] += 1
                assert report.ok, (seed, pos, value)
                assert tsr.to_bytes(arr, reserved_dtypes=True) == data, (seed, pos, value)
    assert seen["rejected"] > 250


# ----------------------------------------------------------------------------- validate


SEED_FILES = sorted(CORPUS.glob("*.tsr"))
VALID = [p for p in SEED_FILES if validate_bytes(p.read_bytes()).ok]


@pytest.mark.parametrize("seed", VALID, ids=[p.name for p in VALID])
def test_validate_on_every_truncation_and_extension(seed: Path, tmp_path: Path) -> None:
    data = seed.read_bytes()
    path = tmp_path / "cut.tsr"
    for n in range(len(data) + 9):
        cut = data[:n] if n <= len(data) else data + b"\xab" * (n - len(data))
        path.write_bytes(cut)
        for rep in (validate_bytes(cut), tsr.validate(path), validate_bytes(cut, strict=False)):
            json.dumps(rep.to_dict())
            assert rep.file_size == n
            if n == len(data):
                assert rep.ok
                continue
            assert not rep.ok
            first = rep.errors[0]
            if n < 64:
                assert (first.error, first.field) == ("TruncatedError", "header")
            elif n < len(data):
                assert (first.error, first.field) == ("TruncatedError", "payload")
            else:
                assert (first.error, first.field) == ("SizeMismatchError", "payload")
            assert not rep.cpp.accepts


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=300), st.booleans())
def test_validate_never_raises_on_random_bytes(data: bytes, strict: bool) -> None:
    rep = validate_bytes(data, strict=strict)
    json.dumps(rep.to_dict())
    assert rep.ok == (not rep.errors)
    assert rep.file_size == len(data)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(min_size=60, max_size=60), st.binary(max_size=40))
def test_validate_never_raises_on_tsr_prefixed_bytes(rest: bytes, tail: bytes) -> None:
    data = b"TSR!" + rest + tail
    for strict in (True, False):
        rep = validate_bytes(data, strict=strict)
        json.dumps(rep.to_dict())
        if rep.ok:  # and then the reader agrees
            code = struct.unpack_from("<i", data, 16)[0]
            assume(code != tsr.BF16.code)
            tsr.from_bytes(data, strict=strict, reserved_dtypes=True)
