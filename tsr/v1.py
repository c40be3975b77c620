"""TSR v1 (magic ``TSR!``) as a generation of the neutral model: a thin adapter.

The v1 rules and codec stay where they are (:mod:`tsr._schema` declares the layout,
:mod:`tsr.header` the rules, :mod:`tsr._io` the fast reader and writer,
:mod:`tsr.validate` the C++ model); this module presents them through
:class:`tsr._model.Generation` so that ``tsr.open``/``load_all``/``save(format=...)`` and
the CLI handle v1 like any other generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy.typing as npt

from . import _schema, dtypes, header
from ._model import (
    Compression,
    Directory,
    Encoded,
    FormatName,
    Problem,
    ReadAt,
    TensorInfo,
    one_tensor,
)
from .errors import BadArgumentError, TruncatedError
from .validate import CppVerdict, cpp_verdict


class _V1:
    name: FormatName = "v1"
    magic = _schema.MAGIC
    head_size = _schema.HEADER_SIZE
    multi_tensor = False
    compressions: tuple[Compression, ...] = (None,)

    def parse(
        self, head: bytes, file_size: int, read_at: ReadAt, *, reserved_dtypes: bool = False
    ) -> Directory:
        if len(head) < header.HEADER_SIZE:
            p = Problem(TruncatedError, "header", 0, len(head), header.HEADER_SIZE,
                        f"truncated header: a TSR v1 file has at least {header.HEADER_SIZE} "
                        f"bytes, this one {file_size}")  # fmt: skip
            return Directory("v1", None, (), (p,))
        h = header.decode_raw(head)
        found = tuple(
            Problem(
                p.error, p.field, p.offset, p.found, p.expected, p.message, p.strict_only, p.warning
            )
            for p in header.problems(h, file_size, reserved_dtypes=reserved_dtypes)
        )
        if any(p.severity(strict=False) == "error" for p in found):
            return Directory("v1", h, (), found)
        dt = h.dtype
        info = TensorInfo(0, dt.name, h.shape, header.HEADER_SIZE, h.payload_size,
                          h.payload_size, None, None, dt.itemsize)  # fmt: skip
        return Directory("v1", h, (info,), found)

    def encode(self, arrays: Sequence[npt.NDArray[Any]], compression: Compression) -> Encoded:
        if compression is not None:
            raise BadArgumentError(
                f"compression {compression!r}: TSR v1 has no compression; use "
                "format='v3' or 'v4' for zlib",
                field="compression", found=compression, expected="None",
            )  # fmt: skip
        arr = one_tensor(arrays, "TSR v1")
        dt = dtypes.from_numpy(arr.dtype, reserved_dtypes=False)
        return Encoded(header.encode(arr.shape, dt), ((0, arr),))

    def cpp_verdicts(
        self, head: bytes, file_size: int, read_at: ReadAt, *, name: str = "<file>"
    ) -> tuple[CppVerdict]:
        return (cpp_verdict(head, file_size),)


GENERATION = _V1()
