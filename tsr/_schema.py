"""The TSR v1 header layout: the one place it is written down.

``HEADER`` is a declarative :mod:`construct` schema of the 64-byte header. Everything else
that needs the layout derives from it at import time: the header size, each field's offset
and size (:data:`FIELDS`), the fast :mod:`struct` codec used on the hot path
(:data:`FAST`), and the field table of ``spec/tsr-v1.md`` (:func:`spec_table`, checked by
the test suite), all through the shared :class:`tsr._layout.Layout`.

The schema describes layout only. The rules a header must obey (which magic, which codes,
how dims and ``total_elements`` relate) live in :mod:`tsr.header`, which reports them with
field names and offsets taken from here.
"""

from __future__ import annotations

from typing import Any

import construct as cs

from ._layout import FieldInfo, Layout

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


_LAYOUT = Layout("TSR v1 header", HEADER)
FIELDS: tuple[FieldInfo, ...] = _LAYOUT.fields
FAST = _LAYOUT.fast
HEADER_SIZE: int = _LAYOUT.size
FIELD_BY_NAME = _LAYOUT.by_name
assert FAST.size == HEADER_SIZE == 64, "schema and fast path disagree on the header size"

RawFields = tuple[Any, ...]
"""The flat tuple :data:`FAST` unpacks: magic, version, ..., dims[0..3], ..., reserved_3."""


unpack = _LAYOUT.unpack
"""Decode the 64 header bytes at ``offset`` into a dict of raw field values (no rule is
checked: a wrong magic is returned as found; ``dims`` is a tuple)."""

pack = _LAYOUT.pack
"""Encode raw field values (as :func:`unpack` returns them) into 64 bytes."""

spec_table = _LAYOUT.spec_table
"""The spec's header table, in Markdown, generated from the schema."""
