"""Element types of TSR v1.

The C++ framework reads and writes three types: FP32 (code 1), INT8 (2) and INT32 (3).
The format reserves FP16 (4), BF16 (5), FP64 (6), INT16 (7) and UINT8 (8); no C++ build
reads them yet, so this library reads and writes them only when asked to
(``reserved_dtypes=True``). Code 0 means "unknown" and is never valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UnsupportedDTypeError


@dataclass(frozen=True)
class DType:
    """One TSR element type."""

    name: str
    """The format's name: ``FP32``, ``INT8``, ..."""
    code: int
    """The value of the header's ``dtype`` field."""
    itemsize: int
    """Bytes per element."""
    numpy_name: str
    """The NumPy type name (``float32``, ...); ``bfloat16`` has no NumPy type of its own."""
    cpp_readable: bool
    """Whether the C++ framework reads this type (only FP32, INT8, INT32)."""

    @property
    def numpy(self) -> np.dtype[Any]:
        """The explicit little-endian NumPy dtype of the payload.

        Raises :class:`UnsupportedDTypeError` for BF16 unless ``ml_dtypes`` is installed.
        """
        if self.code == BF16.code:
            return _bfloat16_dtype()
        return np.dtype(self.numpy_name).newbyteorder("<")

    def __str__(self) -> str:
        return self.name


FP32 = DType("FP32", 1, 4, "float32", True)
INT8 = DType("INT8", 2, 1, "int8", True)
INT32 = DType("INT32", 3, 4, "int32", True)
FP16 = DType("FP16", 4, 2, "float16", False)
BF16 = DType("BF16", 5, 2, "bfloat16", False)
FP64 = DType("FP64", 6, 8, "float64", False)
INT16 = DType("INT16", 7, 2, "int16", False)
UINT8 = DType("UINT8", 8, 1, "uint8", False)

ALL: tuple[DType, ...] = (FP32, INT8, INT32, FP16, BF16, FP64, INT16, UINT8)
BY_CODE: dict[int, DType] = {d.code: d for d in ALL}
BY_NUMPY_NAME: dict[str, DType] = {d.numpy_name: d for d in ALL}
BY_NAME: dict[str, DType] = {d.name: d for d in ALL}
"""By the name every generation uses (``FP32``...; the codes differ per generation)."""
# BF16 has no NumPy type of its own: from_numpy finds it by name
_BY_NATIVE_DTYPE: dict[np.dtype[Any], DType] = {
    np.dtype(d.numpy_name): d for d in ALL if d is not BF16
}

SUPPORTED_HINT = (
    "TSR v1 stores float32, int8 and int32 (read by C++); float16, bfloat16, float64, "
    "int16 and uint8 are reserved codes, written only with reserved_dtypes=True and not "
    "readable by any C++ build"
)


def _bfloat16_dtype() -> np.dtype[Any]:
    try:
        import ml_dtypes  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise UnsupportedDTypeError(
            "BF16 has no NumPy dtype: install ml_dtypes, or load with tsr.torch.load",
            field="dtype",
            found=BF16.code,
        ) from None
    bf16: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
    return bf16


def from_code(code: int, *, reserved_dtypes: bool) -> DType:
    """The DType of a header code, or :class:`UnsupportedDTypeError`."""
    dt = BY_CODE.get(code)
    if dt is None:
        raise UnsupportedDTypeError(
            f"unknown dtype code {code}: expected 1 (FP32), 2 (INT8) or 3 (INT32), "
            "or a reserved code 4 to 8",
            field="dtype",
            found=code,
            expected="1, 2, 3 (or 4-8 with reserved_dtypes=True)",
        )
    if not dt.cpp_readable and not reserved_dtypes:
        raise UnsupportedDTypeError(
            f"dtype code {code} ({dt.name}) is a reserved code that no C++ build reads; "
            "pass reserved_dtypes=True to read it",
            field="dtype",
            found=code,
            expected="1, 2 or 3",
        )
    return dt


def from_numpy(dtype: np.dtype[Any], *, reserved_dtypes: bool) -> DType:
    """The DType to store a NumPy dtype as, or :class:`UnsupportedDTypeError`."""
    dt = _BY_NATIVE_DTYPE.get(dtype)  # the common case; dtype.name costs ~3 µs in NumPy 2
    if dt is not None:
        return require_opt_in(dt, dt.numpy_name, reserved_dtypes=reserved_dtypes)
    name = dtype.name
    dt = BY_NUMPY_NAME.get(name)
    if dt is None or dtype.kind not in "fiuV":
        fix = (
            "convert first, e.g. array.astype(numpy.float32), or pass dtype=numpy.float32"
            if dtype.kind in "fc"
            else "convert first, e.g. array.astype(numpy.int32), or pass dtype=numpy.int32"
        )
        raise UnsupportedDTypeError(
            f"cannot store dtype {name}: {SUPPORTED_HINT}; {fix}",
            field="dtype",
            found=name,
            expected="float32, int8 or int32",
        )
    return require_opt_in(dt, name, reserved_dtypes=reserved_dtypes)


def require_opt_in(dt: DType, found: str, *, reserved_dtypes: bool) -> DType:
    """``dt`` if it may be written: reserved codes need ``reserved_dtypes=True``."""
    if not dt.cpp_readable and not reserved_dtypes:
        raise UnsupportedDTypeError(
            f"dtype {found} is the reserved TSR code {dt.code} ({dt.name}), which no C++ "
            "build reads: pass reserved_dtypes=True to write it anyway, or convert to "
            "float32, int8 or int32 first",
            field="dtype",
            found=found,
            expected="float32, int8 or int32",
        )
    return dt
