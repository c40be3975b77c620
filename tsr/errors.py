"""Error classes, by cause.

Every format error is a :class:`TSRError`, which is also a :class:`ValueError` so that
idiomatic ``except ValueError`` code keeps working. Each carries, where it applies, the
header ``field`` concerned, its byte ``offset`` in the file, the value ``found`` and what
was ``expected``. Operating-system errors (a missing file, a permission problem) are never
wrapped: they reach the caller as the :class:`OSError` subclass Python raised.
"""

from __future__ import annotations

from typing import Any


class TSRError(ValueError):
    """Base class of every error about TSR content or arguments."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        offset: int | None = None,
        found: Any = None,
        expected: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.offset = offset
        self.found = found
        self.expected = expected


class BadMagicError(TSRError):
    """The file does not start with the signature ``TSR!``."""


class UnsupportedVersionError(TSRError):
    """The header's version is not one this library reads."""


class BadFieldError(TSRError):
    """A header field holds a value the format does not allow."""


class TruncatedError(TSRError):
    """The data ends before the header or the payload it declares."""


class SizeMismatchError(TSRError):
    """The data is longer than the header and payload it declares."""


class UnsupportedDTypeError(TSRError):
    """A dtype (of an array, or a code in a file) that TSR or this call does not support."""


class BadArgumentError(TSRError):
    """An argument that cannot be written as TSR v1 (rank above 4, a dim over 2**31-1...)."""


class ChecksumError(TSRError):
    """A stored CRC-32 (of a header, or of a tensor's data) does not match the bytes."""


class CompressionError(TSRError):
    """A compressed payload does not inflate to its declared size: not a zlib stream, cut
    short, longer or shorter than declared, or declaring more than its bytes can hold."""


class LayoutError(TSRError):
    """Data blocks that overlap, lie inside the header or directory, or do not end the file
    as their directory says."""
