"""The torch front end: ``tsr.torch.save`` and ``tsr.torch.load``.

Importing this module imports torch; ``import tsr`` alone never does. Tensors on any
device are saved through the host; loads place the tensor with ``device=``. BF16 is
supported here natively (with ``reserved_dtypes=True``), NumPy having no bfloat16.
"""

from __future__ import annotations

import torch

from . import _io, dtypes, header
from ._io import PathLike, Source
from .errors import UnsupportedDTypeError

__all__ = ["load", "save"]

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


def save(
    path: PathLike,
    tensor: torch.Tensor,
    *,
    fsync: bool = False,
    reserved_dtypes: bool = False,
) -> None:
    """Write ``tensor`` to ``path`` as TSR v1, atomically (see :func:`tsr.save`).

    The tensor may live on any device (it is copied to the host) and may be
    non-contiguous; autograd history is ignored.
    """
    dt = _TORCH_TO_TSR.get(tensor.dtype)
    if dt is None:
        raise UnsupportedDTypeError(
            f"cannot store torch dtype {tensor.dtype}: {dtypes.SUPPORTED_HINT}; convert "
            "first, e.g. tensor.float() or tensor.to(torch.int32)",
            field="dtype",
            found=str(tensor.dtype),
            expected="torch.float32, torch.int8 or torch.int32",
        )
    dtypes.require_opt_in(dt, str(tensor.dtype), reserved_dtypes=reserved_dtypes)
    host = tensor.detach().to("cpu")
    if dt is dtypes.BF16:
        host = host.view(torch.int16)  # NumPy has no bfloat16: write the bits
    head = header.encode(tuple(host.shape), dt)
    _io.write_file(path, head, host.numpy(), fsync=fsync)


def load(
    source: Source,
    *,
    device: str | torch.device = "cpu",
    mmap: bool = True,
    strict: bool = True,
    reserved_dtypes: bool = False,
) -> torch.Tensor:
    """Load a TSR file as a torch tensor on ``device``.

    With ``mmap=True`` a CPU tensor shares a private copy-on-write map of the file: no
    payload byte is read until used, and writing to the tensor never changes the file.
    ``mmap=False`` reads the payload into memory the tensor owns. For another device the
    payload is copied there. Errors are those of :func:`tsr.load`.
    """
    target = torch.device(device)
    h, arr = _io.read(
        source,
        "c" if mmap else "copy",
        strict=strict,
        reserved_dtypes=reserved_dtypes,
        bf16_bits=True,
    )
    out = torch.from_numpy(arr)
    if h.dtype_code == dtypes.BF16.code:
        out = out.view(torch.bfloat16)
    return out if target.type == "cpu" else out.to(target)
