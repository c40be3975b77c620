"""The ``tsr`` command: info, validate, convert, dump.

Exit status: 0 success (every file valid), 1 a file is invalid or an operation failed,
2 usage error. Errors print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _io
from .errors import TSRError
from .header import DIM_LABELS, MAX_NDIM, Header
from .validate import Report, validate

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit} ({n} B)"
        size /= 1024
    raise AssertionError("unreachable")


def shape_labels(shape: tuple[int, ...]) -> str:
    """``(2, 3)`` as ``H=2 W=3``: labels follow the format's right-aligned N, C, H, W."""
    labels = DIM_LABELS[MAX_NDIM - len(shape) :]
    return " ".join(f"{k}={v}" for k, v in zip(labels, shape, strict=True)) or "scalar"


def _info_dict(path: str, h: Header) -> dict[str, Any]:
    return {
        "path": path,
        "format": f"TSR v{h.version}",
        "dtype": h.dtype.name,
        "numpy_dtype": h.dtype.numpy_name,
        "shape": list(h.shape),
        "dims": list(h.dims),
        "ndim": h.ndim,
        "elements": h.total_elements,
        "payload_bytes": h.payload_size,
        "file_bytes": h.file_size,
        "device": h.device,
        "cpp_readable": h.cpp_readable,
    }


def _cmd_info(args: argparse.Namespace) -> int:
    status = EXIT_OK
    rows: list[dict[str, Any]] = []
    for path in args.files:
        try:
            h = _io.read_header(path, strict=False)
        except (TSRError, OSError) as exc:
            _error(path, exc)
            status = EXIT_INVALID
            continue
        info = _info_dict(path, h)
        if args.json:
            rows.append(info)
            continue
        shape = "(" + ", ".join(map(str, h.shape)) + ("," if h.ndim == 1 else "") + ")"
        print(f"{path}: {info['format']} {h.dtype.name} {shape} [{shape_labels(h.shape)}]")
        print(f"  elements {h.total_elements}, payload {_human(h.payload_size)}, "
              f"file {_human(h.file_size)}, device {h.device}"
              + ("" if h.cpp_readable else ", not readable by C++"))  # fmt: skip
    if args.json:
        print(json.dumps(rows if len(rows) != 1 else rows[0], indent=2))
    return status


def _verdict_line(path: str, r: Report, cpp: bool) -> tuple[bool, str]:
    if cpp:
        if not r.cpp.accepts:
            return False, f"{path}: INVALID for C++ ({r.cpp.check}): {r.cpp.message}"
        if r.cpp.different_tensor:
            return True, f"{path}: ok for C++, WARNING: {r.cpp.message}"
        return True, f"{path}: ok for C++"
    if r.ok:
        notes = "; ".join(f.message for f in r.warnings)
        return True, f"{path}: ok" + (f" (warning: {notes})" if notes else "")
    first = r.errors[0]
    more = len(r.errors) - 1
    extra = f" (+{more} more)" if more else ""
    return False, f"{path}: INVALID: {first.field} at byte {first.offset}: {first.message}{extra}"


def _cmd_validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    reports: list[dict[str, Any]] = []
    for path in args.files:
        try:
            r = validate(path, strict=not args.lenient)
        except OSError as exc:
            _error(path, exc)
            status = EXIT_INVALID
            continue
        good, line = _verdict_line(path, r, args.cpp)
        if not good:
            status = EXIT_INVALID
        if args.json:
            d = r.to_dict()
            d["valid"] = good
            reports.append(d)
        else:
            print(line)
    if args.json:
        print(json.dumps(reports if len(reports) != 1 else reports[0], indent=2))
    return status


def _npy_shape(path: str) -> tuple[int, ...]:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, _ = np.lib.format.read_array_header_2_0(f)
    return tuple(shape)


def _cmd_convert(args: argparse.Namespace) -> int:
    src, dst = args.input, args.output
    kinds = (os.path.splitext(src)[1].lower(), os.path.splitext(dst)[1].lower())
    try:
        if kinds == (".npy", ".tsr"):
            if 0 in _npy_shape(src):  # NumPy cannot map an empty array
                arr = np.load(src, allow_pickle=False)
            else:
                arr = np.load(src, mmap_mode="r", allow_pickle=False)
            _io.save(dst, arr, reserved_dtypes=args.reserved_dtypes, fsync=args.fsync)
        elif kinds == (".tsr", ".npy"):
            arr = _io.load(src, reserved_dtypes=args.reserved_dtypes)

            def write(fd: int) -> None:
                with os.fdopen(fd, "wb", closefd=False) as f:
                    np.lib.format.write_array(f, arr, allow_pickle=False)

            _io.atomic_write(dst, write, fsync=args.fsync)
        else:
            print(f"tsr: convert: cannot convert {kinds[0] or 'no extension'} to "
                  f"{kinds[1] or 'no extension'}: use .tsr and .npy", file=sys.stderr)  # fmt: skip
            return EXIT_USAGE
    except (ValueError, OSError) as exc:
        _error(src, exc)
        return EXIT_INVALID
    return EXIT_OK


def _cmd_dump(args: argparse.Namespace) -> int:
    try:
        h, arr = _io.read(args.file, "r", strict=False, reserved_dtypes=True)
    except (TSRError, OSError) as exc:
        _error(args.file, exc)
        return EXIT_INVALID
    print(f"{args.file}: {h.dtype.name} {tuple(h.shape)}")
    threshold = sys.maxsize if args.full else 1000
    print(np.array2string(arr, threshold=threshold, edgeitems=args.edge, separator=", "))
    return EXIT_OK


def _error(path: str, exc: BaseException) -> None:
    text = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
    print(f"tsr: {path}: {text}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tsr`` command."""
    p = argparse.ArgumentParser(
        prog="tsr", description="Inspect, validate and convert TSR v1 files."
    )
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="format, dtype, shape, sizes (reads headers only)")
    info.add_argument("files", nargs="+", metavar="FILE")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(run=_cmd_info)

    val = sub.add_parser(
        "validate",
        help="check files: exit 0 if all valid, 1 if any is not",
        description="One line per file. Strict by default; --cpp judges by what the C++ "
        "reader accepts instead, and warns where it would read a different tensor.",
    )
    val.add_argument("files", nargs="+", metavar="FILE")
    val.add_argument("--cpp", action="store_true", help="valid = the C++ reader accepts it")
    val.add_argument("--lenient", action="store_true",
                     help="header_size and reserved fields are warnings, not errors")  # fmt: skip
    val.add_argument("--json", action="store_true", help="full reports as JSON")
    val.set_defaults(run=_cmd_validate)

    conv = sub.add_parser("convert", help="convert between .tsr and .npy (streaming)")
    conv.add_argument("input", metavar="IN")
    conv.add_argument("output", metavar="OUT")
    conv.add_argument("--reserved-dtypes", action="store_true",
                      help="allow float16/float64/int16/uint8 (not readable by C++)")  # fmt: skip
    conv.add_argument("--fsync", action="store_true", help="flush to disk before returning")
    conv.set_defaults(run=_cmd_convert)

    dump = sub.add_parser("dump", help="print the values (summarised like NumPy)")
    dump.add_argument("file", metavar="FILE")
    dump.add_argument("--full", action="store_true", help="print every value")
    dump.add_argument("--edge", type=int, default=3, help="items shown at each edge (3)")
    dump.set_defaults(run=_cmd_dump)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tsr`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    return status


if __name__ == "__main__":
    sys.exit(main())
