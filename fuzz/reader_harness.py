"""Reader harness: arbitrary bytes into every tsr entry point that decodes a file.

``TestOneInput(data)`` feeds ``data`` to :func:`tsr.from_bytes` (strict and lenient, with
and without reserved dtypes), :func:`tsr.header.decode_raw` + :func:`tsr.header.check`,
:func:`tsr.validate.validate_bytes`, and, through a temporary file, :func:`tsr.load`
(memory-mapped and copying), :func:`tsr.read_header`, :func:`tsr.validate` and
:func:`tsr.torch.load`. A :class:`tsr.TSRError` subclass is the only exception these may
raise; anything else escapes and is a crash. Semantic oracles are checked too, and a
violation raises :class:`OracleError`:

* the error is a specific subclass with a message and the field it is about;
* the entry points agree: ``from_bytes`` fails iff ``check`` fails, with the same class and
  field; the file readers agree with ``from_bytes``; strict success implies lenient
  success, and success without reserved dtypes implies success with them;
* a decoded array has the header's shape and dtype and exactly the payload bytes, and
  re-encodes (``tsr.to_bytes``) to the input when strict reading accepted it (a canonical
  header), else to the canonical header plus the same payload;
* ``validate_bytes(b, strict=s).ok`` iff ``from_bytes(b, strict=s, reserved_dtypes=True)``
  succeeds, and its first error is the exception the reader raises (BF16, which NumPy
  cannot represent without ``ml_dtypes``, is checked through ``header.check`` and torch);
* the ``cpp`` verdict agrees with an independent model of the C++ reader
  (:mod:`fuzz.cpp_model`), and every file strict tsr reads with a C++ dtype and no zero
  dim is one C++ reads as the same tensor.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import struct
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

import tsr
from tsr import dtypes as tsr_dtypes
from tsr import header as tsr_header
from tsr._io import _pid_alive
from tsr.validate import Report, validate_bytes

from . import cpp_model

T = TypeVar("T")
P = ParamSpec("P")

HEADER_SIZE = 64
_CANONICAL = struct.Struct("<4siiiii4iqqq")
_INTP_MAX = np.iinfo(np.intp).max

try:
    import ml_dtypes  # type: ignore[import-not-found, unused-ignore]  # noqa: F401

    HAVE_BF16_NUMPY = True
except ImportError:
    HAVE_BF16_NUMPY = False

TOLERATE_KNOWN = os.environ.get("TSR_FUZZ_KNOWN", "fail") == "tolerate"
"""With ``TSR_FUZZ_KNOWN=tolerate``, inputs that hit a known, reported bug (see
:data:`KNOWN_BUGS`) are counted in the statistics instead of crashing the run, so that a
long run goes on looking for new ones while a fix is pending. Both bugs listed are fixed
(8dcabe9), so the default is to fail on them like on any other."""

STATS: Counter[str] = Counter()
"""Outcome counts of this process (printed at the end of a fuzz run)."""


class OracleError(AssertionError):
    """A semantic oracle failed: an entry point returned something wrong."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise OracleError(message)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """A call's result or the TSRError it raised."""

    value: T | None
    error: tsr.TSRError | None

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        if self.error is None:
            return "ok"
        return f"{type(self.error).__name__}(field={self.error.field!r}): {self.error}"


def check_error(exc: tsr.TSRError) -> None:
    """A TSRError must name its cause: a subclass, a message, a field."""
    require(type(exc) is not tsr.TSRError, f"bare TSRError raised: {exc!r}")
    require(bool(str(exc)) and str(exc) == exc.message, f"empty or odd message: {exc!r}")
    require(isinstance(exc.field, str) and bool(exc.field), f"error without field: {exc!r}")


def attempt(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Outcome[T]:
    """Call ``fn``; a TSRError is an outcome, any other exception propagates (a crash)."""
    try:
        return Outcome(fn(*args, **kwargs), None)
    except tsr.TSRError as exc:
        check_error(exc)
        return Outcome(None, exc)


def same_error(a: Outcome[Any], b: Outcome[Any]) -> bool:
    """Both failed with the same class and field (or both succeeded)."""
    if a.error is None or b.error is None:
        return a.error is None and b.error is None
    return type(a.error) is type(b.error) and a.error.field == b.error.field


# ----------------------------------------------------------------------------- known bugs


def zero_size_beyond_numpy(h: tsr_header.Header | None) -> bool:
    """KNOWN BUG 1 (found by this harness, fixed in 8dcabe9): a valid zero-size header
    whose non-zero dims times the item size exceed what NumPy can index (e.g. shape
    (0, 2**31-1, 2**31-1) FP32). ``from_bytes``, ``load``
    and ``tsr.torch.load`` raise NumPy's bare ``ValueError`` ("array is too big" /
    "cannot reshape") instead of a TSRError, while ``validate`` calls the file valid."""
    if h is None or not 0 <= h.ndim <= 4 or h.dtype_code not in tsr_dtypes.BY_CODE:
        return False
    shape = h.shape
    if 0 not in shape or any(d < 0 for d in shape):
        return False
    nbytes = tsr_dtypes.BY_CODE[h.dtype_code].itemsize
    prefix = 1
    overflow_in_prefix = False
    for d in shape:
        if d:
            nbytes *= d
        prefix *= d
        overflow_in_prefix = overflow_in_prefix or prefix > _INTP_MAX
    return nbytes > _INTP_MAX or overflow_in_prefix


def cpp_verdict_mismatch(head: bytes, size: int) -> bool:
    """KNOWN BUG 2 (found by this harness, fixed in 8dcabe9): ``validate``'s ``cpp``
    verdict rejected files whose int64 arithmetic wraps around in a way the C++ reader
    accepts: a ``total_elements`` that wraps negative while ``64 + total_elements *
    itemsize`` wraps to the real file size, or a logical shape whose element count exceeds
    ``total_elements`` only before wrapping."""
    if size < HEADER_SIZE or len(head) < HEADER_SIZE:
        return False
    model = cpp_model.import_tensor(head, size)
    h = tsr_header.decode_raw(head)
    if not model.accepts:
        return False
    numel = 1
    for d in h.shape:
        numel *= d
    return h.total_elements <= 0 or numel > h.total_elements


KNOWN_BUGS: dict[str, str] = {
    "zero_size_beyond_numpy": "valid zero-size header NumPy cannot index: bare ValueError",
    "cpp_verdict_wraparound": "validate's cpp verdict disagrees with C++ on int64 wrap-around",
}


def known(bug: str) -> bool:
    """Count a hit of a known bug; True when the harness should tolerate it."""
    STATS[f"known:{bug}"] += 1
    return TOLERATE_KNOWN


# ----------------------------------------------------------------------------- oracles


def canonical_header(shape: tuple[int, ...], code: int) -> bytes | None:
    """The header a correct writer produces, built without tsr's schema (None when the
    element count does not fit the int64 field: no canonical header exists)."""
    ndim = len(shape)
    dims = (1,) * (4 - ndim) + shape
    total = 1
    for d in dims:
        total *= d
    if total >= 1 << 63:
        return None
    return _CANONICAL.pack(b"TSR!", 1, HEADER_SIZE, 0, code, ndim, *dims, total, 0, 0)


def check_array(
    arr: npt.NDArray[Any], h: tsr_header.Header, data: bytes, *, strict: bool, reserved: bool
) -> None:
    """A decoded array is the payload, in the header's shape and type, and re-encodes."""
    require(arr.shape == h.shape, f"shape {arr.shape} != header shape {h.shape}")
    require(arr.dtype == h.dtype.numpy, f"dtype {arr.dtype} != {h.dtype.numpy}")
    payload = data[HEADER_SIZE:]
    require(arr.tobytes() == payload, "array bytes differ from the payload")
    canon = canonical_header(h.shape, h.dtype_code)
    if strict:
        require(canon == data[:HEADER_SIZE], "strict reading accepted a non-canonical header")
    require(canon is not None, f"decoded shape {h.shape} has no canonical header")
    assert canon is not None
    again = tsr.to_bytes(arr, reserved_dtypes=reserved)
    require(again == canon + payload, "to_bytes(from_bytes(b)) is not the canonical file")


def is_bf16_gap(out: Outcome[Any], h: tsr_header.Header | None) -> bool:
    """``from_bytes`` could not give BF16 to NumPy (no ml_dtypes): the one allowed gap."""
    return (
        not HAVE_BF16_NUMPY
        and h is not None
        and h.dtype_code == tsr.BF16.code
        and isinstance(out.error, tsr.UnsupportedDTypeError)
        and "ml_dtypes" in str(out.error)
    )


def check_report(rep: Report, data: bytes, *, strict: bool) -> None:
    """Shape of a validation report, independent of the reader."""
    require(rep.file_size == len(data) and rep.strict == strict, "report size/strict wrong")
    json.dumps(rep.to_dict())  # a report is always JSON-able
    for f in rep.findings:
        require(f.severity in ("error", "warning"), f"bad severity {f.severity}")
        cls = getattr(tsr, f.error, None)
        require(
            isinstance(cls, type) and issubclass(cls, tsr.TSRError) and cls is not tsr.TSRError,
            f"finding names no TSRError subclass: {f.error}",
        )
        require(0 <= f.offset <= HEADER_SIZE, f"finding offset {f.offset} outside the header")
        require(bool(f.message), "finding without message")


def check_cpp(rep: Report, data: bytes, h: tsr_header.Header | None) -> None:
    """``rep.cpp`` against the independent model, and tsr's strict reader against C++."""
    head = data[:HEADER_SIZE]
    model = cpp_model.import_tensor(head, len(data))
    cpp = rep.cpp
    agree = cpp.accepts == model.accepts and cpp.check == model.check
    if agree and model.accepts:
        agree = cpp.shape == model.shape and cpp.different_tensor == model.different_tensor
    if not agree:
        if cpp_verdict_mismatch(head, len(data)) and known("cpp_verdict_wraparound"):
            return
        raise OracleError(
            f"cpp verdict {cpp} disagrees with the C++ model {model} on header {head.hex()}"
        )


# ----------------------------------------------------------------------------- the harness


def process_dir(prefix: str, tag: str = "") -> str:
    """A new private directory ``<prefix><pid>[-<tag>]``, in memory-backed ``/dev/shm``
    when there (no disk write per input), removed at exit; the directories of processes
    that are gone (a fuzz run ends without running ``atexit``) are removed first."""
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()
    for entry in os.scandir(base):
        pid = entry.name[len(prefix) :].split("-", 1)[0]
        if entry.name.startswith(prefix) and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)
    path = os.path.join(base, f"{prefix}{os.getpid()}" + (f"-{tag}" if tag else ""))
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    atexit.register(shutil.rmtree, path, True)
    return path


class _Workdir:
    """The directory of the temporary file of the current input."""

    path: str | None = None

    @classmethod
    def file(cls) -> str:
        if cls.path is None:
            cls.path = process_dir("tsr-fuzz-reader-")
        return os.path.join(cls.path, "input.tsr")


def write_input(data: bytes) -> str:
    """``data`` as a fresh file (a new inode: maps of earlier inputs stay valid)."""
    path = _Workdir.file()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with open(path, "xb") as f:
        f.write(data)
    return path


_OTHER_MAGICS = (b"TSR3", b"TSR4")


def check_bytes(data: bytes, *, files: bool = True, torch_too: bool = True) -> None:
    """Every oracle on one input (see the module docstring), judged as TSR v1: an input
    that starts with a later generation's magic (which ``tsr.load``, ``tsr.validate`` and
    ``tsr.from_bytes`` read as that generation, while the v1 oracles here model v1 only)
    gets v1's magic instead; those generations have their own harnesses."""
    if data[:4] in _OTHER_MAGICS:
        data = b"TSR!" + data[4:]
    n = len(data)
    decoded = attempt(tsr_header.decode_raw, data[:HEADER_SIZE])
    h: tsr_header.Header | None = None
    if n < HEADER_SIZE:
        require(isinstance(decoded.error, tsr.TruncatedError), "short input: not TruncatedError")
    else:
        h = decoded.value
        require(h is not None, f"decode_raw failed on 64 bytes: {decoded.describe()}")
        assert h is not None
        require(h.to_bytes() == data[:HEADER_SIZE], "Header.to_bytes does not round-trip")
    numpy_gap = zero_size_beyond_numpy(h)

    # from_bytes against check, in all four modes
    results: dict[tuple[bool, bool], Outcome[npt.NDArray[Any]]] = {}
    checks: dict[tuple[bool, bool], bool] = {}
    for strict in (True, False):
        for reserved in (False, True):
            try:
                r = attempt(tsr.from_bytes, data, strict=strict, reserved_dtypes=reserved)
            except ValueError:
                if numpy_gap and known("zero_size_beyond_numpy"):
                    return
                raise
            results[strict, reserved] = r
            STATS["ok" if r.ok else type(r.error).__name__] += 1
            if h is None:
                require(isinstance(r.error, tsr.TruncatedError), "short input not TruncatedError")
                checks[strict, reserved] = False
                continue
            c = attempt(tsr_header.check, h, n, strict=strict, reserved_dtypes=reserved)
            checks[strict, reserved] = c.ok
            if reserved and c.ok and is_bf16_gap(r, h):
                STATS["bf16_gap"] += 1
                continue
            require(
                same_error(r, c),
                f"from_bytes({strict=}, {reserved=}) {r.describe()} but check {c.describe()}",
            )
            if r.value is not None:
                check_array(r.value, h, data, strict=strict, reserved=reserved)
                require(not r.value.flags.writeable, "array over bytes is writable")
    for reserved in (False, True):
        require(
            checks[False, reserved] or not checks[True, reserved], "strict ok but lenient fails"
        )
    for strict in (True, False):
        require(checks[strict, True] or not checks[strict, False], "ok only without reserved")

    # validate_bytes against the reader
    for strict in (True, False):
        rep = validate_bytes(data, strict=strict)
        check_report(rep, data, strict=strict)
        ref = results[strict, True]
        require(
            rep.ok == checks[strict, True],
            f"validate(strict={strict}).ok={rep.ok} but reader {ref.describe()}",
        )
        if not rep.ok:
            first = rep.errors[0]
            assert ref.error is not None
            require(
                first.error == type(ref.error).__name__
                and first.field == ref.error.field
                and first.offset == ref.error.offset,
                f"validate's first error {first} is not the reader's {ref.describe()}",
            )
        if h is not None:
            lenient = attempt(tsr_header.check, h, None, strict=False, reserved_dtypes=True)
            require((rep.header is not None) == lenient.ok, "report.header set inconsistently")
        if strict:
            check_cpp(rep, data, h)
            compat = results[True, False]
            if compat.value is not None and compat.value.size > 0:
                model = cpp_model.import_tensor(data[:HEADER_SIZE], n)
                require(
                    model.accepts
                    and model.shape == compat.value.shape
                    and model.payload_bytes == n - HEADER_SIZE,
                    f"tsr reads {compat.value.shape} strictly but C++ does {model}",
                )
            model = cpp_model.import_tensor(data[:HEADER_SIZE], n)
            if model.accepts and model.shape is not None and h is not None:
                canon = canonical_header(model.shape, h.dtype_code)
                if canon == data[:HEADER_SIZE]:
                    require(
                        compat.ok, f"C++ reads a canonical file tsr rejects: {compat.describe()}"
                    )

    if files:
        check_files(data, h, results, checks, torch_too=torch_too)


def check_files(
    data: bytes,
    h: tsr_header.Header | None,
    results: dict[tuple[bool, bool], Outcome[npt.NDArray[Any]]],
    checks: dict[tuple[bool, bool], bool],
    *,
    torch_too: bool,
) -> None:
    """The path-based readers agree with the in-memory ones."""
    path = write_input(data)
    for strict, mmap in ((True, True), (True, False), (False, True)):
        ref = results[strict, True]
        out = attempt(tsr.load, path, mmap=mmap, strict=strict, reserved_dtypes=True)
        require(
            same_error(out, ref) or (is_bf16_gap(out, h) and is_bf16_gap(ref, h)),
            f"load({strict=}, {mmap=}) {out.describe()} but from_bytes {ref.describe()}",
        )
        if out.value is not None and ref.value is not None:
            require(
                out.value.shape == ref.value.shape
                and out.value.dtype == ref.value.dtype
                and out.value.tobytes() == ref.value.tobytes(),
                f"load({strict=}, {mmap=}) differs from from_bytes",
            )
            require(out.value.flags.writeable == (not mmap), "load: wrong writeability")
        del out
    for strict in (True, False):
        head = attempt(tsr.read_header, path, strict=strict)
        if h is None:
            require(isinstance(head.error, tsr.TruncatedError), "read_header: short not Truncated")
        else:
            c = attempt(tsr_header.check, h, None, strict=strict, reserved_dtypes=True)
            require(same_error(head, c), f"read_header {head.describe()} vs {c.describe()}")
            require(head.value is None or head.value == h, "read_header decoded another header")
    on_disk = tsr.validate(path).to_dict()
    in_memory = validate_bytes(data).to_dict()
    on_disk["path"] = None
    require(on_disk == in_memory, "validate(path) differs from validate_bytes")
    if torch_too and "tsr.torch" in sys.modules:
        check_torch(path, data, h, checks)


def check_torch(
    path: str, data: bytes, h: tsr_header.Header | None, checks: dict[tuple[bool, bool], bool]
) -> None:
    """tsr.torch.load reads exactly what the rules allow, BF16 included."""
    import torch

    import tsr.torch as tsr_torch

    out = attempt(tsr_torch.load, path, reserved_dtypes=True)
    require(out.ok == checks[True, True], f"tsr.torch.load {out.describe()} vs check")
    if out.value is not None:
        assert h is not None
        t = out.value
        require(tuple(t.shape) == h.shape, "torch shape differs")
        if t.numel() == 0:
            require(data[HEADER_SIZE:] == b"", "empty torch tensor from a non-empty payload")
        else:
            raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
            require(raw == data[HEADER_SIZE:], "torch payload bytes differ")


def TestOneInput(data: bytes) -> None:
    """The atheris entry point: :func:`check_bytes`."""
    check_bytes(data)


def prepare() -> None:
    """Called once before fuzzing: import the torch front end, so that
    :func:`check_torch` runs (optional)."""
    with contextlib.suppress(ImportError):
        import tsr.torch  # noqa: F401
