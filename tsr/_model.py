"""The generation-neutral model of a TSR file, and what a generation module implements.

The framework wrote three generations of ``.tsr`` files, told apart by their 4-byte magic:
``TSR!`` (v1, :mod:`tsr.v1`), ``TSR3`` (:mod:`tsr.v3`) and ``TSR4`` (:mod:`tsr.v4`).
Everything above the generation modules (``tsr.load``/``open``/``save``/``validate``, the
torch front end, the CLI) sees a file only through this model and a ``format`` value
(``"v1"``, ``"v3"``, ``"v4"``):

- :class:`TensorInfo`: one stored tensor (dtype, shape, where its block is, how big it is
  stored and uncompressed, its compression and CRC-32), read from the header or directory
  alone, without touching any payload.
- :class:`Problem`: one rule the file breaks, with its field, absolute byte offset, found
  and expected values, the :class:`tsr.TSRError` subclass a reader raises for it, and its
  severity: ``strict_only`` problems (what the C++ importer ignores and that harms nothing)
  are errors for strict reads and warnings otherwise; ``warning`` problems never fail a
  read. The reader raises the first error; :func:`tsr.validate` reports them all; both
  come from the same list, so they cannot disagree.
- :class:`Directory`: what a generation's ``parse`` returns: the decoded header (the
  generation's own frozen dataclass), the tensors it declares and the problems found.

A generation is an object satisfying :class:`Generation` (each module exposes one as
``GENERATION``), registered in :mod:`tsr._formats` by its magic:

- ``parse(head, file_size, read_at, reserved_dtypes=False)``: the header (and directory)
  from the first ``head_size`` bytes of the file, the file size, and ``read_at(offset, n)`` for any
  further header bytes it needs (TSR4's directory), which it MUST size-check against
  ``file_size`` before calling. Never raises for bad content: every rule broken is a
  :class:`Problem`. Never reads a payload.
- The payloads are read by the shared :mod:`tsr._blocks` from the :class:`TensorInfo`
  alone, for every generation: RAW blocks mapped (zero-copy) or copied, ZLIB blocks
  inflated in bounded steps never past ``nbytes``, sizes and CRC-32 checked.
- ``encode(arrays, compression)``: the bytes of a file holding ``arrays``, as
  :class:`Encoded` (header bytes, then per tensor its padding and its block), exactly as
  the framework's C++ writer lays them out; refuses what the format cannot hold with
  :class:`tsr.BadArgumentError` / :class:`tsr.UnsupportedDTypeError` naming the fix.
- ``cpp_verdicts(head, file_size, read_at, name=...)``: what each path of that generation's C++
  importer does with the file (:class:`tsr.validate.CppVerdict`, the default path first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from . import dtypes
from .errors import BadArgumentError, TSRError

if TYPE_CHECKING:
    from .validate import CppVerdict

Compression = Literal["zlib"] | None
FormatName = Literal["v1", "v3", "v4"]
ReadAt = Callable[[int, int], bytes]
"""``read_at(offset, n)``: ``n`` bytes of the file from ``offset`` (fewer at its end)."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a file as its header or directory declares it (no payload read)."""

    index: int
    """Position in the file's directory (0 for single-tensor generations)."""
    dtype: str
    """The element type as the format names it: ``FP32``, ``FP16``, ``BF16``, ``INT8``,
    ``INT32``."""
    shape: tuple[int, ...]
    """The shape :func:`tsr.load` returns (TSR4: always the stored 4-D NHWC shape)."""
    offset: int
    """Absolute byte offset of the stored block."""
    stored_size: int
    """Bytes the block occupies in the file (the compressed length for ZLIB)."""
    nbytes: int
    """Uncompressed bytes: ``numel * itemsize``."""
    compression: Compression
    """``None`` (RAW: the bytes on disk are the array) or ``"zlib"`` (one zlib stream)."""
    crc32: int | None
    """The stored CRC-32 of the uncompressed bytes; ``None`` where the format has none."""
    itemsize: int

    @property
    def numel(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        """The little-endian NumPy dtype (BF16 needs ``ml_dtypes``; the error says so)."""
        return dtypes.BY_NAME[self.dtype].numpy

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "index": self.index,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "offset": self.offset,
            "stored_size": self.stored_size,
            "nbytes": self.nbytes,
            "compression": self.compression,
            "crc32": self.crc32,
        }


@dataclass(frozen=True)
class Problem:
    """One rule a file breaks (see the module docstring for the severities)."""

    error: type[TSRError]
    field: str
    offset: int
    found: Any
    expected: Any
    message: str
    strict_only: bool = False
    warning: bool = False

    def severity(self, strict: bool) -> Literal["error", "warning"]:
        """``error`` if it makes a read with this ``strict`` fail, else ``warning``."""
        return "warning" if self.warning or (self.strict_only and not strict) else "error"

    def exception(self) -> TSRError:
        """The exception the reader raises for it."""
        return self.error(
            self.message,
            field=self.field,
            offset=self.offset,
            found=self.found,
            expected=self.expected,
        )


@dataclass(frozen=True)
class Directory:
    """A parsed header (and directory): what ``Generation.parse`` returns."""

    format: FormatName
    header: Any
    """The generation's own frozen header dataclass (None if too short to decode)."""
    tensors: tuple[TensorInfo, ...]
    """The tensors whose declarations make sense (empty when the header does not)."""
    problems: tuple[Problem, ...]

    def first_error(self, strict: bool) -> Problem | None:
        """The problem a read with this ``strict`` raises, if any."""
        for p in self.problems:
            if p.severity(strict) == "error":
                return p
        return None


HeadFor = Callable[[Sequence[int]], bytes]
"""The head of a file from the CRC-32 of each of its blocks, in order."""


@dataclass(frozen=True)
class Encoded:
    """A whole file as its writer lays it out: ``head``, then for each tensor its zero
    padding and its block (an array written in C order, little-endian, or bytes)."""

    head: bytes
    blocks: tuple[tuple[int, npt.NDArray[Any] | bytes | memoryview], ...]
    """(zero bytes before the block, the block: its bytes, or an array written as its
    C-order little-endian bytes)."""
    head_for: HeadFor | None = None
    """Set when the head holds the blocks' CRC-32s and ``head`` is zeros of its length
    (RAW TSR3/TSR4): the real head from those CRC-32s, which the writer computes on a
    thread while it writes the blocks (:func:`tsr._blocks.write_encoded`)."""

    @property
    def size(self) -> int:
        """Total file size in bytes."""
        n = len(self.head)
        for pad, block in self.blocks:
            n += pad + (block.nbytes if isinstance(block, (np.ndarray, memoryview)) else len(block))
        return n


def one_tensor(arrays: Sequence[npt.NDArray[Any]], label: str) -> npt.NDArray[Any]:
    """The one array a single-tensor generation (``label``: ``TSR v1``, ``TSR3``) stores,
    or :class:`tsr.BadArgumentError` with the way out."""
    if len(arrays) != 1:
        raise BadArgumentError(
            f"{label} holds exactly one tensor, got {len(arrays)}: save each to its own "
            "file, or use format='v4' for several in one",
            field="arrays", found=len(arrays), expected=1,
        )  # fmt: skip
    return arrays[0]


INT32_MAX = 2**31 - 1
MAX_RANK = 4


def check_shape(shape: tuple[int, ...], label: str, *, rank_field: str, dims_field: str,
                names: str = "", rank_note: str = "", zero_note: str) -> None:  # fmt: skip
    """Refuse, with the fix, a shape that a 4-D generation (``label``: ``TSR3``, ``TSR4``)
    cannot store: rank above 4, a zero-size dim, a dim over the int32 the header holds.
    ``names`` names the dims (``" (N, H, W, C)"``), ``rank_note`` and ``zero_note`` say
    what the C++ writer would do instead; ``rank_field``/``dims_field`` are the header
    fields the errors name."""
    if len(shape) > MAX_RANK:
        raise BadArgumentError(
            f"shape {shape} has rank {len(shape)}: {label} stores at most {MAX_RANK} dims"
            f"{names}; reshape first{rank_note}",
            field=rank_field, found=len(shape), expected=f"rank <= {MAX_RANK}",
        )  # fmt: skip
    for i, d in enumerate(shape):
        if d == 0:
            raise BadArgumentError(
                f"shape {shape} has a zero-size dim {i}: {label} cannot store an empty "
                f"tensor ({zero_note})",
                field=dims_field, found=shape, expected="every dim >= 1",
            )  # fmt: skip
        if d > INT32_MAX:
            raise BadArgumentError(
                f"shape {shape}: dim {i} is {d}, over {INT32_MAX}, the int32 a {label} dim "
                "holds; reshape first",
                field=dims_field, found=d, expected=f"<= {INT32_MAX}",
            )  # fmt: skip


BF16_BITS = np.dtype("<u2", metadata={"tsr": "BF16"})
"""uint16 tagged as bfloat16 bit patterns: how a front end without a NumPy bfloat16 type
(torch, NumPy without ``ml_dtypes``) hands BF16 data to ``encode`` (``arr.view(BF16_BITS)``,
no copy)."""


def is_bf16(dtype: np.dtype[Any]) -> bool:
    """Whether ``dtype`` is bfloat16: ``ml_dtypes.bfloat16`` or :data:`BF16_BITS`."""
    meta = dtype.metadata
    return dtype.name == "bfloat16" or (meta is not None and meta.get("tsr") == "BF16")


class Generation(Protocol):
    """What a generation module provides (see the module docstring)."""

    name: FormatName
    magic: bytes
    head_size: int
    """Bytes ``parse`` needs from the start of the file (its fixed header)."""
    multi_tensor: bool
    compressions: tuple[Compression, ...]
    """The compressions ``encode`` can write."""

    def parse(
        self, head: bytes, file_size: int, read_at: ReadAt, *, reserved_dtypes: bool = False
    ) -> Directory: ...

    def encode(self, arrays: Sequence[npt.NDArray[Any]], compression: Compression) -> Encoded: ...

    def cpp_verdicts(
        self, head: bytes, file_size: int, read_at: ReadAt, *, name: str = "<file>"
    ) -> tuple[CppVerdict, ...]: ...
