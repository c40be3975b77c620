"""The tensors of a path, array or torch tensor, read lazily, and their values in chunks.

The verification tools (:mod:`tsr.verify`, :mod:`tsr.show`, the CLI's ``compare``,
``info --stats`` and ``show``) reach data only through this module: :func:`tensors_of`,
:func:`one_tensor` and :func:`count` are the one place that opens files (``tsr.open``
for TSR of every generation, RAW payloads memory-mapped; ``.npy`` memory-mapped too), and
:func:`chunks` walks a tensor's values in bounded pieces, so that a reduction over a file
of any size needs a few chunks of memory, never a copy of the file. (A ZLIB payload is
inflated into memory, one tensor at a time: it cannot be mapped.)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard, TypeVar, Union

import numpy as np
import numpy.typing as npt

from . import dtypes
from .errors import BadArgumentError

Layout = Literal["NCHW", "NHWC"]
Input = Union[str, "os.PathLike[str]", npt.ArrayLike, Any]
"""What the tools accept: a path (``.tsr`` of any generation, ``.npy``), a NumPy array
(or anything :func:`numpy.asarray` takes) or a torch tensor."""

CHUNK_ELEMENTS = 1 << 16
"""Elements per chunk of a streamed reduction (64 Ki: 512 KiB per float64 temporary)."""

BFLOAT16 = "bfloat16"
T = TypeVar("T")


@dataclass(frozen=True)
class Tensor:
    """One tensor to inspect: its values (not yet read), how to name it, its layout."""

    name: str
    """The path (with ``[i]`` for one tensor of a multi-tensor file) or ``array``."""
    data: npt.NDArray[Any]
    """The values, usually a read-only memory map; BF16 as its ``uint16`` bit patterns."""
    dtype: str
    """NumPy's name of the element type (``bfloat16`` for BF16)."""
    layout: Layout
    """How a 4-D shape reads: ``NCHW`` (TSR v1, ``.npy``, arrays) or ``NHWC`` (TSR v3/v4)."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def is_float(self) -> bool:
        return self.dtype == BFLOAT16 or self.data.dtype.kind == "f"


def is_path(x: object) -> TypeGuard[str | os.PathLike[str]]:
    return isinstance(x, (str, os.PathLike))


def _open(path: str) -> Any:
    from . import _api

    # every generation; RAW payloads memory-mapped (their CRC checked), BF16 as raw bits
    return _api.TSRFile(path, mmap=True, strict=False, verify=True, reserved_dtypes=True,
                        bf16_bits=True)  # fmt: skip


def _tensor(f: Any, i: int, name: str) -> Tensor:
    dtype = dtypes.BY_NAME[f.tensors[i].dtype].numpy_name
    arr = f[i]
    data = arr.view(np.uint16) if dtype == BFLOAT16 else arr
    return Tensor(name, data, dtype, "NCHW" if f.format == "v1" else "NHWC")


def tensors_of(path: str | os.PathLike[str]) -> list[Tensor]:
    """Every tensor of a file, in file order (RAW ones memory-mapped, not yet read).

    ``.npy`` files are NumPy's; anything else is TSR of any generation. Tensors of a
    multi-tensor file are named ``path[i]``.
    """
    name = os.fspath(path)
    if name.lower().endswith(".npy"):
        return [_npy(name)]
    with _open(name) as f:
        n = len(f)
        return [_tensor(f, i, name if n == 1 else f"{name}[{i}]") for i in range(n)]


def count(path: str | os.PathLike[str]) -> int:
    """How many tensors the file holds (its directory only is read)."""
    name = os.fspath(path)
    if name.lower().endswith(".npy"):
        return 1
    with _open(name) as f:
        return len(f)


def _npy(path: str) -> Tensor:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError:  # NumPy cannot map an empty array, nor some odd headers
        arr = np.load(path, allow_pickle=False)
    return from_array(arr, path)


def one_tensor(x: Input, *, index: int | None = None, what: str = "input") -> Tensor:
    """The tensor of ``x``: a path's tensor number ``index`` (needed only when the file
    holds several; only that one is read), an array or a torch tensor."""
    if isinstance(x, Tensor):
        return x
    if not is_path(x):
        if index is not None:
            raise BadArgumentError(f"{what}: index={index} applies to files only")
        return from_object(x, what)
    name = os.fspath(x)
    if name.lower().endswith(".npy"):
        return _pick([_npy(name)], name, index)[0]
    with _open(name) as f:
        n = len(f)
        i = _pick(range(n), name, index)[0]
        return _tensor(f, i, name if n == 1 else f"{name}[{i}]")


def _pick(items: Sequence[T], name: str, index: int | None) -> list[T]:
    n = len(items)
    expected = f"0 to {n - 1}"
    if index is None:
        if n != 1:
            raise BadArgumentError(
                f"{name} holds {n} tensors: choose one by index ({expected})",
                field="index", found=None, expected=expected,
            )  # fmt: skip
        return [items[0]]
    if not 0 <= index < n:
        raise BadArgumentError(
            f"{name} holds {n} tensor(s): index {index} is out of range ({expected})",
            field="index", found=index, expected=expected,
        )  # fmt: skip
    return [items[index]]


def from_object(x: object, name: str = "array") -> Tensor:
    """A torch tensor (read through its NumPy view, BF16 as bits) or anything NumPy takes."""
    torch = sys.modules.get("torch")  # never imported here: present if x is a tensor
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:
            return Tensor(name, t.view(torch.int16).numpy().view(np.uint16), BFLOAT16, "NCHW")
        return from_array(t.numpy(), name)
    return from_array(np.asarray(x), name)


def from_array(arr: npt.NDArray[Any], name: str = "array") -> Tensor:
    kind = arr.dtype.kind
    if arr.dtype.name == BFLOAT16:  # an ml_dtypes array
        return Tensor(name, arr.view(np.uint16), BFLOAT16, "NCHW")
    if kind not in "biuf":
        raise BadArgumentError(
            f"{name}: cannot compare or summarise dtype {arr.dtype}: expected a real "
            "number type (float, int, uint or bool)",
            field="dtype",
            found=str(arr.dtype),
            expected="a real number type",
        )
    return Tensor(name, arr, arr.dtype.name, "NCHW")


def chunks(t: Tensor, start: int = 0, stop: int | None = None) -> Iterator[npt.NDArray[Any]]:
    """The values of ``t`` in C order, as flat raw chunks of at most :data:`CHUNK_ELEMENTS`."""
    end = t.size if stop is None else stop
    data = t.data
    flat = data.reshape(-1) if data.flags.c_contiguous else None
    step = CHUNK_ELEMENTS
    for i in range(start, end, step):
        j = min(i + step, end)
        yield flat[i:j] if flat is not None else data.flat[i:j]


def as_float(raw: npt.NDArray[Any], dtype: str, to: npt.DTypeLike = np.float64) -> npt.NDArray[Any]:
    """A raw chunk's values as ``to`` (float64 by default); BF16 bits are widened exactly."""
    with np.errstate(invalid="ignore"):  # a signalling NaN stays a NaN, unwarned
        if dtype == BFLOAT16:
            return (raw.astype(np.uint32) << 16).view(np.float32).astype(to, copy=False)
        return raw.astype(to, copy=False)


def floats(t: Tensor) -> Iterator[npt.NDArray[np.float64]]:
    """The values of ``t`` in C order, as float64 chunks."""
    for raw in chunks(t):
        yield as_float(raw, t.dtype)
