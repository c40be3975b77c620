"""TSR4 harness: arbitrary bytes into the TSR-V4.20 reader, validator and C++ model.

``TestOneInput(data)`` writes ``data`` to a temporary file and reads it as TSR4 with
:func:`tsr.load_all` (strict and lenient, memory-mapped and copying), tensor by tensor
through :func:`tsr.open`, with :func:`tsr.validate` (``format="v4"``) and with the model of
the C++ importer (:func:`tsr._v4cpp.cpp_verdict`). A :class:`tsr.TSRError` subclass (with a
message and a field) is the only exception these may raise; anything else escapes and is a
crash. The oracles (a violation raises :class:`OracleError`):

* the readers agree: mmap and copy, ``load_all`` and ``open(...)[i]``, and in memory
  ``from_bytes_all`` (and ``validate_bytes`` with ``validate``); strict success implies
  lenient success with the same arrays;
* validate agrees with the reader: ``validate(strict=s).ok`` iff the reader succeeds, and
  its first error has the class and field of the reader's exception (for an input without
  the TSR4 magic, the reader with ``reserved_dtypes=True``: validate reports a reserved v1
  dtype as a warning, as the v1 harness models it);
* re-encode: a strictly read file re-encodes (:func:`tsr.v4.to_bytes`) to arrays that read
  back the same, and to the input itself when validate found nothing and every ZLIB payload
  is what ``zlib.compress(data, 6)`` gives (the file is the C++ writer's);
* C++ model: what strict tsr reads, C++ reads as the same tensors; what C++ reads without a
  shape beyond its buffer, lenient tsr reads as the same tensors; the report's verdict is
  the model's.
"""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt

import tsr
from tsr import _v4cpp, v4
from tsr.validate import Report

from .reader_harness import OracleError, Outcome, attempt, require, write_input

_DATA_ERRORS = (tsr.ChecksumError, tsr.CompressionError)
"""Raised while a tensor is read (after the header and directory passed)."""

STATS: Counter[str] = Counter()
"""Outcome counts of this process (printed at the end of a fuzz run)."""


def _same(a: list[npt.NDArray[Any]], b: list[npt.NDArray[Any]]) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()
        for x, y in zip(a, b, strict=True)
    )


def _by_index(path: str, strict: bool) -> list[npt.NDArray[Any]]:
    with tsr.open(path, strict=strict) as f:
        return [f[i] for i in range(len(f))]


def canonical(data: bytes, report: Report) -> bool:
    """Whether ``data`` is byte for byte what the C++ writer writes for its tensors."""
    if report.findings or not isinstance(report.header, v4.FileHeader):
        return False
    if report.header.file_mode == v4.RAW:
        return True
    for t in report.tensors:
        payload = data[t.offset : t.offset + t.stored_size]
        raw = zlib.decompress(payload)
        if zlib.compress(raw, 6) != payload:
            return False
    return True


def check_bytes(data: bytes) -> None:
    """Every oracle on one input (see the module docstring)."""
    path = write_input(data)
    results: dict[bool, Outcome[list[npt.NDArray[Any]]]] = {}
    for strict in (True, False):
        out = attempt(tsr.load_all, path, strict=strict)
        results[strict] = out
        STATS[("strict:" if strict else "lenient:") + (
            "ok" if out.ok else type(out.error).__name__
        )] += 1  # fmt: skip
        mem = attempt(tsr.from_bytes_all, data, strict=strict)  # in memory: the same
        require(
            out.ok == mem.ok and (out.error is None or type(out.error) is type(mem.error)),
            f"load_all {out.describe()} but from_bytes_all {mem.describe()}",
        )
        if out.value is not None and mem.value is not None:
            require(_same(out.value, mem.value), "from_bytes_all read other arrays")
        if not (out.ok or isinstance(out.error, _DATA_ERRORS)):
            continue  # refused before any tensor was read: the other paths share that code
        copy = attempt(tsr.load_all, path, strict=strict, mmap=False)
        one = attempt(_by_index, path, strict)
        for name, other in (("mmap=False", copy), ("File[i]", one)):
            require(
                out.ok == other.ok and (out.error is None or type(out.error) is type(other.error)),
                f"load_all {out.describe()} but {name} {other.describe()}",
            )
            if out.value is not None and other.value is not None:
                require(_same(out.value, other.value), f"{name} read other arrays")
    strict_out, lenient_out = results[True], results[False]
    if strict_out.value is not None:
        require(lenient_out.value is not None, "strict reads the file, lenient does not")
        assert lenient_out.value is not None
        require(_same(strict_out.value, lenient_out.value), "strict and lenient arrays differ")

    # judged as the readers judge it: by its magic (a damaged one reads as v1)
    reports = {strict: tsr.validate(path, strict=strict) for strict in (True, False)}
    for strict, report in reports.items():
        in_memory = tsr.validate_bytes(data, strict=strict)
        require(in_memory.findings == report.findings, "validate_bytes differs from validate")
        ref = results[strict]
        if data[:4] != v4.MAGIC and isinstance(ref.error, tsr.UnsupportedDTypeError):
            # v1 by its magic: validate judges a reserved v1 dtype readable, with a
            # warning, as load(reserved_dtypes=True) reads it (the flag changes nothing
            # unless the default reader stopped at the dtype)
            ref = attempt(tsr.load_all, path, strict=strict, reserved_dtypes=True)
        require(
            report.ok == ref.ok,
            f"validate(strict={strict}).ok={report.ok} but the reader {ref.describe()}",
        )
        if ref.error is not None:
            first = report.errors[0]
            require(
                first.error == type(ref.error).__name__ and first.field == ref.error.field,
                f"validate's first error {first} is not the reader's {ref.describe()}",
            )
        for f in report.findings:
            cls = getattr(tsr, f.error, None)
            require(
                isinstance(cls, type) and issubclass(cls, tsr.TSRError) and cls is not tsr.TSRError,
                f"finding names no TSRError subclass: {f}",
            )
            require(f.offset >= 0 and bool(f.message) and bool(f.field), f"bad finding {f}")
    report = reports[True]
    if data[:4] != v4.MAGIC:
        STATS["not TSR4"] += 1
        return
    cpp = _v4cpp.cpp_verdict(len(data), lambda o, n: data[o : o + n], name="input.tsr")
    require(report.cpp == cpp.neutral(), f"report verdict {report.cpp} is not the model's {cpp}")
    STATS[f"cpp:{cpp.verdict}:{cpp.check}"] += 1
    if strict_out.value is not None:
        arrays = strict_out.value
        require(
            cpp.accepts and [t.shape for t in cpp.tensors] == [a.shape for a in arrays],
            f"tsr reads {[a.shape for a in arrays]} strictly but C++ does {cpp}",
        )
        check_reencode(data, arrays, report)
    if cpp.accepts and not cpp.beyond_buffer:
        require(
            lenient_out.value is not None,
            f"C++ reads the file but lenient tsr does not: {lenient_out.describe()}",
        )
        assert lenient_out.value is not None
        require(
            [a.shape for a in lenient_out.value] == [t.shape for t in cpp.tensors]
            and [v4.DTYPES[v4.CODE_OF[a.dtype.name]].name for a in lenient_out.value]
            == [t.dtype for t in cpp.tensors],
            "lenient tsr reads other tensors than C++",
        )


def check_reencode(data: bytes, arrays: list[npt.NDArray[Any]], report: Report) -> None:
    assert isinstance(report.header, v4.FileHeader)
    again = v4.to_bytes(arrays, report.header.compression)
    if canonical(data, report):
        require(again == data, "a canonical file does not re-encode to itself")
    path = write_input(again)
    back = tsr.load_all(path)
    require(_same(back, arrays), "the re-encoded file reads other arrays")
    STATS["reencoded"] += 1


def TestOneInput(data: bytes) -> None:
    """The atheris entry point."""
    check_bytes(data)


def prepare() -> None:
    """Called once before fuzzing."""
    np.seterr(all="ignore")


__all__ = ["STATS", "OracleError", "TestOneInput", "check_bytes", "prepare"]
