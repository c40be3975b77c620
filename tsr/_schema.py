"""The TSR v1 header layout: the one place it is written down.

``HEADER`` is a declarative :mod:`construct` schema of the 64-byte header. Everything else
that needs the layout derives from it at import time: the header size, each field's offset
and size (:data:`FIELDS`), the fast :mod:`struct` codec used on the hot path
(:data:`FAST`), and the field table of ``spec/tsr-v1.md`` (:func:`spec_table`, checked by
the test suite).

The schema describes layout only. The rules a header must obey (which magic, which codes,
how dims and ``total_elements`` relate) live in :mod:`tsr.header`, which reports them with
field names and offsets taken from here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import construct as cs

MAGIC = b"TSR!"
VERSION = 1
MAX_NDIM = 4

HEADER = cs.Struct(
    "magic" / cs.Const(MAGIC) * "file signature, the ASCII bytes `TSR!`",
    "version" / cs.Int32sl * "format version; 1 for this specification",
    "header_size" / cs.Int32sl * "size of the header in bytes; 64",
    "reserved_1" / cs.Int32sl * "reserved; 0",
    "dtype" / cs.Int32sl * "element type code (see Data types)",
    "ndim" / cs.Int32sl * "number of logical dimensions, 0 to 4",
    "dims" / cs.Array(MAX_NDIM, cs.Int32sl) * "N, C, H, W: the shape, right-aligned, unused 1",
    "total_elements" / cs.Int64sl * "number of elements: the product of the four dims",
    "reserved_2" / cs.Int64sl * "reserved; 0",
    "reserved_3" / cs.Int64sl * "reserved; 0",
)
"""The 64-byte TSR v1 header. All integers little-endian two's complement."""


@dataclass(frozen=True)
class FieldInfo:
    """One header field as the schema declares it."""

    name: str
    offset: int
    size: int
    count: int  # 1 for scalars, 4 for dims
    kind: str  # "bytes", "int32" or "int64"
    doc: str

    @property
    def type_name(self) -> str:
        """The type as the spec's table spells it (``int32``, ``int32×4``, ``bytes``)."""
        return self.kind if self.count == 1 else f"{self.kind}×{self.count}"


def _unwrap(con: Any) -> tuple[Any, str]:
    """Strip the Renamed wrappers that names and docstrings add; return (core, doc)."""
    doc = ""
    while isinstance(con, cs.Renamed):
        doc = doc or (con.docs or "")
        con = con.subcon
    return con, doc


_KINDS = {"<l": ("int32", "i"), "<q": ("int64", "q")}


def _describe(name: str, core: Any) -> tuple[int, str, str]:
    """(count, kind, struct code) of one field's core construct."""
    if isinstance(core, cs.Const):
        return 1, "bytes", f"{len(core.value)}s"
    if isinstance(core, cs.Array):
        inner, _ = _unwrap(core.subcon)
        count = core.count
        assert isinstance(count, int)
        _, kind, code = _describe(name, inner)
        return count, kind, f"{count}{code}"
    if isinstance(core, cs.FormatField) and core.fmtstr in _KINDS:
        kind, code = _KINDS[core.fmtstr]
        return 1, kind, code
    raise TypeError(f"header field {name!r}: no fast-path mapping for {core!r}")


def _derive() -> tuple[tuple[FieldInfo, ...], struct.Struct]:
    fields: list[FieldInfo] = []
    codes = ["<"]
    offset = 0
    for sub in HEADER.subcons:
        core, doc = _unwrap(sub)
        assert sub.name is not None
        count, kind, code = _describe(sub.name, core)
        size = sub.sizeof()
        fields.append(FieldInfo(sub.name, offset, size, count, kind, doc))
        codes.append(code)
        offset += size
    return tuple(fields), struct.Struct("".join(codes))


FIELDS, FAST = _derive()
HEADER_SIZE: int = HEADER.sizeof()
FIELD_BY_NAME = {f.name: f for f in FIELDS}
assert FAST.size == HEADER_SIZE == 64, "schema and fast path disagree on the header size"

RawFields = tuple[Any, ...]
"""The flat tuple :data:`FAST` unpacks: magic, version, ..., dims[0..3], ..., reserved_3."""


def unpack(buffer: bytes | bytearray | memoryview, offset: int = 0) -> dict[str, Any]:
    """Decode the 64 header bytes at ``offset`` into a dict of raw field values.

    No rule is checked here (a wrong magic is returned as found). ``dims`` is a tuple.
    The caller guarantees at least :data:`HEADER_SIZE` bytes.
    """
    flat = FAST.unpack_from(buffer, offset)
    out: dict[str, Any] = {}
    i = 0
    for f in FIELDS:
        if f.count == 1:
            out[f.name] = flat[i]
        else:
            out[f.name] = tuple(flat[i : i + f.count])
        i += f.count
    return out


def pack(values: dict[str, Any]) -> bytes:
    """Encode raw field values (as :func:`unpack` returns them) into 64 bytes."""
    flat: list[Any] = []
    for f in FIELDS:
        v = values[f.name]
        if f.count == 1:
            flat.append(v)
        else:
            flat.extend(v)
    return FAST.pack(*flat)


def spec_table() -> str:
    """The spec's header table, in Markdown, generated from the schema."""
    lines = [
        "| offset | size | field | type | meaning |",
        "|-------:|-----:|-------|------|---------|",
    ]
    for f in FIELDS:
        lines.append(f"| {f.offset} | {f.size} | `{f.name}` | {f.type_name} | {f.doc} |")
    return "\n".join(lines)
