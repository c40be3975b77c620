"""tsr: read, write, inspect and validate TSR v1 tensor files.

TSR is the tensor file format of the Tech Renaissance C++ deep-learning framework: a
64-byte little-endian header (magic ``TSR!``, version 1, dtype code, ndim, four
right-aligned dims, element count) followed by the raw row-major payload. This package
is byte-compatible with what the C++ framework writes and reads. The normative format is
``spec/tsr-v1.md``; the header layout is declared once, in :mod:`tsr._schema`.

Quick start::

    import numpy as np, tsr
    tsr.save("x.tsr", np.ones((3, 4), np.float32))   # atomic
    x = tsr.load("x.tsr")                            # zero-copy, read-only memory map
    tsr.read_header("x.tsr").shape                   # (3, 4), reads 64 bytes
    tsr.validate("x.tsr").ok                         # True; .cpp says what C++ does

The core needs NumPy only; ``tsr.torch`` (``save``/``load`` with ``device=``) imports
torch when you import it.
"""

from ._api import (
    TSRFile,
    from_bytes,
    from_bytes_all,
    load,
    load_all,
    open,
    read_header,
    save,
    save_all,
    to_bytes,
    to_bytes_all,
    validate,
    validate_bytes,
)
from ._model import TensorInfo
from .dtypes import BF16, FP16, FP32, FP64, INT8, INT16, INT32, UINT8, DType
from .errors import (
    BadArgumentError,
    BadFieldError,
    BadMagicError,
    ChecksumError,
    CompressionError,
    LayoutError,
    SizeMismatchError,
    TruncatedError,
    TSRError,
    UnsupportedDTypeError,
    UnsupportedVersionError,
)
from .header import HEADER_SIZE, Header
from .validate import CppVerdict, Finding, Report
from .verify import Comparison, Mismatch, Stats, compare, stats

__version__ = "0.1.0"
FORMAT_VERSION = 1

__all__ = [
    "BF16",
    "FORMAT_VERSION",
    "FP16",
    "FP32",
    "FP64",
    "HEADER_SIZE",
    "INT8",
    "INT16",
    "INT32",
    "UINT8",
    "BadArgumentError",
    "BadFieldError",
    "BadMagicError",
    "ChecksumError",
    "Comparison",
    "CompressionError",
    "CppVerdict",
    "DType",
    "Finding",
    "Header",
    "LayoutError",
    "Mismatch",
    "Report",
    "SizeMismatchError",
    "Stats",
    "TSRError",
    "TSRFile",
    "TensorInfo",
    "TruncatedError",
    "UnsupportedDTypeError",
    "UnsupportedVersionError",
    "compare",
    "from_bytes",
    "from_bytes_all",
    "load",
    "load_all",
    "open",
    "read_header",
    "save",
    "save_all",
    "stats",
    "to_bytes",
    "to_bytes_all",
    "validate",
    "validate_bytes",
]
