"""Fixed-size binary layouts derived from a :mod:`construct` schema.

Each generation of the format declares its header (and, for TSR4, its directory entry) once,
as a module-level ``construct.Struct`` of fixed-size fields. :class:`Layout` derives from
that declaration everything else needs: the total size, each field's offset and size
(:class:`FieldInfo`), the fast :mod:`struct` codec used on the hot path (construct parses
a 64-byte header in ~30 µs, :mod:`struct` in ~1 µs), the NumPy structured dtype that checks
a whole table of records at once (:meth:`Layout.numpy_dtype`, TSR4's directory), and the
Markdown field table of the normative spec (:meth:`Layout.spec_table`, which the test suite
compares with ``spec/``).

Supported field kinds: ``Const`` byte signatures, ``Bytes(n)`` (reserved areas, padding),
little-endian integers of 1, 2, 4 and 8 bytes (signed and unsigned), and fixed ``Array``\\s
of those integers. Anything else is refused when the layout is built, at import time.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import construct as cs
import numpy as np

_NUMPY: dict[str, str] = {
    "int8": "i1", "uint8": "u1", "int16": "<i2", "uint16": "<u2",
    "int32": "<i4", "uint32": "<u4", "int64": "<i8", "uint64": "<u8",
}  # fmt: skip

_INTS: dict[str, tuple[str, str]] = {
    # construct's format string -> (the spec's type name, struct code)
    "<b": ("int8", "b"),
    "<B": ("uint8", "B"),
    "<h": ("int16", "h"),
    "<H": ("uint16", "H"),
    "<l": ("int32", "i"),
    "<L": ("uint32", "I"),
    "<q": ("int64", "q"),
    "<Q": ("uint64", "Q"),
}


@dataclass(frozen=True)
class FieldInfo:
    """One field as the schema declares it."""

    name: str
    offset: int
    size: int
    count: int  # 1 for scalars and byte strings, n for an Array of n integers
    kind: str  # "bytes", or an integer type name such as "int32" or "uint64"
    doc: str

    @property
    def type_name(self) -> str:
        """The type as the specs' tables spell it (``int32``, ``int32×4``, ``bytes``)."""
        return self.kind if self.count == 1 else f"{self.kind}×{self.count}"


def _unwrap(con: Any) -> tuple[Any, str]:
    """Strip the Renamed wrappers that names and docstrings add; return (core, doc)."""
    doc = ""
    while isinstance(con, cs.Renamed):
        doc = doc or (con.docs or "")
        con = con.subcon
    return con, doc


def _describe(name: str, core: Any) -> tuple[int, str, str]:
    """(count, kind, struct code) of one field's core construct."""
    if isinstance(core, cs.Const):
        return 1, "bytes", f"{len(core.value)}s"
    if isinstance(core, cs.Bytes) and isinstance(core.length, int):
        return 1, "bytes", f"{core.length}s"
    if isinstance(core, cs.Array):
        inner, _ = _unwrap(core.subcon)
        count = core.count
        if not isinstance(count, int) or not isinstance(inner, cs.FormatField):
            raise TypeError(f"field {name!r}: only fixed arrays of integers are supported")
        _, kind, code = _describe(name, inner)
        return count, kind, f"{count}{code}"
    if isinstance(core, cs.FormatField) and core.fmtstr in _INTS:
        kind, code = _INTS[core.fmtstr]
        return 1, kind, code
    raise TypeError(f"field {name!r}: no fast-path mapping for {core!r}")


class Layout:
    """A fixed-size little-endian record declared by a ``construct.Struct``.

    ``unpack`` and ``pack`` go through :mod:`struct` and return/take a plain dict of raw
    field values (integers, ``bytes``, tuples for arrays); no rule is checked here.
    """

    __slots__ = ("by_name", "fast", "fields", "name", "schema", "size")

    def __init__(self, name: str, schema: cs.Struct) -> None:
        self.name = name
        self.schema = schema
        fields: list[FieldInfo] = []
        codes = ["<"]
        offset = 0
        for sub in schema.subcons:
            core, doc = _unwrap(sub)
            if sub.name is None:
                raise TypeError(f"{name}: every field must be named")
            count, kind, code = _describe(sub.name, core)
            size = sub.sizeof()
            fields.append(FieldInfo(sub.name, offset, size, count, kind, doc))
            codes.append(code)
            offset += size
        self.fields: tuple[FieldInfo, ...] = tuple(fields)
        self.fast = struct.Struct("".join(codes))
        self.size: int = schema.sizeof()
        if self.fast.size != self.size:
            raise AssertionError(f"{name}: schema and fast path disagree on the size")
        self.by_name: dict[str, FieldInfo] = {f.name: f for f in fields}

    def unpack(self, buffer: bytes | bytearray | memoryview, offset: int = 0) -> dict[str, Any]:
        """Decode the record at ``offset``; the caller guarantees :attr:`size` bytes."""
        flat = self.fast.unpack_from(buffer, offset)
        out: dict[str, Any] = {}
        i = 0
        for f in self.fields:
            if f.count == 1:
                out[f.name] = flat[i]
                i += 1
            else:
                out[f.name] = tuple(flat[i : i + f.count])
                i += f.count
        return out

    def pack(self, values: Mapping[str, Any]) -> bytes:
        """Encode raw field values (as :meth:`unpack` returns them)."""
        flat: list[Any] = []
        for f in self.fields:
            v = values[f.name]
            if f.count == 1:
                flat.append(v)
            else:
                flat.extend(v)
        return self.fast.pack(*flat)

    def numpy_dtype(self, *, signed64: bool = False) -> np.dtype[np.void]:
        """The record as a NumPy structured dtype (same offsets and size; byte fields as
        ``uint8`` arrays, integer arrays as sub-arrays), to check many records at once.

        ``signed64`` reads ``uint64`` fields as ``int64``: a value of ``2**63`` or more
        then reads negative, which a caller that requires them ``>= 0`` refuses, and the
        arithmetic stays in ``int64`` (NumPy mixes ``uint64`` and ``int64`` in float64).
        """
        names, formats, offsets = [], [], []
        for f in self.fields:
            if f.kind == "bytes":
                fmt: Any = ("u1", (f.size,))
            else:
                code = "<i8" if signed64 and f.kind == "uint64" else _NUMPY[f.kind]
                fmt = code if f.count == 1 else (code, (f.count,))
            names.append(f.name)
            formats.append(fmt)
            offsets.append(f.offset)
        return np.dtype(
            {"names": names, "formats": formats, "offsets": offsets, "itemsize": self.size}
        )

    def offset_of(self, name: str, index: int = 0) -> int:
        """Byte offset of field ``name`` (of element ``index`` of an array field)."""
        f = self.by_name[name]
        return f.offset + index * (f.size // f.count)

    def spec_table(self) -> str:
        """The field table of the normative spec, in Markdown, generated from the schema."""
        lines = [
            "| offset | size | field | type | meaning |",
            "|-------:|-----:|-------|------|---------|",
        ]
        for f in self.fields:
            lines.append(f"| {f.offset} | {f.size} | `{f.name}` | {f.type_name} | {f.doc} |")
        return "\n".join(lines)
