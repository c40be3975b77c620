"""The built-in commands: every command of the upstream worker, same names and semantics.

Text: ``hello`` and ``hi`` reply ``Hello <Params>`` / ``Hi <Params>`` with the params
title-cased (``"world"`` gives ``Hello World``). Two tensors: ``matmul`` (``torch.mm``,
2-D), ``add`` (``a + b``, broadcasting), and the convolutions ``conv_kK_sS_pP``
(``F.conv2d(input, weight, bias=None, stride=S, padding=P)``) and ``tconv_kK_sS_pP``
(``F.conv_transpose2d`` likewise, ``output_padding=0``: the name carries kernel, stride
and padding only, so ``tconv_k3_s2_p1`` maps H to 2H-1, as upstream). As upstream, the
kernel size is the weight's; ``K`` in the name is what the caller means. One tensor:
``zeros_like``, ``ones_like``, ``relu``, ``sign``, ``square``, ``sqrt``, ``abs``,
``negative``, ``reciprocal``, ``round`` (the ``torch`` function of that name) and
``transpose`` (dims 0 and 1). ``compare`` (two tags: a tensor, then its reference) replies
:meth:`tsr.Comparison.summary` of :func:`tsr.compare` with its default tolerances (text
starting ``ok`` or ``DIFFERENT``). ``tensor_square`` (framework V1.20) squares ``input.tsr``
into ``output.tsr`` and answers through ``status.txt`` = ``done``. ``exit`` is handled
by the worker loop itself.

Torch is imported inside the functions, so registering them costs nothing at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .registry import DEFAULT, command

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["CONVOLUTIONS", "TRANSPOSED_CONVOLUTIONS", "UNARY"]


@command("hello")
def hello(params: str) -> str:
    """``Hello <Params>``, params title-cased."""
    return f"Hello {params.title()}"


@command("hi")
def hi(params: str) -> str:
    """``Hi <Params>``, params title-cased."""
    return f"Hi {params.title()}"


@command("matmul", inputs=2)
def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``torch.mm(a, b)`` (both 2-D)."""
    import torch

    return torch.mm(a, b)


@command("add", inputs=2)
def add(a: Tensor, b: Tensor) -> Tensor:
    """``a + b`` with broadcasting."""
    return a + b


@command("transpose", inputs=1)
def transpose(x: Tensor) -> Tensor:
    """``torch.transpose(x, 0, 1)``."""
    import torch

    return torch.transpose(x, 0, 1)


@command("compare", inputs=2)
def compare(a: Tensor, reference: Tensor) -> str:
    """:func:`tsr.compare` of ``a`` against ``reference``, as one line of reply text."""
    import tsr

    return tsr.compare(a, reference).summary()


@command("tensor_square", inputs=("input",), outputs=("output",), answer="status")
def tensor_square(x: Tensor) -> Tensor:
    """``input.tsr`` squared into ``output.tsr``; answered by ``status.txt`` = ``done``."""
    import torch

    return torch.square(x)


UNARY = (
    "zeros_like",
    "ones_like",
    "relu",
    "sign",
    "square",
    "sqrt",
    "abs",
    "negative",
    "reciprocal",
    "round",
)
"""One-tensor commands that call the ``torch`` function of the same name."""

CONVOLUTIONS = {
    "conv_k3_s1_p0": (1, 0),
    "conv_k3_s1_p1": (1, 1),
    "conv_k3_s2_p1": (2, 1),
    "conv_k1_s1_p0": (1, 0),
    "conv_k1_s2_p0": (2, 0),
    "conv_k7_s2_p3": (2, 3),
}
"""``F.conv2d`` commands: name to (stride, padding); inputs are (input, weight)."""

TRANSPOSED_CONVOLUTIONS = {
    "tconv_k3_s1_p1": (1, 1),
    "tconv_k3_s2_p1": (2, 1),
}
"""``F.conv_transpose2d`` commands: name to (stride, padding); ``output_padding`` 0."""


def _unary(op: str) -> Callable[[Tensor], Tensor]:
    def run(x: Tensor) -> Tensor:
        import torch

        fn: Callable[[Tensor], Tensor] = getattr(torch, op)
        return fn(x)

    run.__name__ = run.__qualname__ = op
    run.__doc__ = f"``torch.{op}(x)``."
    return run


def _conv(stride: int, padding: int) -> Callable[[Tensor, Tensor], Tensor]:
    def run(x: Tensor, weight: Tensor) -> Tensor:
        from torch.nn import functional

        return functional.conv2d(x, weight, bias=None, stride=stride, padding=padding)

    return run


def _tconv(stride: int, padding: int) -> Callable[[Tensor, Tensor], Tensor]:
    def run(x: Tensor, weight: Tensor) -> Tensor:
        from torch.nn import functional

        return functional.conv_transpose2d(
            x, weight, bias=None, stride=stride, padding=padding, output_padding=0
        )

    return run


for _op in UNARY:
    DEFAULT.command(_op, inputs=1)(_unary(_op))
for _name, (_s, _p) in CONVOLUTIONS.items():
    DEFAULT.command(_name, inputs=2)(_conv(_s, _p))
for _name, (_s, _p) in TRANSPOSED_CONVOLUTIONS.items():
    DEFAULT.command(_name, inputs=2)(_tconv(_s, _p))
