"""The header model and the rules a TSR v1 header obeys.

:class:`Header` is what :func:`tsr.read_header` returns. :func:`problems` lists every rule
a header breaks, each tied to its field and byte offset (from :mod:`tsr._schema`); the
reader raises the first, the validator reports them all, so the two cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import _schema, dtypes
from .dtypes import DType
from .errors import (
    BadArgumentError,
    BadFieldError,
    BadMagicError,
    SizeMismatchError,
    TruncatedError,
    TSRError,
    UnsupportedDTypeError,
    UnsupportedVersionError,
)

HEADER_SIZE = _schema.HEADER_SIZE
MAX_NDIM = _schema.MAX_NDIM
INT32_MAX = 2**31 - 1
INDEX_MAX = 2**63 - 1  # NumPy's (and torch's) largest array size in bytes
DIM_LABELS = ("N", "C", "H", "W")
_MAGIC = _schema.MAGIC
_CPP_ITEMSIZE = {d.code: d.itemsize for d in dtypes.ALL if d.cpp_readable}
_ONES = {n: (1,) * (MAX_NDIM - n) for n in range(MAX_NDIM + 1)}


@dataclass(frozen=True)
class Header:
    """A decoded TSR v1 header (fields in file order, then derived properties)."""

    magic: bytes
    version: int
    header_size: int
    reserved_1: int
    dtype_code: int
    ndim: int
    dims: tuple[int, int, int, int]
    """The four stored dims (N, C, H, W), right-aligned; unused leading slots are 1."""
    total_elements: int
    reserved_2: int
    reserved_3: int

    format = "v1"
    """The generation (a class constant, not a field): ``v1``; see :func:`tsr.read_header`."""

    @property
    def dtype(self) -> DType:
        """The element type (raises :class:`UnsupportedDTypeError` for unknown codes)."""
        return dtypes.from_code(self.dtype_code, reserved_dtypes=True)

    @property
    def shape(self) -> tuple[int, ...]:
        """The logical shape: the last ``ndim`` dims (``()`` for a scalar)."""
        return self.dims[MAX_NDIM - self.ndim :] if self.ndim else ()

    @property
    def numel(self) -> int:
        """Number of elements of the logical shape (1 for a scalar)."""
        return math.prod(self.shape)

    @property
    def payload_size(self) -> int:
        """Payload bytes the header declares: ``total_elements * itemsize``."""
        return self.total_elements * self.dtype.itemsize

    @property
    def file_size(self) -> int:
        """The exact size of a file with this header: 64 + payload size."""
        return HEADER_SIZE + self.payload_size

    @property
    def device(self) -> str:
        """Where the tensor lives: always ``"cpu"`` (the host), v1 stores no device."""
        return "cpu"

    @property
    def cpp_readable(self) -> bool:
        """Whether a C++ build can read a file with this header (dtype and no zero dim)."""
        return self.dtype.cpp_readable and self.numel > 0

    def to_bytes(self) -> bytes:
        """The 64 header bytes."""
        return _schema.FAST.pack(
            self.magic,
            self.version,
            self.header_size,
            self.reserved_1,
            self.dtype_code,
            self.ndim,
            *self.dims,
            self.total_elements,
            self.reserved_2,
            self.reserved_3,
        )


# decode_raw spells out the flat layout for speed; this keeps it in step with the schema.
assert [f.name for f in _schema.FIELDS] == [
    "magic", "version", "header_size", "reserved_1", "dtype", "ndim",
    "dims", "total_elements", "reserved_2", "reserved_3",
] and _schema.FIELD_BY_NAME["dims"].count == 4, "decode_raw is out of step"  # fmt: skip


def decode_raw(buffer: bytes | bytearray | memoryview) -> Header:
    """Decode 64 header bytes into a :class:`Header` without checking any rule.

    Raises :class:`TruncatedError` when fewer than 64 bytes are given.
    """
    if len(buffer) < HEADER_SIZE:
        raise TruncatedError(
            f"truncated header: expected {HEADER_SIZE} bytes, got {len(buffer)}",
            field="header",
            offset=0,
            found=len(buffer),
            expected=HEADER_SIZE,
        )
    f = _schema.FAST.unpack_from(buffer)
    # Same result as Header(*fields), at half the cost: a frozen dataclass's __init__ pays
    # an object.__setattr__ per field, and this is the hot path of every read.
    h = _new(Header)
    h.__dict__.update(
        magic=f[0], version=f[1], header_size=f[2], reserved_1=f[3], dtype_code=f[4],
        ndim=f[5], dims=f[6:10], total_elements=f[10], reserved_2=f[11], reserved_3=f[12],
    )  # fmt: skip
    return h


_new = object.__new__


@dataclass(frozen=True)
class Problem:
    """One rule a header or file breaks."""

    error: type[TSRError]
    field: str
    found: Any
    expected: Any
    message: str
    strict_only: bool = False
    """True for rules the C++ reader ignores and only strict reading enforces."""
    warning: bool = False
    """True for facts worth reporting that do not make the file invalid."""

    @property
    def offset(self) -> int:
        """Byte offset of the field in the file (``payload`` and ``file`` map to 64 / 0)."""
        if self.field.startswith("dims["):
            index = int(self.field[5])
            return _schema.FIELD_BY_NAME["dims"].offset + 4 * index
        f = _schema.FIELD_BY_NAME.get(self.field)
        if f is not None:
            return f.offset
        return HEADER_SIZE if self.field == "payload" else 0

    def exception(self) -> TSRError:
        """The exception the reader raises for this problem."""
        return self.error(
            self.message,
            field=self.field,
            offset=self.offset,
            found=self.found,
            expected=self.expected,
        )


def problems(h: Header, file_size: int | None, *, reserved_dtypes: bool) -> Iterator[Problem]:
    """Every rule ``h`` breaks, in reading order (the first is the one to raise).

    ``file_size`` is the size of the whole file, or None to check the header alone.
    Reserved dtypes are errors unless ``reserved_dtypes``; then they are warnings.
    """
    if h.magic != _schema.MAGIC:
        yield Problem(
            BadMagicError, "magic", h.magic, _schema.MAGIC,
            f"bad magic {h.magic!r}: expected {_schema.MAGIC!r}; not a TSR file",
        )  # fmt: skip
        return  # nothing else means anything
    if h.version != _schema.VERSION:
        yield Problem(
            UnsupportedVersionError, "version", h.version, _schema.VERSION,
            f"unsupported TSR version {h.version}: this library reads version "
            f"{_schema.VERSION}",
        )  # fmt: skip
        return
    dt = dtypes.BY_CODE.get(h.dtype_code)
    if dt is None:
        yield Problem(
            UnsupportedDTypeError, "dtype", h.dtype_code, "1, 2, 3 (or reserved 4-8)",
            f"unknown dtype code {h.dtype_code}: expected 1 (FP32), 2 (INT8) or 3 (INT32), "
            "or a reserved code 4 to 8",
        )  # fmt: skip
    elif not dt.cpp_readable:
        yield Problem(
            UnsupportedDTypeError, "dtype", h.dtype_code, "1, 2 or 3",
            f"dtype code {h.dtype_code} ({dt.name}) is reserved: no C++ build reads it"
            + ("" if reserved_dtypes else "; pass reserved_dtypes=True to read it"),
            warning=reserved_dtypes,
        )  # fmt: skip
    ndim_ok = 0 <= h.ndim <= MAX_NDIM
    if not ndim_ok:
        yield Problem(
            BadFieldError, "ndim", h.ndim, "0 to 4",
            f"ndim {h.ndim} is out of range: expected 0 to {MAX_NDIM}",
        )  # fmt: skip
    negative = False
    for i, d in enumerate(h.dims):
        if d < 0:
            negative = True
            yield Problem(
                BadFieldError, f"dims[{i}]", d, ">= 0",
                f"dims[{i}] ({DIM_LABELS[i]}) is negative: {d}",
            )  # fmt: skip
    product = math.prod(h.dims)
    if not negative and h.total_elements != product:
        yield Problem(
            BadFieldError, "total_elements", h.total_elements, product,
            f"total_elements {h.total_elements} disagrees with dims "
            f"{'x'.join(map(str, h.dims))} = {product}",
        )  # fmt: skip
    if ndim_ok:
        for i in range(MAX_NDIM - h.ndim):
            if h.dims[i] != 1:
                yield Problem(
                    BadFieldError, f"dims[{i}]", h.dims[i], 1,
                    f"dims[{i}] ({DIM_LABELS[i]}) is {h.dims[i]} but ndim {h.ndim} leaves it "
                    "unused, so it must be 1 (C++ would silently read a smaller tensor)",
                )  # fmt: skip
    if h.header_size != HEADER_SIZE:
        yield Problem(
            BadFieldError, "header_size", h.header_size, HEADER_SIZE,
            f"header_size {h.header_size}: expected {HEADER_SIZE} (the payload always "
            "starts at byte 64)",
            strict_only=True,
        )  # fmt: skip
    for name in ("reserved_1", "reserved_2", "reserved_3"):
        value = getattr(h, name)
        if value != 0:
            yield Problem(
                BadFieldError, name, value, 0, f"{name} is {value}: expected 0",
                strict_only=True,
            )  # fmt: skip
    if ndim_ok and not negative and 0 in h.shape:
        yield Problem(
            BadFieldError, "dims", h.dims, "no zero dim",
            f"shape {h.shape} has a zero-size dimension: valid TSR, but no C++ build "
            "can read it",
            warning=True,
        )  # fmt: skip
    if ndim_ok and not negative and 0 in h.shape and dt is not None:
        span = math.prod(d for d in h.shape if d) * dt.itemsize
        if span > INDEX_MAX:
            yield Problem(
                BadFieldError, "dims", h.dims, f"non-zero dims spanning <= {INDEX_MAX} bytes",
                f"shape {h.shape} is empty but its other dims span {span} bytes, beyond a "
                "64-bit index: no array library can represent it",
            )  # fmt: skip
    if file_size is None or dt is None or negative or h.total_elements != product:
        return
    expected = HEADER_SIZE + h.total_elements * dt.itemsize
    if file_size < expected:
        yield Problem(
            TruncatedError, "payload", file_size, expected,
            f"truncated payload: the header declares {h.total_elements} x {dt.name} = "
            f"{expected - HEADER_SIZE} bytes, so the file should be {expected} bytes, "
            f"but it is {file_size}; was it fully written?",
        )  # fmt: skip
    elif file_size > expected:
        yield Problem(
            SizeMismatchError, "payload", file_size, expected,
            f"{file_size - expected} trailing byte(s): the file should be {expected} bytes "
            f"(64 + {h.total_elements} x {dt.name}), but it is {file_size}",
        )  # fmt: skip


def check(h: Header, file_size: int | None, *, strict: bool, reserved_dtypes: bool) -> None:
    """Raise the first problem that makes ``h`` unreadable under these options."""
    d0, d1, d2, d3 = h.dims
    ndim = h.ndim
    if (
        h.magic == _MAGIC
        and h.version == 1
        and h.header_size == HEADER_SIZE
        and h.dtype_code in _CPP_ITEMSIZE
        and 0 <= ndim <= MAX_NDIM
        and not (h.reserved_1 or h.reserved_2 or h.reserved_3)
        and d0 > 0 and d1 > 0 and d2 > 0 and d3 > 0
        and h.dims[: MAX_NDIM - ndim] == _ONES[ndim]
        and h.total_elements == d0 * d1 * d2 * d3
        and (
            file_size is None
            or file_size == HEADER_SIZE + h.total_elements * _CPP_ITEMSIZE[h.dtype_code]
        )
    ):  # fmt: skip
        return  # the common, valid case, without building Problem objects
    for p in problems(h, file_size, reserved_dtypes=reserved_dtypes):
        if p.warning or (p.strict_only and not strict):
            continue
        raise p.exception()


def encode(shape: tuple[int, ...], dt: DType) -> bytes:
    """The 64-byte header for a tensor of ``shape`` and type ``dt``."""
    ndim = len(shape)
    if ndim > MAX_NDIM:
        raise BadArgumentError(
            f"rank {ndim} cannot be stored: TSR v1 holds 0 to {MAX_NDIM} dimensions; reshape first",
            field="ndim",
            found=ndim,
            expected="0 to 4",
        )
    for i, d in enumerate(shape):
        if d > INT32_MAX:
            raise BadArgumentError(
                f"dimension {i} of shape {shape} is {d}: TSR v1 stores dims as int32 "
                f"(at most {INT32_MAX})",
                field="dims",
                found=d,
                expected=f"<= {INT32_MAX}",
            )
    dims = (1,) * (MAX_NDIM - ndim) + tuple(shape)
    return _schema.FAST.pack(
        _schema.MAGIC, _schema.VERSION, HEADER_SIZE, 0, dt.code, ndim,
        *dims, math.prod(dims), 0, 0,
    )  # fmt: skip
