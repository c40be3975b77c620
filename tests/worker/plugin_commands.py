"""Commands added by the tests through ``tsr-worker --commands plugin_commands.py``.

They also show the extension mechanism end to end: a decorated function is all it takes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tsr_worker import command

if TYPE_CHECKING:
    from torch import Tensor


@command("split_sign", inputs=1)
def split_sign(x: Tensor) -> tuple[Tensor, Tensor]:
    """Two results: the positive and the negative part (answered ``r0,r1``)."""
    return x.clamp(min=0), x.clamp(max=0)


@command("minmax", inputs=1, outputs=("lo", "hi"))
def minmax(x: Tensor) -> list[Tensor]:
    """Two results under named tags."""
    return [x.min().reshape(1), x.max().reshape(1)]


@command("as_double", inputs=1)
def as_double(x: Tensor) -> Tensor:
    """A result TSR v1 cannot hold for C++ (float64): answered bad_result."""
    return x.double()


@command("not_a_tensor", inputs=1)
def not_a_tensor(x: Tensor) -> object:
    """Returns something else than tensors."""
    return {"shape": list(x.shape)}


@command("nap")
def nap(params: str) -> str:
    """Sleeps ``params`` seconds, then replies ``slept``."""
    time.sleep(float(params))
    return "slept"


@command("fail")
def fail(params: str) -> str:
    """Always raises."""
    raise RuntimeError(f"asked to fail: {params}")


@command("sparse_result", inputs=1)
def sparse_result(x: Tensor) -> Tensor:
    """A sparse result: the codec cannot store it (``.numpy()`` raises TypeError)."""
    return x.to_sparse()


@command("meta_result", inputs=1)
def meta_result(x: Tensor) -> Tensor:
    """A result with no data at all (a meta tensor)."""
    import torch

    return torch.empty(x.shape, device="meta")


@command("interrupt")
def interrupt(params: str) -> str:
    """Raises KeyboardInterrupt, as a command interrupted by hand would."""
    raise KeyboardInterrupt(params)


@command("sys_exit")
def sys_exit(params: str) -> str:
    """Calls sys.exit()."""
    import sys

    sys.exit(3)


@command("huge", inputs=1)
def huge(x: Tensor) -> Tensor:
    """Asks torch for 4 PiB (the CPU allocator refuses: RuntimeError, out of memory)."""
    import torch

    return torch.empty(1 << 50, dtype=torch.uint8)


@command("no_memory")
def no_memory(params: str) -> str:
    """Raises MemoryError."""
    raise MemoryError
