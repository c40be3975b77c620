"""The ``tsr`` command: info, validate, convert, dump.

Exit status: 0 success (every file valid), 1 a file is invalid or an operation failed,
2 usage error. Errors print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from . import _api, _formats, _io, _tensors
from ._model import Compression, TensorInfo
from .errors import BadArgumentError, TSRError
from .header import DIM_LABELS, MAX_NDIM, Header
from .validate import Report
from .verify import Stats, compare, stats

validate = _api.validate
_FORMAT_NAMES = {"v1": "TSR v1", "v3": "TSR3", "v4": "TSR4"}
_LATER_LABELS = ("N", "H", "W", "C")  # TSR3 and TSR4 shapes are N, H, W, C right-aligned

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit} ({n} B)"
        size /= 1024
    raise AssertionError("unreachable")


def shape_labels(shape: tuple[int, ...], labels4: tuple[str, ...] = DIM_LABELS) -> str:
    """``(2, 3)`` as ``H=2 W=3``: labels follow the format's right-aligned N, C, H, W
    (v1) or N, H, W, C (TSR3, TSR4)."""
    labels = labels4[MAX_NDIM - len(shape) :]
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


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _tensor_line(t: TensorInfo) -> str:
    stored = (f"zlib {_human(t.stored_size)} of {_human(t.nbytes)}" if t.compression
              else f"RAW {_human(t.nbytes)}")  # fmt: skip
    crc = "" if t.crc32 is None else f", crc32 {t.crc32:#010x}"
    return (f"[{t.index}] {t.dtype} {_shape_text(t.shape)} "
            f"[{shape_labels(t.shape, _LATER_LABELS)}] {stored} at {t.offset}{crc}")  # fmt: skip


def _info_later(path: str, f: _api.TSRFile, as_json: bool) -> dict[str, Any] | None:
    """``tsr info`` of a TSR3/TSR4 file: one line per tensor."""
    name = _FORMAT_NAMES[f.format]
    if as_json:
        return {"path": path, "format": name, "file_bytes": f.size,
                "tensors": [t.to_dict() for t in f.tensors]}  # fmt: skip
    if len(f.tensors) == 1 and f.format == "v3":
        print(f"{path}: {name} {_tensor_line(f.tensors[0]).split(' ', 1)[1]}, "
              f"file {_human(f.size)}")  # fmt: skip
        return None
    print(f"{path}: {name}, {len(f.tensors)} tensor(s), file {_human(f.size)}")
    for t in f.tensors:
        print(f"  {_tensor_line(t)}")
    return None


def _cmd_info(args: argparse.Namespace) -> int:
    status = EXIT_OK
    rows: list[dict[str, Any]] = []
    for path in args.files:
        try:
            if _api.format_of(path) != "v1":
                with _api.open(path, strict=False) as f:
                    row = _info_later(path, f, args.json)
                found = _info_stats(path, row if row is not None else {}) if args.stats else None
                status = status if found is not False else EXIT_INVALID
                if row is not None:
                    rows.append(row)
                else:
                    _print_stats(found)
                continue
            with _io._open_fd(path) as (fd, size):
                h = _io.read_header(_api._fd_source(fd, path), strict=False)
        except (TSRError, OSError) as exc:
            _error(path, exc)
            status = EXIT_INVALID
            rows.append({"path": path, "error": _text(path, exc)})
            continue
        info = _info_dict(path, h)
        info["file_bytes"] = size
        info["declared_file_bytes"] = h.file_size
        problem = _size_problem(h, size)
        if problem:
            _error(path, problem)
            status = EXIT_INVALID
            info["error"] = problem
        summary = _info_stats(path, info) if args.stats and not problem else None
        status = status if summary is not False else EXIT_INVALID
        if args.json:
            rows.append(info)
            continue
        shape = "(" + ", ".join(map(str, h.shape)) + ("," if h.ndim == 1 else "") + ")"
        declared = "" if size == h.file_size else f" (the header declares {_human(h.file_size)})"
        print(f"{path}: {info['format']} {h.dtype.name} {shape} [{shape_labels(h.shape)}]")
        print(f"  elements {h.total_elements}, payload {_human(h.payload_size)}, "
              f"file {_human(size)}{declared}, device {h.device}"
              + ("" if h.cpp_readable else ", not readable by C++"))  # fmt: skip
        _print_stats(summary)
    if args.json:
        print(json.dumps(rows, indent=2))
    return status


def _size_problem(h: Header, size: int) -> str:
    """What is wrong with a file of ``size`` bytes under header ``h`` ('' if nothing)."""
    if size < h.file_size:
        return (f"truncated: the header declares {h.file_size} bytes but the file has "
                f"{size}; was it fully written?")  # fmt: skip
    if size > h.file_size:
        return (f"{size - h.file_size} trailing byte(s): the header declares {h.file_size} "
                f"bytes but the file has {size}")  # fmt: skip
    return ""


def _verdict_line(path: str, r: Report, cpp: bool) -> tuple[bool, str]:
    if cpp and r.cpp_paths:  # TSR3 (mmap and read paths), TSR4
        bad = [v for v in r.cpp_paths if not v.accepts]
        if bad:
            text = "; ".join(f"{v.path}: {v.check}: {v.message}" for v in bad)
            return False, f"{path}: INVALID for C++ ({text})"
        names = ", ".join(v.path for v in r.cpp_paths)
        warn = [f"{v.path}: {v.hazard or v.message}" for v in r.cpp_paths
                if v.hazard or v.different_tensor]  # fmt: skip
        if warn:
            return True, f"{path}: ok for C++ ({names}), WARNING: {'; '.join(warn)}"
        return True, f"{path}: ok for C++ ({names})"
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
            reports.append({"path": path, "valid": False, "error": _text(path, exc)})
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
        print(json.dumps(reports, indent=2))
    return status


def _npy_header(path: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The shape and dtype a ``.npy`` header declares."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    return tuple(shape), dtype


_BAD_CONTENT = (ValueError, OverflowError, TypeError, MemoryError, EOFError)
"""What NumPy raises for a ``.npy`` file it cannot read (besides OSError)."""


def _read_npy(src: str) -> npt.NDArray[Any]:
    with _io._open_fd(src):  # refuses a FIFO or device before NumPy blocks on it
        pass
    shape, dtype = _npy_header(src)
    if dtype.hasobject:
        raise _ConvertError(f"object arrays are not supported (dtype {dtype}): TSR holds "
                            "numbers only; save a numeric array")  # fmt: skip
    mode: Literal["r"] | None = None if 0 in shape else "r"  # NumPy cannot map empty arrays
    arr: npt.NDArray[Any] = np.load(src, mmap_mode=mode, allow_pickle=False)
    return arr


class _ConvertError(Exception):
    """A file ``convert`` cannot read, for a reason of its own."""


def _read_npz(src: str) -> list[Any]:
    """The arrays of an .npz in order: ``arr_0, arr_1, ...`` by number (as ``np.savez``
    names positional arrays), other names after them in file order."""
    with _io._open_fd(src):  # refuses a FIFO or device before NumPy blocks on it
        pass
    with np.load(src, allow_pickle=False) as z:
        names = list(z.files)

        def key(n: str) -> tuple[int, int]:
            num = n[4:]
            return (0, int(num)) if n.startswith("arr_") and num.isdigit() else (1, 0)

        return [z[n] for n in sorted(names, key=key)]


def _write_npy_like(dst: str, arrays: list[Any], fsync: bool) -> None:
    def write(fd: int) -> None:
        with os.fdopen(fd, "wb", closefd=False) as f:
            if dst.lower().endswith(".npz"):
                np.savez(f, *arrays)
            else:
                np.lib.format.write_array(f, arrays[0], allow_pickle=False)

    _io.atomic_write(dst, write, fsync=fsync)


_KINDS = (".tsr", ".npy", ".npz")


def _cmd_convert(args: argparse.Namespace) -> int:
    src, dst = args.input, args.output
    kinds = (os.path.splitext(src)[1].lower(), os.path.splitext(dst)[1].lower())
    if kinds[0] not in _KINDS or kinds[1] not in _KINDS or kinds[0] == kinds[1] != ".tsr":
        print(f"tsr: convert: cannot convert {kinds[0] or 'no extension'} to "
              f"{kinds[1] or 'no extension'}: use .tsr (any generation), .npy or .npz",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    compression: Compression = "zlib" if args.zlib else None
    try:  # reading: errors name the input
        if kinds[0] == ".npy":
            arrays = [_read_npy(src)]
        elif kinds[0] == ".npz":
            arrays = _read_npz(src)
        else:
            arrays = _api.load_all(src, reserved_dtypes=args.reserved_dtypes)
    except (TSRError, OSError, _ConvertError, *_BAD_CONTENT) as exc:
        _error(src, exc)
        return EXIT_INVALID
    try:  # writing: system errors name the output, what it cannot hold the input
        if kinds[1] != ".tsr":
            if kinds[1] == ".npy" and len(arrays) != 1:
                raise BadArgumentError(
                    f"{src} holds {len(arrays)} tensors: convert it to .npz, or to a "
                    "multi-tensor .tsr (--format v4)", field="output",
                )  # fmt: skip
            _write_npy_like(dst, arrays, args.fsync)
            return EXIT_OK
        fmt = args.format or (_api.format_of(src) if kinds[0] == ".tsr" else None)
        fmt = fmt or ("v4" if len(arrays) != 1 or args.zlib else "v1")
        if len(arrays) == 1 and not _formats.by_name(fmt).multi_tensor:
            _api.save(dst, arrays[0], format=fmt, compression=compression,
                      reserved_dtypes=args.reserved_dtypes, fsync=args.fsync)  # fmt: skip
        else:
            _api.save_all(dst, arrays, format=fmt, compression=compression, fsync=args.fsync)
    except OSError as exc:
        _error(dst, exc)
        return EXIT_INVALID
    except (TSRError, *_BAD_CONTENT) as exc:
        _error(src, exc)
        return EXIT_INVALID
    return EXIT_OK


def _cmd_dump(args: argparse.Namespace) -> int:
    threshold = sys.maxsize if args.full else 1000
    try:
        with _api.open(args.file, strict=False, reserved_dtypes=True) as f:
            several = len(f) != 1 or f.format == "v4"
            for t in f.tensors:
                arr = f[t.index]
                label = f"[{t.index}] " if several else ""
                print(f"{args.file}: {label}{t.dtype} {tuple(t.shape)}")
                print(np.array2string(arr, threshold=threshold, edgeitems=args.edge,
                                      separator=", "))  # fmt: skip
    except (TSRError, OSError) as exc:
        _error(args.file, exc)
        return EXIT_INVALID
    return EXIT_OK


_HINTS = {
    errno.ENOENT: "check the path (does its directory exist?)",
    errno.EACCES: "check the file's and its directory's permissions",
    errno.EPERM: "check the file's and its directory's permissions",
    errno.ENOSPC: "free some space on that filesystem",
    errno.EISDIR: "give a file name, not a directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EROFS: "the filesystem is read-only",
}


def _text(path: str, exc: BaseException | str) -> str:
    """One line about ``exc``: the system's words and a fix for OSError, the message of
    the others, in the CLI's terms (flags, not keyword arguments), without the path."""
    if isinstance(exc, str):
        text = exc
    elif isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        hint = _HINTS.get(exc.errno or 0)
        if hint:
            text += f" ({hint})"
    else:
        text = str(exc) or type(exc).__name__
    text = text.replace("reserved_dtypes=True", "--reserved-dtypes")
    for prefix in (f"{path}: ", f"{path!r}: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return " ".join(text.split())  # one line


def _error(path: str, exc: BaseException | str) -> None:
    print(f"tsr: {path}: {_text(path, exc)}", file=sys.stderr)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


# ----------------------------------------------------------------------------- verification

_TENSOR_SUFFIXES = (".tsr", ".npy")


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.8g}"


def _json_safe(x: Any) -> Any:
    """NaN and infinities as the strings ``NaN``, ``Infinity``, ``-Infinity`` (JSON has none)."""
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _tensor_files(root: str) -> dict[str, str]:
    """The tensor files under ``root`` by name: relative path without .tsr/.npy."""
    found: dict[str, str] = {}
    for top, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext.lower() in _TENSOR_SUFFIXES:
                full = os.path.join(top, f)
                key = os.path.relpath(os.path.join(top, stem), root)
                found[key] = full if key not in found else found[key] + "|" + full
    return found


def _compare_pair(args: argparse.Namespace, name: str, a: str, b: str) -> list[dict[str, Any]]:
    """Compare two files: one row, or one per tensor of multi-tensor files (by position)."""
    row: dict[str, Any] = {"name": name or None, "a": a, "b": b}
    if "|" in a or "|" in b:
        both = a if "|" in a else b
        row.update(ok=False, error=f"ambiguous: {both.replace('|', ' and ')}")
        print(f"tsr: {name}: {row['error']}", file=sys.stderr)
        return [row]
    try:
        na, nb = _tensors.count(a), _tensors.count(b)
    except (TSRError, OSError) as exc:
        return [_failed(row, a, b, exc)]
    if na == nb == 1:
        return [_compare_one(args, row, f"{name}: " if name else f"{a} vs {b}: ", None)]
    rows = []
    for i in range(max(na, nb)):
        label = f"{name}[{i}]: " if name else f"{a}[{i}] vs {b}[{i}]: "
        sub = {**row, "index": i}
        if i < na and i < nb:
            rows.append(_compare_one(args, sub, label, i))
            continue
        sub.update(ok=False, error=f"tensor {i} only in {'A' if i < na else 'B'}")
        rows.append(sub)
        if not args.json:
            print(f"{label}MISSING, tensor {i} only in {'A' if i < na else 'B'} "
                  f"({na} against {nb} tensors)")  # fmt: skip
    return rows


def _failed(row: dict[str, Any], a: str, b: str, exc: BaseException) -> dict[str, Any]:
    path = exc.filename if isinstance(exc, OSError) and exc.filename else f"{a} vs {b}"
    _error(str(path), exc)
    row.update(ok=False, error=_message(exc))
    return row


def _compare_one(
    args: argparse.Namespace, row: dict[str, Any], label: str, index: int | None
) -> dict[str, Any]:
    a, b = row["a"], row["b"]
    try:
        ta = _tensors.one_tensor(a, index=index)
        tb = _tensors.one_tensor(b, index=index)
        c = compare(ta, tb, rtol=args.rtol, atol=args.atol, equal_nan=not args.nan_differs,
                    listed=args.first if args.verbose else 0)  # fmt: skip
    except (TSRError, OSError) as exc:
        return _failed(row, a, b, exc)
    row.update(c.to_dict())
    if not args.json:
        print(label + c.summary())
        for m in c.first_mismatches:
            print(f"  {list(m.index)}: {_g(m.a)} vs {_g(m.b)}")
    return row


def _cmd_compare(args: argparse.Namespace) -> int:
    a_dir, b_dir = os.path.isdir(args.a), os.path.isdir(args.b)
    if a_dir != b_dir:
        print(f"tsr: compare: {args.a if a_dir else args.b} is a directory and "
              f"{args.b if a_dir else args.a} is not: give two files or two directories",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if not a_dir:
        rows = _compare_pair(args, "", args.a, args.b)
    else:
        in_a, in_b = _tensor_files(args.a), _tensor_files(args.b)
        rows = []
        for name in sorted(in_a.keys() | in_b.keys()):
            if name in in_a and name in in_b:
                rows.extend(_compare_pair(args, name, in_a[name], in_b[name]))
                continue
            where, path = ("A", in_a[name]) if name in in_a else ("B", in_b[name])
            rows.append({"name": name, "a": in_a.get(name), "b": in_b.get(name), "ok": False,
                         "error": f"only in {where}"})  # fmt: skip
            if not args.json:
                print(f"{name}: MISSING, only in {where} ({path})")
        if not args.json:
            bad = sum(not r["ok"] for r in rows)
            print(f"{len(rows)} name(s): {len(rows) - bad} ok, {bad} different or missing")
    if args.json:
        print(json.dumps(_json_safe(rows), indent=2))
    return EXIT_OK if all(r["ok"] for r in rows) else EXIT_INVALID


def _info_stats(path: str, info: dict[str, Any]) -> list[Stats] | bool:
    """The statistics of each tensor of ``path`` (also put in ``info["stats"]``, a list),
    or False after an error."""
    try:
        found = [stats(_tensors.one_tensor(path, index=i)) for i in range(_tensors.count(path))]
    except (TSRError, OSError) as exc:
        _error(path, exc)
        return False
    info["stats"] = [s.to_dict() for s in found]
    return found


def _print_stats(found: list[Stats] | bool | None) -> None:
    if isinstance(found, list):
        for i, st in enumerate(found):
            print(_stats_line(st, i if len(found) > 1 else None))


def _stats_line(s: Stats, index: int | None = None) -> str:
    which = "" if index is None else f"[{index}]"
    return (f"  stats{which}: min {_g(s.min)} max {_g(s.max)} mean {_g(s.mean)} std {_g(s.std)}, "
            f"nan {s.nan}, inf {s.inf}, zeros {s.zeros}")  # fmt: skip


def _cmd_show(args: argparse.Namespace) -> int:
    from . import show

    out = args.output or show.default_output(args.file, args.index)
    try:
        show.save_picture(args.file, out, index=args.index)
    except show.MissingExtraError as exc:
        print(f"tsr: show: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (TSRError, OSError) as exc:
        _error(exc.filename if isinstance(exc, OSError) and exc.filename else args.file, exc)
        return EXIT_INVALID
    print(out)
    return EXIT_OK


def _message(exc: BaseException) -> str:
    return _text("", exc)


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tsr`` command."""
    p = argparse.ArgumentParser(
        prog="tsr", description="Inspect, validate and convert TSR files (v1, TSR3, TSR4)."
    )
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="format, dtype, shape, sizes (reads headers only)")
    info.add_argument("files", nargs="+", metavar="FILE")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--stats", action="store_true",
                      help="also min, max, mean, std, NaN, inf, zeros (reads data)")  # fmt: skip
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

    conv = sub.add_parser(
        "convert",
        help="convert between .tsr (v1, v3, v4), .npy and .npz",
        description="IN and OUT by extension: .tsr of any generation, .npy (one tensor), "
        ".npz (several, arr_0, arr_1, ...). A .tsr output takes --format (default: the "
        "input's generation, else v1; v4 for several tensors or --zlib).",
    )
    conv.add_argument("input", metavar="IN")
    conv.add_argument("output", metavar="OUT")
    conv.add_argument("--format", choices=sorted(_formats.BY_NAME),
                      help="generation of a .tsr output")  # fmt: skip
    conv.add_argument("--zlib", action="store_true", help="compress a TSR3/TSR4 output (zlib)")
    conv.add_argument("--reserved-dtypes", action="store_true",
                      help="allow float16/float64/int16/uint8 (not readable by C++)")  # fmt: skip
    conv.add_argument("--fsync", action="store_true", help="flush to disk before returning")
    conv.set_defaults(run=_cmd_convert)

    dump = sub.add_parser("dump", help="print the values (summarised like NumPy)")
    dump.add_argument("file", metavar="FILE")
    dump.add_argument("--full", action="store_true", help="print every value")
    dump.add_argument("--edge", type=_positive_int, default=3,
                      help="items shown at each edge, >= 1 (3)")  # fmt: skip
    dump.set_defaults(run=_cmd_dump)

    cmp = sub.add_parser(
        "compare",
        help="compare A with the reference B: exit 0 within tolerance, 1 not",
        description="Element by element, in float64, NumPy's isclose rule "
        "(|a-b| <= atol + rtol*|b|). Two directories: files paired by name (.tsr or .npy, "
        "extension ignored), one line per pair, files found on one side only listed; "
        "exit 1 if any pair differs or is missing.",
    )
    cmp.add_argument("a", metavar="A", help="file or directory (the result to check)")
    cmp.add_argument("b", metavar="B", help="file or directory (the reference)")
    cmp.add_argument("--rtol", type=_tolerance, default=1e-5, help="relative tolerance (1e-5)")
    cmp.add_argument("--atol", type=_tolerance, default=1e-8, help="absolute tolerance (1e-8)")
    cmp.add_argument("--nan-differs", action="store_true", help="NaN against NaN is a mismatch")
    cmp.add_argument("-v", "--verbose", action="store_true",
                     help="list the first mismatching elements")  # fmt: skip
    cmp.add_argument("--first", type=_count, default=10, metavar="N",
                     help="how many mismatches -v lists (10)")  # fmt: skip
    cmp.add_argument("--json", action="store_true", help="a JSON array, one object per pair")
    cmp.set_defaults(run=_cmd_compare)

    show = sub.add_parser(
        "show",
        help="a picture (PNG): heat map, image grid or line plot; needs tsr-tensor[show]",
        description="2-D: a heat map with a colour bar; 3-D and 4-D: a grid of images "
        "(NCHW for TSR v1 and .npy, NHWC for TSR v3/v4; 1 or 3 channels as grey or colour "
        "images, others one tile per channel); 1-D: a line plot.",
    )
    show.add_argument("file", metavar="FILE")
    show.add_argument("-o", "--output", metavar="OUT",
                      help="the PNG to write (default: FILE's name with .png, here)")  # fmt: skip
    show.add_argument("--index", type=_count, metavar="I",
                      help="which tensor of a multi-tensor file")  # fmt: skip
    show.set_defaults(run=_cmd_show)
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
    except Exception as exc:  # a bug of ours: still one line, never a traceback
        print(f"tsr: {args.command}: internal error: {type(exc).__name__}: {_text('', exc)}",
              file=sys.stderr)  # fmt: skip
        return EXIT_INVALID
    return status


if __name__ == "__main__":
    sys.exit(main())
