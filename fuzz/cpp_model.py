"""An independent model of the C++ framework's ``CpuBackend::import_tensor``.

Written from ``/work/shared/brief/tsr-v1-format.md`` and the interop kit's
``tests/interop/cpp/tr_tensor.hpp`` (which models the framework, quirks included), not from
:mod:`tsr.validate`: the fuzz harness compares ``tsr.validate``'s ``cpp`` verdict with it.

The reader runs its checks in this order, in wrapping int64 arithmetic: file too small,
magic, version, dtype (1, 2, 3), ndim (0..4), element count (product of all four dims),
negative dims, exact file size (64 + total_elements * element_size). Then it builds a
``Shape`` from the last ``ndim`` dims (``Shape(0)`` silently becomes a scalar; a zero or
negative dim otherwise throws, and so does a running int64 product of its dims above
``INT64_MAX / 1000``: "Shape dimensions are too large"), allocates
``numel * element_size`` bytes (wrapping; zero throws "Cannot allocate zero bytes") and
reads that many bytes from offset 64 (a short read throws).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER_SIZE = 64
_LAYOUT = struct.Struct("<4siiiii4iqqq")
_ITEMSIZE = {1: 4, 2: 1, 3: 4}
_U64 = 1 << 64
SHAPE_PRODUCT_MAX = (2**63 - 1) // 1000  # Shape::validate_dims, after each dim


def wrap64(value: int) -> int:
    """``value`` as a two's complement int64 (what C++ arithmetic on int64 gives)."""
    value %= _U64
    return value - _U64 if value >= 1 << 63 else value


@dataclass(frozen=True)
class CppResult:
    """What the model of ``import_tensor`` does with one file."""

    accepts: bool
    check: str | None
    """Same names as :class:`tsr.CppVerdict`: ``file_too_small``, ``magic``, ``version``,
    ``dtype``, ``ndim``, ``element_count``, ``dimension``, ``file_size`` or ``allocation``
    (anything after the size check: Shape, allocation or the payload read)."""
    shape: tuple[int, ...] | None = None
    """The logical shape of the tensor C++ builds, when it accepts."""
    payload_bytes: int = 0
    """Bytes C++ reads from offset 64, when it accepts."""
    different_tensor: bool = False
    """C++ accepts but its tensor is not the one the header declares: it reads fewer
    bytes than the payload, or the shape's true element count differs from
    ``total_elements`` (int64 wrap-around: storage smaller than the shape)."""


def import_tensor(head: bytes, file_size: int) -> CppResult:
    """Simulate ``import_tensor`` on a file of ``file_size`` bytes starting with ``head``."""
    if file_size < HEADER_SIZE or len(head) < HEADER_SIZE:
        return CppResult(False, "file_too_small")
    magic, version, _hsize, _r1, dtype, ndim, d0, d1, d2, d3, total, _r2, _r3 = _LAYOUT.unpack_from(
        head
    )
    if magic != b"TSR!":
        return CppResult(False, "magic")
    if version != 1:
        return CppResult(False, "version")
    if dtype not in _ITEMSIZE:
        return CppResult(False, "dtype")
    if not 0 <= ndim <= 4:
        return CppResult(False, "ndim")
    dims = (d0, d1, d2, d3)
    computed = 1
    for d in dims:
        computed = wrap64(computed * d)
    if total != computed:
        return CppResult(False, "element_count")
    if any(d < 0 for d in dims):
        return CppResult(False, "dimension")
    itemsize = _ITEMSIZE[dtype]
    if file_size != wrap64(HEADER_SIZE + wrap64(total * itemsize)):
        return CppResult(False, "file_size")
    logical = dims[4 - ndim :]
    if ndim == 1 and logical[0] == 0:
        logical = ()  # Shape(0) is a scalar
    elif any(d <= 0 for d in logical):
        return CppResult(False, "allocation")  # "[Shape] Dimension must be positive"
    numel = 1
    for d in logical:
        numel = wrap64(numel * d)
        if numel > SHAPE_PRODUCT_MAX:
            return CppResult(False, "allocation")  # "Shape dimensions are too large"
    nbytes = wrap64(numel * itemsize)
    if nbytes == 0:
        return CppResult(False, "allocation")  # "Cannot allocate zero bytes"
    if nbytes < 0 or nbytes > file_size - HEADER_SIZE:
        return CppResult(False, "allocation")  # allocation failure or short read
    exact = 1
    for d in logical:
        exact *= d
    different = nbytes != file_size - HEADER_SIZE or exact != total
    return CppResult(True, None, tuple(logical), nbytes, different)
