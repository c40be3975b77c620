"""The registry of generations, detected from the 4-byte magic.

A new generation registers here by adding its ``GENERATION`` to :data:`GENERATIONS`.
"""

from __future__ import annotations

from . import v1, v3, v4
from ._model import Generation
from .errors import BadArgumentError

GENERATIONS: tuple[Generation, ...] = (v1.GENERATION, v3.GENERATION, v4.GENERATION)
BY_MAGIC: dict[bytes, Generation] = {g.magic: g for g in GENERATIONS}
BY_NAME: dict[str, Generation] = {g.name: g for g in GENERATIONS}
HEAD_SIZE = max(g.head_size for g in GENERATIONS)
"""Bytes read first from any file: enough for every generation's fixed header."""


def detect(head: bytes) -> Generation:
    """The generation of a file starting with ``head``. An unknown magic is judged as v1
    (the first generation), whose reader reports it with its own error."""
    return BY_MAGIC.get(head[:4], v1.GENERATION)


def by_name(name: str) -> Generation:
    """The generation for a ``format=`` value; raises with the valid values."""
    gen = BY_NAME.get(name)
    if gen is None:
        raise BadArgumentError(
            f"format {name!r}: expected one of {', '.join(repr(g) for g in BY_NAME)}",
            field="format", found=name, expected=list(BY_NAME),
        )  # fmt: skip
    return gen
