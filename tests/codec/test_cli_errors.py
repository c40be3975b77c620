"""The CLI's and the readers' messages: one line, the path that failed, the fix
(issue 14, points 9, 16, 17, 19, 21, 22, 23)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tsr
from tsr import _io
from tsr.cli import main

GOOD = Path(__file__).resolve().parents[2] / "spec" / "vectors" / "fp32_3d_2x3x4.tsr"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tsr", *args], capture_output=True,
                          text=True, check=False, timeout=timeout)  # fmt: skip


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_convert_refuses_a_fifo_instead_of_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "in.npy"
    os.mkfifo(fifo)
    proc = cli("convert", str(fifo), str(tmp_path / "out.tsr"))  # hung forever before
    assert proc.returncode == 1
    line = one_line(proc)
    assert line.startswith(f"tsr: {fifo}: ") and "not a regular file" in line
    assert not (tmp_path / "out.tsr").exists()


def _npy_with_header(path: Path, header: dict[str, object]) -> None:
    text = repr(header).encode("latin-1")
    pad = 64 - (10 + len(text) + 1) % 64
    body = text + b" " * pad + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body)


def test_convert_of_an_npy_declaring_a_dim_beyond_int64_is_one_line(tmp_path: Path) -> None:
    src = tmp_path / "huge.npy"
    _npy_with_header(src, {"descr": "<f4", "fortran_order": False, "shape": (2**70,)})
    proc = cli("convert", str(src), str(tmp_path / "out.tsr"))
    assert proc.returncode == 1 and one_line(proc).startswith(f"tsr: {src}: ")


def test_convert_of_an_object_npy_says_object_arrays_are_not_supported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    src = tmp_path / "obj.npy"
    np.save(src, np.array([1, "a", None], dtype=object), allow_pickle=True)
    code, _, err = run(capsys, "convert", str(src), str(tmp_path / "o.tsr"))
    assert code == 1 and err.startswith(f"tsr: {src}: object arrays are not supported")
    assert "memory-mapped" not in err


def test_convert_names_the_output_when_the_output_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dst = tmp_path / "missing-dir" / "x.npy"
    code, _, err = run(capsys, "convert", str(GOOD), str(dst))
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"tsr: {dst}: No such file or directory") and "directory exist" in err
    dst = tmp_path / "missing-dir" / "x.tsr"
    np.save(tmp_path / "ok.npy", np.ones(2, np.float32))
    code, _, err = run(capsys, "convert", str(tmp_path / "ok.npy"), str(dst))
    assert code == 1 and err.startswith(f"tsr: {dst}: ")


def test_info_of_a_truncated_file_fails_and_shows_the_real_size(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    short = tmp_path / "short.tsr"
    short.write_bytes(GOOD.read_bytes()[:100])
    code, out, err = run(capsys, "info", str(short))
    assert code == 1
    assert "file 100 B (the header declares 160 B)" in out
    assert err.strip() == (f"tsr: {short}: truncated: the header declares 160 bytes but the "
                           "file has 100; was it fully written?")  # fmt: skip
    code, out, _ = run(capsys, "info", "--json", str(short))
    (row,) = json.loads(out)
    assert code == 1 and row["file_bytes"] == 100 and row["declared_file_bytes"] == 160
    assert "truncated" in row["error"]


@pytest.mark.parametrize("command", ["info", "validate"])
def test_json_is_always_an_array_with_one_element_per_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    code, out, _ = run(capsys, command, "--json", str(GOOD))
    rows = json.loads(out)
    assert code == 0 and isinstance(rows, list) and len(rows) == 1
    missing = tmp_path / "missing.tsr"
    code, out, _ = run(capsys, command, "--json", str(missing))
    (row,) = json.loads(out)
    assert code == 1 and row["path"] == str(missing) and "No such file" in row["error"]
    code, out, _ = run(capsys, command, "--json", str(GOOD), str(missing), str(GOOD))
    assert [r["path"] for r in json.loads(out)] == [str(GOOD), str(missing), str(GOOD)]


def test_messages_use_the_cli_flag_not_the_keyword(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    f = tmp_path / "h.tsr"
    tsr.save(f, np.ones(2, np.float16), reserved_dtypes=True)
    code, _, err = run(capsys, "convert", str(f), str(tmp_path / "h.npy"))
    assert code == 1 and "pass --reserved-dtypes" in err and "reserved_dtypes=" not in err


def test_info_of_a_directory_names_it_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "info", str(tmp_path))
    assert code == 1 and err.count(str(tmp_path)) == 1 and "not a regular file" in err


@pytest.mark.parametrize("edge", ["-1", "0", "x"])
def test_dump_refuses_a_negative_or_zero_edge(
    capsys: pytest.CaptureFixture[str], edge: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["dump", "--edge", edge, str(GOOD)])
    assert info.value.code == 2 and ">= 1" in capsys.readouterr().err


def test_an_unexpected_error_is_still_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(np, "array2string", boom)  # a failure no handler expects
    code, _, err = run(capsys, "dump", str(GOOD))
    assert code == 1 and err == "tsr: dump: internal error: RuntimeError: something broke\n"


# ----------------------------------------------------------------------------- the API


def test_a_closed_file_object_is_a_bad_argument_and_validate_never_raises(tmp_path: Path) -> None:
    with open(GOOD, "rb") as f:
        pass
    for call in (tsr.load, tsr.read_header):
        with pytest.raises(tsr.BadArgumentError, match="closed"):
            call(f)
    report = tsr.validate(f)
    assert not report.ok and "closed" in report.errors[0].message


def test_bytes_paths_work_alike_in_save_load_read_header_and_validate(tmp_path: Path) -> None:
    """Decided: a bytes path is a path everywhere, as for ``open``."""
    path = os.fsencode(tmp_path / "b.tsr")
    tsr.save(path, np.arange(3, dtype=np.int32))
    assert tsr.load(path).tolist() == [0, 1, 2]
    assert tsr.read_header(path).shape == (3,)
    report = tsr.validate(path)
    assert report.ok and report.path == str(tmp_path / "b.tsr")
    with tsr.open(path) as f:
        assert f[0].tolist() == [0, 1, 2]


@pytest.mark.skipif(not hasattr(os, "preadv"), reason="fakes a shrinking preadv")
def test_a_file_truncated_under_a_read_names_its_declared_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read in parallel parts, the cut is in some part: the message still says how big
    the file should be, not where that part ends."""
    monkeypatch.setattr(_io, "_PARALLEL_PART_BYTES", 4096)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    path = tmp_path / "x.tsr"
    tsr.save(path, np.zeros(1 << 14, np.float32))  # 64 KiB payload, read in 4 parts
    real = os.preadv

    def shrinking(fd: int, buffers: list[memoryview], offset: int) -> int:
        return 0 if offset >= 30000 else real(fd, buffers, offset)  # the file shrank

    monkeypatch.setattr(os, "preadv", shrinking)
    with pytest.raises(tsr.TruncatedError) as info:
        tsr.load(path, mmap=False)
    assert info.value.expected == 64 + (1 << 16)
    assert f"up to byte {64 + (1 << 16)}" in str(info.value)
