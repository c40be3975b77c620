"""Validation: a full report on a file, and what the C++ reader would do with it."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import tsr_platform

from . import _schema, dtypes, header
from ._io import Source, _open_fd, byte_view
from .errors import BadArgumentError, TSRError
from .header import HEADER_SIZE, MAX_NDIM, Header

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One thing a validation found."""

    field: str
    """Header field (``dims[2]`` for one dim), or ``header`` / ``payload`` for sizes."""
    offset: int
    """Byte offset in the file of what the finding is about."""
    found: Any
    expected: Any
    severity: Severity
    message: str
    error: str
    """Name of the :class:`tsr.TSRError` subclass a reader raises for it."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (bytes as text)."""
        return {
            "field": self.field,
            "offset": self.offset,
            "found": _jsonable(self.found),
            "expected": _jsonable(self.expected),
            "severity": self.severity,
            "message": self.message,
            "error": self.error,
        }


@dataclass(frozen=True)
class CppVerdict:
    """What the C++ framework's ``import_tensor`` does with a file.

    ``check`` names the first of its checks that fails: ``file_too_small``, ``magic``,
    ``version``, ``dtype``, ``ndim``, ``element_count``, ``dimension``, ``file_size``, or
    ``allocation`` (it passes the header checks but cannot build the tensor: a zero dim,
    dims too large for ``Shape`` (a running product above ``INT64_MAX / 1000``), zero or
    negative elements, or an impossible size). None when it accepts.
    """

    accepts: bool
    check: str | None
    message: str
    shape: tuple[int, ...] | None = None
    """The shape C++ reads, when it accepts."""
    different_tensor: bool = False
    """True when C++ accepts but reads fewer elements than the header declares."""
    path: str = "default"
    """Which importer path (TSR3: ``mmap``, the default, or ``read``, PythonSession's)."""
    error_type: str | None = None
    """What C++ raises when it rejects (``ValueError``, ``MemoryError``,
    ``std::length_error``), or ``SIGBUS`` where it would crash."""
    allocates: int = 0
    """Bytes the importer allocates (zero-filled) before it fails or returns."""
    hazard: str | None = None
    """When it accepts: how the tensor it returns is unsafe (a heap overrun, a shape
    larger than its buffer, a tensor past the end of the file), else None."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "accepts": self.accepts,
            "check": self.check,
            "message": self.message,
            "shape": list(self.shape) if self.shape is not None else None,
            "different_tensor": self.different_tensor,
            "path": self.path,
            "error_type": self.error_type,
            "allocates": self.allocates,
            "hazard": self.hazard,
        }


@dataclass(frozen=True)
class Report:
    """The result of :func:`validate`."""

    path: str | None
    file_size: int
    strict: bool
    findings: tuple[Finding, ...]
    cpp: CppVerdict
    header: Header | Any = field(default=None)
    """The decoded header when its fields make sense (even if the file has errors); the
    generation's own header type for TSR3/TSR4."""
    format: str = "v1"
    """The generation: ``v1``, ``v3`` or ``v4``."""
    tensors: tuple[Any, ...] = ()
    """The :class:`tsr.TensorInfo` of each tensor (TSR3/TSR4)."""
    cpp_paths: tuple[CppVerdict, ...] = ()
    """Every path of the C++ importer (``cpp`` is the first); empty for v1's one path."""

    @property
    def ok(self) -> bool:
        """True when no finding is an error: :func:`tsr.load` with the same ``strict``
        (and ``reserved_dtypes=True``) reads the file."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def errors(self) -> tuple[Finding, ...]:
        """The findings that make the file invalid."""
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        """The findings that do not."""
        return tuple(f for f in self.findings if f.severity == "warning")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        h = self.header
        return {
            "path": self.path,
            "ok": self.ok,
            "strict": self.strict,
            "file_size": self.file_size,
            "dtype": h.dtype.name if h is not None and hasattr(h, "dtype") else None,
            "shape": list(h.shape) if h is not None and hasattr(h, "shape") else None,
            "findings": [f.to_dict() for f in self.findings],
            "cpp": self.cpp.to_dict(),
            "format": self.format,
            "tensors": [t.to_dict() for t in self.tensors],
            "cpp_paths": [v.to_dict() for v in self.cpp_paths],
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def validate(source: Source, *, strict: bool = True) -> Report:
    """Check a TSR file against the format and tell what the C++ reader would do.

    Never raises for a bad file: every problem becomes a :class:`Finding` with its field,
    byte offset, found and expected values. With ``strict`` (the default) a header_size
    other than 64 or a non-zero reserved field is an error; otherwise a warning, as the
    C++ reader ignores them. Reserved dtypes and zero-size dims are warnings: valid TSR
    that no C++ build reads. Reads the 64 header bytes and the file size only.
    Errors of the operating system (a missing file) are raised as usual.
    """
    if isinstance(source, (str, bytes, os.PathLike)):
        name: str | None = os.fsdecode(source)
    else:  # an open file: its name when it has one
        given = getattr(source, "name", None)
        name = given if isinstance(given, str) else None
    try:
        with _open_fd(source) as (fd, size):
            head = tsr_platform.pread(fd, HEADER_SIZE, 0)
    except BadArgumentError as exc:  # a directory, FIFO or device: not a TSR file
        finding = Finding(
            "file", 0, exc.found, exc.expected, "error", exc.message, type(exc).__name__
        )
        verdict = CppVerdict(False, "file_too_small", "not a regular file")
        return Report(name, 0, strict, (finding,), verdict)
    return _report(head, size, strict=strict, path=name)


def validate_bytes(buffer: bytes | bytearray | memoryview, *, strict: bool = True) -> Report:
    """:func:`validate` for a whole file held in memory."""
    view = byte_view(buffer)
    return _report(bytes(view[:HEADER_SIZE]), len(view), strict=strict, path=None)


def _report(head: bytes, size: int, *, strict: bool, path: str | None) -> Report:
    cpp = cpp_verdict(head, size)
    if len(head) < HEADER_SIZE:
        found = Finding(
            "header", 0, len(head), HEADER_SIZE, "error",
            f"truncated header: a TSR file has at least {HEADER_SIZE} bytes, this one {size}",
            "TruncatedError",
        )  # fmt: skip
        return Report(path, size, strict, (found,), cpp)
    h = header.decode_raw(head)
    findings = tuple(
        Finding(
            p.field,
            p.offset,
            p.found,
            p.expected,
            "warning" if p.warning or (p.strict_only and not strict) else "error",
            p.message,
            p.error.__name__,
        )
        for p in header.problems(h, size, reserved_dtypes=True)
    )
    try:
        header.check(h, None, strict=False, reserved_dtypes=True)
        decoded: Header | None = h
    except TSRError:
        decoded = None
    return Report(path, size, strict, findings, cpp, decoded)


_INT64 = 1 << 64
_SHAPE_PRODUCT_MAX = ((1 << 63) - 1) // 1000
"""The C++ ``Shape`` refuses dims whose running product exceeds ``INT64_MAX / 1000``."""


def _wrap_int64(value: int) -> int:
    value %= _INT64
    return value - _INT64 if value >= 1 << 63 else value


def cpp_verdict(head: bytes, file_size: int) -> CppVerdict:
    """What ``CpuBackend::import_tensor`` of the C++ framework does with a file whose
    first bytes are ``head`` and whose size is ``file_size``.

    It runs its eight checks in its order, with its int64 arithmetic (the element count
    product wraps around), and ignores header_size, the reserved fields and the unused
    leading dims; the shape it builds is the last ``ndim`` dims.
    """
    if file_size < HEADER_SIZE or len(head) < HEADER_SIZE:
        return CppVerdict(False, "file_too_small", "File too small to contain valid TSR header")
    h = header.decode_raw(head)
    if h.magic != _schema.MAGIC:
        text = h.magic.decode("latin-1")
        return CppVerdict(
            False, "magic", f"Invalid TSR file magic number. Expected 'TSR!', got: {text}"
        )
    if h.version != 1:
        return CppVerdict(
            False, "version", f"Unsupported TSR format version: {h.version}. Supported version: 1"
        )
    dt = dtypes.BY_CODE.get(h.dtype_code)
    if dt is None or not dt.cpp_readable:
        return CppVerdict(
            False,
            "dtype",
            f"Unsupported dtype value: {h.dtype_code}. "
            "Supported values: 1 (FP32), 2 (INT8), 3 (INT32)",
        )
    if not 0 <= h.ndim <= MAX_NDIM:
        return CppVerdict(False, "ndim", f"Invalid ndim value: {h.ndim}. Must be between 0 and 4")
    product = 1
    for d in h.dims:
        product = _wrap_int64(product * d)
    if h.total_elements != product:
        return CppVerdict(
            False,
            "element_count",
            f"Element count mismatch. Header claims {h.total_elements} "
            f"but dimensions suggest {product}",
        )
    for i, d in enumerate(h.dims):
        if d < 0:  # the first one, as C++ names it
            return CppVerdict(False, "dimension", f"Invalid dimension value at index {i}: {d}")
    expected = (HEADER_SIZE + h.total_elements * dt.itemsize) % _INT64
    if file_size != expected:
        return CppVerdict(
            False,
            "file_size",
            f"File size mismatch. Expected {expected} bytes, got {file_size} bytes",
        )
    # The tensor is built from the last ndim dims, with int64 arithmetic.
    shape = h.shape
    if shape == (0,):
        shape = ()  # Shape(0) silently becomes a scalar
    elif any(d == 0 for d in shape):
        return CppVerdict(
            False, "allocation", "Shape rejects a zero dimension: no C++ build reads empty tensors"
        )
    # Shape::validate_dims: after each dim, the running int64 product must stay at most
    # INT64_MAX / 1000 (checked after the multiplication, which may itself wrap).
    numel = 1
    for d in shape:
        numel = _wrap_int64(numel * d)
        if numel > _SHAPE_PRODUCT_MAX:
            return CppVerdict(
                False,
                "allocation",
                f"Shape dimensions are too large: the running product of shape {shape} "
                f"reaches {numel}, above INT64_MAX / 1000 = {_SHAPE_PRODUCT_MAX}",
            )
    nbytes = _wrap_int64(numel * dt.itemsize)
    available = file_size - HEADER_SIZE
    if nbytes == 0:
        return CppVerdict(
            False,
            "allocation",
            f"Cannot allocate zero bytes (shape {shape} has no elements, or its size wraps "
            "around to 0 in int64)",
        )
    if nbytes < 0 or nbytes > available:
        return CppVerdict(
            False,
            "allocation",
            f"Cannot build the tensor: shape {shape} needs {math.prod(shape) * dt.itemsize} "
            f"bytes ({nbytes} in int64) but the file holds {available}: an allocation "
            "failure or 'Failed to read complete tensor data'",
        )
    different = math.prod(shape) != h.total_elements or nbytes != available
    label = "(" + ",".join(map(str, shape)) + ")"
    message = f"accept: {dt.name} {label} numel={numel}"
    if different:
        message += (
            f" (the header declares {h.total_elements} elements in {available} bytes: C++ "
            f"silently reads a different tensor of {nbytes} bytes)"
        )
    return CppVerdict(True, None, message, shape, different)
