"""The torch front end: ``tsr.torch.load``, ``load_all``, ``open``, ``save`` and ``save_all``.

Importing this module imports torch; ``import tsr`` alone never does. The functions are
those of :mod:`tsr` for every generation (``format=``, ``compression=``), with tensors:
saves go through the host from any device, loads place the tensor with ``device=``.
BF16 (TSR3; v1's reserved code with ``reserved_dtypes=True``) is native here, NumPy having
no bfloat16 of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from . import _api, _formats, _io, dtypes, header
from ._io import PathLike, Source
from ._model import BF16_BITS, Compression, TensorInfo
from .errors import BadArgumentError, UnsupportedDTypeError

__all__ = ["TorchFile", "load", "load_all", "open", "save", "save_all"]

_TORCH_TO_TSR: dict[torch.dtype, dtypes.DType] = {
    torch.float32: dtypes.FP32,
    torch.int8: dtypes.INT8,
    torch.int32: dtypes.INT32,
    torch.float16: dtypes.FP16,
    torch.bfloat16: dtypes.BF16,
    torch.float64: dtypes.FP64,
    torch.int16: dtypes.INT16,
    torch.uint8: dtypes.UINT8,
}


def _host(tensor: torch.Tensor) -> tuple[dtypes.DType, npt.NDArray[Any]]:
    if not isinstance(tensor, torch.Tensor):
        kind = type(tensor)
        raise BadArgumentError(
            f"expected a torch.Tensor, got {kind.__module__}.{kind.__qualname__}: "
            "tsr.torch saves tensors; use tsr.save for NumPy arrays, lists and other "
            "array-likes (or torch.as_tensor(x) first)",
            field="tensor",
            found=f"{kind.__module__}.{kind.__qualname__}",
            expected="torch.Tensor",
        )
    dt = _TORCH_TO_TSR.get(tensor.dtype)
    if dt is None:
        raise UnsupportedDTypeError(
            f"cannot store torch dtype {tensor.dtype}: {dtypes.SUPPORTED_HINT}; convert "
            "first, e.g. tensor.float() or tensor.to(torch.int32)",
            field="dtype",
            found=str(tensor.dtype),
            expected="torch.float32, torch.int8 or torch.int32",
        )
    host = tensor.detach().to("cpu")
    if dt is dtypes.BF16:
        return dt, host.view(torch.int16).numpy().view(BF16_BITS)  # the bits, tagged
    return dt, host.numpy()


def save(
    path: PathLike | bytes,
    tensor: torch.Tensor,
    *,
    format: str = "v1",
    compression: Compression = None,
    fsync: bool = False,
    reserved_dtypes: bool = False,
    follow_symlinks: bool = True,
) -> None:
    """Write ``tensor`` to ``path`` atomically (see :func:`tsr.save` for the paths,
    symlinks, permissions and errors).

    The tensor may live on any device (it is copied to the host) and may be
    non-contiguous; autograd history is ignored.
    """
    dt, arr = _host(tensor)
    if _formats.by_name(format).name == "v1" and compression is None:
        dtypes.require_opt_in(dt, str(tensor.dtype), reserved_dtypes=reserved_dtypes)
        if dt is dtypes.BF16:
            arr = arr.view(np.int16)
        head = header.encode(tuple(arr.shape), dt)
        _io.write_file(path, head, arr, fsync=fsync, follow_symlinks=follow_symlinks)
        return
    _api.save(path, arr, format=format, compression=compression, fsync=fsync,
              follow_symlinks=follow_symlinks)  # fmt: skip


def save_all(
    path: PathLike | bytes,
    tensors: Sequence[torch.Tensor],
    *,
    format: str = "v4",
    compression: Compression = None,
    fsync: bool = False,
    follow_symlinks: bool = True,
) -> None:
    """Write several tensors to one file (see :func:`tsr.save_all`)."""
    arrays = [_host(t)[1] for t in tensors]
    _api.save_all(path, arrays, format=format, compression=compression, fsync=fsync,
                  follow_symlinks=follow_symlinks)  # fmt: skip


def _tensor(name: str, arr: npt.NDArray[Any], target: torch.device) -> torch.Tensor:
    out = torch.from_numpy(arr)
    if name == "BF16":
        out = out.view(torch.bfloat16)
    return out if target.type == "cpu" else out.to(target)


def load(
    source: Source,
    *,
    device: str | torch.device = "cpu",
    mmap: bool = True,
    strict: bool = True,
    verify: bool = True,
    reserved_dtypes: bool = False,
) -> torch.Tensor:
    """Load a single-tensor file of any generation as a torch tensor on ``device``.

    With ``mmap=True`` a RAW CPU tensor shares a private copy-on-write map of the file: no
    payload byte is read until used (TSR3/TSR4: except by the CRC check, see
    ``verify`` in :func:`tsr.load`), and writing to the tensor never changes the file.
    ``mmap=False`` reads the payload into memory the tensor owns. For another device the
    payload is copied there. Errors are those of :func:`tsr.load`.
    """
    name, arr = _api.load_one(source, "c" if mmap else "copy", strict=strict, verify=verify,
                              reserved_dtypes=reserved_dtypes, bf16_bits=True)  # fmt: skip
    return _tensor(name, arr, torch.device(device))


def load_all(
    source: Source,
    *,
    device: str | torch.device = "cpu",
    mmap: bool = True,
    strict: bool = True,
    verify: bool = True,
    reserved_dtypes: bool = False,
) -> list[torch.Tensor]:
    """Every tensor of a file, in directory order, on ``device`` (see :func:`load`)."""
    with open(source, device=device, mmap=mmap, strict=strict, verify=verify,
              reserved_dtypes=reserved_dtypes) as f:  # fmt: skip
        return f.read_all()


class TorchFile(_api.OpenFile[torch.Tensor]):
    """One open TSR file of any generation (what :func:`open` returns): ``f[i]`` is tensor
    ``i`` as a torch tensor on the file's ``device``; ``.format``, ``.header``, ``len()``,
    ``.tensors`` and the rest as for :class:`tsr.TSRFile`."""

    def __init__(self, source: Source, *, device: str | torch.device, mmap: bool,
                 strict: bool, verify: bool, reserved_dtypes: bool) -> None:  # fmt: skip
        self.device = torch.device(device)
        super().__init__(source, mmap=mmap, strict=strict, verify=verify, writable=True,
                         reserved_dtypes=reserved_dtypes, bf16_bits=True)  # fmt: skip

    def _wrap(self, info: TensorInfo, array: npt.NDArray[Any]) -> torch.Tensor:
        return _tensor(info.dtype, array, self.device)


def open(
    source: Source,
    *,
    device: str | torch.device = "cpu",
    mmap: bool = True,
    strict: bool = True,
    verify: bool = True,
    reserved_dtypes: bool = False,
) -> TorchFile:
    """Open a TSR file of any generation, as :func:`tsr.open` does, ``f[i]`` giving torch
    tensors on ``device`` (a RAW CPU tensor shares a private copy-on-write map, as with
    :func:`load`); use it as a context manager. Options as for :func:`load`."""
    return TorchFile(source, device=device, mmap=mmap, strict=strict, verify=verify,
                     reserved_dtypes=reserved_dtypes)  # fmt: skip
