"""Python side of the C++17 conformance kit in ``tests/interop/cpp``.

Finds a C++ compiler, builds the kit's two programs (``tsr_cpp``: reader, writer and
SHA-256; ``session_driver``: a ``PythonSession``-like client) and wraps their command-line
interfaces. Used by the interop tests and by ``bench/bench_interop.py``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CPP_DIR = HERE / "cpp"
REPO = HERE.parents[1]
VECTORS = REPO / "tests" / "data" / "vectors1"  # a copy of ../shared/vectors
MALFORMED = VECTORS / "malformed"

CXXFLAGS = ("-std=c++17", "-O2", "-Wall", "-Wextra", "-ffp-contract=off")
PROGRAMS = {"tsr_cpp": "tsr_cpp.cpp", "session_driver": "session_driver.cpp"}


def find_cxx() -> list[str] | None:
    """The C++ compiler command: ``$CXX`` (may carry flags), else c++, g++, clang++."""
    env = os.environ.get("CXX", "").strip()
    candidates: list[list[str]] = []
    if env:
        candidates.append(shlex.split(env))
    candidates += [["c++"], ["g++"], ["clang++"]]
    for cmd in candidates:
        found = shutil.which(cmd[0])
        if found:
            return [found, *cmd[1:]]
    return None


class BuildError(RuntimeError):
    """The compiler is there but the kit did not compile."""


@dataclass(frozen=True)
class KitBuild:
    tsr_cpp: Path
    session_driver: Path
    seconds: float


def build_kit(cxx: Sequence[str], out_dir: Path) -> KitBuild:
    """Compile both programs in parallel into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    procs: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    for name, source in PROGRAMS.items():
        exe = out_dir / name
        cmd = [*cxx, *CXXFLAGS, "-o", str(exe), str(CPP_DIR / source)]
        procs[name] = (
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
            exe,
        )
    errors = []
    for name, (proc, _exe) in procs.items():
        output, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            errors.append(f"{name}: exit {proc.returncode}\n{output}")
    if errors:
        raise BuildError("\n".join(errors))
    return KitBuild(
        tsr_cpp=procs["tsr_cpp"][1],
        session_driver=procs["session_driver"][1],
        seconds=time.monotonic() - start,
    )


_ACCEPT = re.compile(
    r"^accept: (?P<dtype>FP32|INT8|INT32) \((?P<shape>[0-9,]*)\) numel=(?P<numel>\d+)"
    r" sha256=(?P<sha>[0-9a-f]{64}) sum=(?P<sum>\S+)$"
)


@dataclass(frozen=True)
class CppRead:
    """What the kit's ``import_tensor`` did with one file."""

    line: str
    accepted: bool
    message: str  # the reject message ("" on accept)
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    numel: int | None = None
    sha256: str | None = None

    @classmethod
    def parse(cls, line: str) -> CppRead:
        if line.startswith("reject: "):
            return cls(line=line, accepted=False, message=line[len("reject: ") :])
        m = _ACCEPT.match(line)
        if m is None:
            raise ValueError(f"unexpected tsr_cpp output line: {line!r}")
        shape = tuple(int(d) for d in m["shape"].split(",")) if m["shape"] else ()
        return cls(
            line=line,
            accepted=True,
            message="",
            dtype=m["dtype"],
            shape=shape,
            numel=int(m["numel"]),
            sha256=m["sha"],
        )


class CppKit:
    """Runs the compiled ``tsr_cpp``."""

    def __init__(self, build: KitBuild) -> None:
        self.build = build
        self.exe = build.tsr_cpp

    def _run(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        stdin: bytes | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            [str(self.exe), *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"tsr_cpp {' '.join(args)} exited {proc.returncode}: "
                f"{proc.stdout.decode(errors='replace')}{proc.stderr.decode(errors='replace')}"
            )
        return proc

    def read_lines(self, paths: Sequence[str | Path], *, cwd: Path | None = None) -> list[str]:
        out = self._run(["read", *map(str, paths)], cwd=cwd).stdout.decode()
        lines = out.splitlines()
        assert len(lines) == len(paths), out
        return lines

    def read(self, paths: Sequence[str | Path], *, cwd: Path | None = None) -> list[CppRead]:
        return [CppRead.parse(line) for line in self.read_lines(paths, cwd=cwd)]

    def read_one(self, path: str | Path) -> CppRead:
        return self.read([path])[0]

    def values(self, path: str | Path) -> tuple[CppRead, list[str]]:
        """The read verdict and the element lines (FP32: ``"<bits hex> <%.9g>"``)."""
        lines = self._run(["values", str(path)]).stdout.decode().splitlines()
        return CppRead.parse(lines[0]), lines[1:]

    def write(
        self,
        dtype: str,
        out: str | Path,
        source: str,
        dims: Sequence[int],
        *,
        stdin: bytes | None = None,
    ) -> tuple[int, str]:
        """Run the writer; return (exit status, its output line)."""
        proc = self._run(
            ["write", dtype, str(out), source, *map(str, dims)], stdin=stdin, check=False
        )
        return proc.returncode, proc.stdout.decode().strip()

    def sha256(self, paths: Sequence[str | Path], *, stdin: bytes | None = None) -> list[str]:
        out = self._run(["sha256", *map(str, paths)], stdin=stdin).stdout.decode()
        return out.split()


# The first import_tensor check a reject message belongs to (names as in tsr.CppVerdict.check).
_CHECK_KEYS = (
    ("File too small to contain valid TSR header", "file_too_small"),
    ("Invalid TSR file magic number", "magic"),
    ("Unsupported TSR format version", "version"),
    ("Unsupported dtype value", "dtype"),
    ("Invalid ndim value", "ndim"),
    ("Element count mismatch", "element_count"),
    ("Invalid dimension value", "dimension"),
    ("File size mismatch", "file_size"),
    ("Cannot allocate zero bytes", "allocation"),
    ("Failed to read complete tensor data", "allocation"),
    ("[Shape] Dimension must be positive", "allocation"),
    ("[Shape] Shape dimensions are too large", "allocation"),
    ("Memory allocation failed", "allocation"),
)


def check_name(read: CppRead) -> str | None:
    """The check name of a kit verdict: None on accept."""
    if read.accepted:
        return None
    for key, name in _CHECK_KEYS:
        if read.message.startswith(key):
            return name
    raise ValueError(f"unclassified C++ reject message: {read.message!r}")


def key_text(read: CppRead) -> str:
    """The stable part of a verdict: the reject message's leading phrase, or the accept line
    up to and including numel."""
    if read.accepted:
        return read.line.split(" sha256=")[0]
    for key, _name in _CHECK_KEYS:
        if read.message.startswith(key):
            return key
    return read.message


# ---------------------------------------------------------------- the session driver


@dataclass
class DriverRun:
    """What one ``session_driver run`` printed."""

    returncode: int
    log: str
    steps: list[tuple[str, float]]
    texts: dict[str, str]
    results: dict[str, Path]
    inputs: dict[str, dict[str, Path]]
    checks: dict[str, str]  # name -> "ok" or "FAIL <detail>"
    done: str

    def failures(self) -> dict[str, str]:
        return {k: v for k, v in self.checks.items() if v != "ok"}

    def step_ms(self, name: str) -> float:
        for step, ms in self.steps:
            if step == name:
                return ms
        raise KeyError(name)


def parse_driver_output(returncode: int, log: str) -> DriverRun:
    run = DriverRun(returncode, log, [], {}, {}, {}, {}, "")
    for line in log.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "STEP":
            name, ms = rest.rsplit(" ", 1)
            run.steps.append((name, float(ms)))
        elif kind == "TEXT":
            label, _, text = rest.partition(" ")
            run.texts[label] = text
        elif kind == "RESULT":
            label, path = rest.split(" ", 1)
            run.results[label] = Path(path)
        elif kind == "INPUT":
            label, tag, path = rest.split(" ", 2)
            run.inputs.setdefault(label, {})[tag] = Path(path)
        elif kind == "CHECK":
            name, _, verdict = rest.partition(" ")
            run.checks[name] = verdict
        elif kind == "DONE":
            run.done = rest
    return run


def start_driver(
    driver: Path,
    *,
    script: Path,
    workspace: Path,
    layout: str,
    session_id: str,
    out: Path,
    scenario: str = "full",
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start the driver; its output goes to ``out/driver.log`` (a file, not a pipe: the
    worker that the driver launches inherits the descriptors and may outlive it)."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "driver.log"
    cmd = [
        str(driver), "run", "--script", str(script), "--workspace", str(workspace),
        "--layout", layout, "--session-id", session_id, "--out", str(out),
        "--scenario", scenario, *extra,
    ]  # fmt: skip
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env
        )
    return proc, log


def finish_driver(proc: subprocess.Popen[bytes], log: Path, *, timeout: float = 180) -> DriverRun:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    return parse_driver_output(proc.returncode, log.read_text("utf-8", errors="replace"))


def pids_running(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker`` (e.g. a launcher's
    unique path), so a test ends only the workers it started."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def wait_gone(marker: str, timeout: float) -> list[int]:
    """Wait until no process matches ``marker``; return those still there."""
    deadline = time.monotonic() + timeout
    while True:
        left = pids_running(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
