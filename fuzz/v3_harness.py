"""TSR3 harness: arbitrary bytes into every tsr entry point that reads a TSR3 file.

``TestOneInput(data)`` makes ``data`` a TSR3 file (the magic is forced, so every input
reaches the TSR3 rules) in a temporary file and feeds it to :func:`tsr.load` (mapped and
copied, strict and lenient, with and without CRC verification), :func:`tsr.open`,
:func:`tsr.load_all`, :func:`tsr.read_header`, :func:`tsr.validate` (strict and lenient,
with the C++ model of both importer paths) and :func:`tsr.torch.load`. A
:class:`tsr.TSRError` subclass is the only exception these may raise; anything else
escapes and is a crash. The oracles, each raising :class:`OracleError`:

* the error is a specific subclass with a message, a field and an offset;
* the entry points agree: every load variant fails with the same class and field, or
  succeeds with the same bytes; ``open``/``load_all``/torch and, in memory, ``from_bytes``
  agree with ``load`` (``validate_bytes`` with ``validate``); strict
  success implies lenient success; ``verify=True`` success implies ``verify=False``
  success;
* ``validate(strict=s).ok`` iff ``load(strict=s)`` succeeds, and its first error is the
  exception the reader raises;
* a decoded array has the header's shape, dtype and exactly ``raw_data_size`` bytes whose
  CRC-32 is the header's; a strictly valid RAW file re-encodes (``tsr.save(format="v3")``)
  to the input byte for byte, a ZLIB one to the same header and data (and to the input
  when its stream is what level 6 writes);
* the C++ model: a strictly valid file is accepted by both importer paths as the same
  tensor, with no hazard; every file the model says C++ rejects, crashes on, or accepts
  unsafely (a hazard, or a tensor other than the header's), the lenient reader refuses.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections import Counter
from typing import Any

import numpy as np

import tsr
from tsr import _api, v3

from .reader_harness import process_dir

STATS: Counter[str] = Counter()
_DIR: str | None = None


class OracleError(AssertionError):
    """A semantic oracle failed."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise OracleError(message)


def prepare() -> None:
    """Called once before fuzzing: the input's directory (in memory-backed /dev/shm when
    there) and the torch front end (optional)."""
    global _DIR
    if _DIR is None:
        _DIR = process_dir("tsr-fuzz-v3-")
    with contextlib.suppress(ImportError):  # torch is optional
        import tsr.torch  # noqa: F401


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """("ok", result) or (error class name, the error); only TSRError is expected."""
    try:
        return "ok", fn(*args, **kwargs)
    except tsr.TSRError as exc:
        require(bool(exc.message) and exc.field is not None, f"vague error: {exc!r}")
        require(exc.offset is not None, f"error without an offset: {exc!r}")
        require(type(exc) is not tsr.TSRError or exc.field == "tensor_count",
                f"unspecific error class: {exc!r}")  # fmt: skip
        return type(exc).__name__, exc


def TestOneInput(data: bytes) -> None:
    prepare()
    assert _DIR is not None
    data = v3.MAGIC + data[4:]  # a shorter input becomes the bare magic
    path = os.path.join(_DIR, "input.tsr")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a fresh inode: maps of earlier inputs stay valid
    with open(path, "xb") as f:
        f.write(data)
    _check(path, data)


_LOADS = (  # (strict, mmap, verify)
    (True, True, True), (True, False, True), (False, True, True), (False, False, True),
    (False, True, False),
)  # fmt: skip


def _check(path: str, data: bytes) -> None:
    results = {
        key: _outcome(tsr.load, path, strict=key[0], mmap=key[1], verify=key[2]) for key in _LOADS
    }
    for strict in (True, False):
        base = results[strict, False, True]
        for key, got in results.items():
            if key[0] != strict or (key[2] is False and got[0] == "ok"):
                continue  # skipping the CRC may accept more
            require(got[0] == base[0], f"load variants disagree: {key} {got[0]} vs {base[0]}")
            if got[0] == "ok":
                require(got[1].tobytes() == base[1].tobytes(), f"{key}: other bytes")
            else:
                require(got[1].field == base[1].field, f"{key}: other field")
    strict_ok = results[True, False, True][0] == "ok"
    lenient = results[False, False, True]
    lenient_ok = lenient[0] == "ok"
    require(not strict_ok or lenient_ok, "strict accepts what lenient refuses")
    STATS["strict_ok" if strict_ok else "lenient_ok" if lenient_ok else lenient[0]] += 1

    for strict in (True, False) if not strict_ok else (True,):
        report = tsr.validate(path, strict=strict, format="v3")
        outcome = results[strict, False, True]
        require(
            report.ok == (outcome[0] == "ok"),
            f"validate(strict={strict}).ok={report.ok} but load gave {outcome[0]}",
        )
        if outcome[0] != "ok":
            first = report.errors[0]
            require(
                first.error == outcome[0] and first.field == outcome[1].field,
                f"validate's first error {first.error}/{first.field} is not the "
                f"reader's {outcome[0]}/{outcome[1].field}",
            )
        _check_cpp(report, strict_ok, lenient_ok)

    header = _outcome(tsr.read_header, path)
    require(header[0] == "ok" or not strict_ok, "read_header refuses a file load accepts")
    opened = _outcome(_open_all, path)
    require(opened[0] == results[True, True, True][0], "open disagrees with load")
    if lenient_ok:
        _check_array(data, lenient[1], strict_ok)
        if opened[0] == "ok":
            require(opened[1].tobytes() == lenient[1].tobytes(), "open reads other bytes")
        _check_torch(path, lenient[1])
    for strict in (True, False):  # in memory: the same outcome as on disk
        mem = _outcome(tsr.from_bytes, data, strict=strict)
        ref = results[strict, False, True]
        require(mem[0] == ref[0], f"from_bytes({strict=}) {mem[0]} but load {ref[0]}")
        if mem[0] == "ok":
            require(mem[1].shape == ref[1].shape and mem[1].tobytes() == ref[1].tobytes(),
                    f"from_bytes({strict=}) reads other bytes")  # fmt: skip
        else:
            require(mem[1].field == ref[1].field, f"from_bytes({strict=}): other field")
        on_disk = tsr.validate(path, strict=strict, format="v3")
        in_memory = tsr.validate_bytes(data, strict=strict, format="v3")
        require(in_memory.findings == on_disk.findings, "validate_bytes differs from validate")


def _open_all(path: str) -> Any:
    with tsr.open(path) as f:
        require(f.format == "v3" and len(f) == 1, "open: not one TSR3 tensor")
        info = f.tensors[0]
        arr = f[0]
        require(arr.shape == info.shape and arr.nbytes == info.nbytes, "open: info vs array")
    return arr


def _check_array(data: bytes, arr: Any, strict_ok: bool) -> None:
    h = v3.decode(data)
    raw = np.ascontiguousarray(arr).tobytes()
    require(arr.shape == h.shape and len(raw) == h.raw_data_size, "shape/size vs header")
    require(zlib.crc32(raw) == h.crc32, "the data's CRC is not the header's")
    require(arr.dtype.name == ("bfloat16" if h.dtype_code == 2 else h.dtype.numpy_name),
            "dtype vs header")  # fmt: skip
    if not strict_ok:
        return
    again = _api.encode(arr, format="v3", compression=h.compression)
    if h.file_mode == v3.RAW or data[128:] == zlib.compress(raw, 6):
        require(again == data, "a strictly valid file does not re-encode to itself")
    else:
        require(v3.decode(again).dims == h.dims and again[16:36] == data[16:36],
                "re-encoded header differs")  # fmt: skip
        STATS["zlib_other_encoder"] += 1


def _check_torch(path: str, arr: Any) -> None:
    try:
        import tsr.torch as tt
    except ImportError:  # pragma: no cover
        return
    t = tt.load(path, strict=False)
    bits = t.view(__import__("torch").int16) if str(t.dtype) == "torch.bfloat16" else t
    require(bits.numpy().tobytes() == np.ascontiguousarray(arr).tobytes(), "torch differs")


def _check_cpp(report: Any, strict_ok: bool, lenient_ok: bool) -> None:
    paths = report.cpp_paths
    require([v.path for v in paths] == ["mmap", "read"], "not both importer paths")
    for v in paths:
        require(bool(v.message), "a verdict without a message")
        if strict_ok:
            require(
                v.accepts and v.hazard is None and not v.different_tensor,
                f"C++ ({v.path}) does not read a strictly valid file as it is: {v}",
            )
        if not v.accepts or v.hazard is not None or v.different_tensor:
            require(
                not lenient_ok,
                f"the lenient reader accepts what C++ ({v.path}) handles badly: {v}",
            )
            STATS[f"cpp_{v.path}_{v.check or 'unsafe'}"] += 1
