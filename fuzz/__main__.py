"""Run a fuzz harness under atheris (libFuzzer).

Usage, from the repository root::

    .venv/bin/python -m fuzz HARNESS [--as-limit-mb=N] [libFuzzer flags] [corpus dirs]

HARNESS is ``reader`` (TSR v1), ``v3`` (TSR3), ``v4`` (TSR4) or ``worker``. Without corpus
dirs, new inputs go to
``fuzz/corpus-work/HARNESS`` (not committed) and the committed seeds in
``fuzz/corpus/HARNESS`` are read too. Defaults added unless given: ``-timeout=10``
(seconds per input: a slower input is a crash), ``-rss_limit_mb=2048``, the harness's
dictionary ``-dict=fuzz/HARNESS.dict``. ``--as-limit-mb`` (default 2048) caps the address
space the process may add after start-up (``RLIMIT_AS``), so that an allocation the input
asks for fails with ``MemoryError`` (a crash) instead of swapping. Statistics (executions,
outcome counts, known-bug hits) are printed on stderr as ``#stats`` lines.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import resource
import sys
import time
import types
from collections.abc import Callable, Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESSES = ("reader", "worker", "v3", "v4")


def _vm_size_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _limit_address_space(extra_mb: int) -> None:
    if extra_mb <= 0:
        return
    limit = _vm_size_bytes() + extra_mb * (1 << 20)
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _with_defaults(name: str, args: list[str]) -> list[str]:
    flags = [a for a in args if a.startswith("-")]
    dirs = [a for a in args if not a.startswith("-")]
    given = {a.split("=", 1)[0] for a in flags}
    if "-timeout" not in given:
        flags.append("-timeout=10")
    if "-rss_limit_mb" not in given:
        flags.append("-rss_limit_mb=2048")
    dictionary = HERE / f"{name}.dict"
    if "-dict" not in given and dictionary.is_file():
        flags.append(f"-dict={dictionary}")
    if not dirs:
        work = HERE / "corpus-work" / name
        work.mkdir(parents=True, exist_ok=True)
        dirs = [str(work), str(HERE / "corpus" / name)]
    return flags + dirs


class _Stats:
    """Counts executions and prints the harness's outcome counts now and then."""

    def __init__(self, stats: Mapping[str, int]) -> None:
        self.stats = stats
        self.execs = 0
        self.start = time.monotonic()
        self.next_report = 1000

    def tick(self) -> None:
        self.execs += 1
        if self.execs >= self.next_report:
            self.report()
            self.next_report = min(self.next_report * 2, self.next_report + 100_000)

    def report(self) -> None:
        elapsed = time.monotonic() - self.start
        line = {"execs": self.execs, "seconds": round(elapsed, 1), **dict(self.stats)}
        print(f"#stats {json.dumps(line, sort_keys=True)}", file=sys.stderr, flush=True)


UNTRACED: dict[str, tuple[str, ...]] = {"tsr.v4": ("writer_exact",)}
"""Functions given back their uninstrumented code once their module is imported under
atheris. Atheris's comparison hook leaks a reference on every rich comparison whose result
is a NumPy array (some 150 bytes each: the TSR4 process grew from 266 to 556 MB over
126,517 executions, and a three-line instrumented ``(a >= 0) & (a <= n)`` grows by 100 MB
per million calls while the same with ``np.greater_equal`` stays flat). These functions are
vectorised checks made of such comparisons, whose branches are inside NumPy: there is no
coverage to gain in them."""


def plain_code(module: types.ModuleType) -> dict[str, types.CodeType]:
    """The code of ``module``'s top-level functions, compiled from its source without
    instrumentation, by name."""
    path = str(module.__file__)
    compiled = compile(Path(path).read_text(encoding="utf-8"), path, "exec")
    return {c.co_name: c for c in compiled.co_consts if isinstance(c, types.CodeType)}


def untrace(module: types.ModuleType, names: tuple[str, ...]) -> None:
    """Give ``module``'s top-level functions ``names`` their :func:`plain_code`."""
    plain = plain_code(module)
    for name in names:
        getattr(module, name).__code__ = plain[name]


def _load(name: str) -> tuple[Callable[[bytes], None], Mapping[str, int], list[str]]:
    """Import the harness with tsr (and the worker) instrumented for coverage."""
    import atheris
    import numpy  # noqa: F401  (imported first: not instrumented)

    with contextlib.suppress(ImportError):
        import torch  # noqa: F401
    include = {
        "reader": ["tsr", "fuzz.cpp_model"],
        "v3": ["tsr"],
        "v4": ["tsr.v4", "tsr._v4cpp", "tsr._api", "tsr._blocks", "tsr._zlib", "tsr._io"],
    }.get(name, ["tsr", "tsr_worker"])
    with atheris.instrument_imports(include=include):
        mod = importlib.import_module(f"fuzz.{name}_harness")
        mod.prepare()
    for module, names in UNTRACED.items():
        if module in sys.modules:
            untrace(sys.modules[module], names)
    return mod.TestOneInput, mod.STATS, include


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in HARNESSES:
        print(__doc__, file=sys.stderr)
        return 2
    name = argv[1]
    extra_mb = 2048
    rest: list[str] = []
    for a in argv[2:]:
        if a.startswith("--as-limit-mb="):
            extra_mb = int(a.split("=", 1)[1])
        else:
            rest.append(a)
    import atheris

    one_input, stats, include = _load(name)
    _limit_address_space(extra_mb)
    counter = _Stats(stats)
    print(f"#harness {name}: instrumented {include}", file=sys.stderr, flush=True)

    def run(data: bytes) -> None:
        counter.tick()
        one_input(data)

    atheris.Setup([argv[0], *_with_defaults(name, rest)], run)
    try:
        atheris.Fuzz()
    finally:
        counter.report()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
