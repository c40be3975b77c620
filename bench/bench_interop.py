"""Per-step timings of the C++ PythonSession-like client against our worker and against the
same worker polling like upstream, side by side.

The client is the interop kit's ``session_driver`` (tests/interop/cpp), compiled here with
the system C++ compiler. Each worker is started the framework's way, through a launcher
written by ``tsr-worker --write-launcher`` and run as ``python3 "<launcher>" <id> &``:

* ours: ``--wait auto`` (inotify where available, event-driven);
* upstream-like: ``--wait upstream`` (sleeps the upstream 32 ms -> 1024 ms back-off).

Runs are sequential (one worker at a time) and each is repeated; the table shows medians.

    .venv/bin/python bench/bench_interop.py [--repeat 3] [--layout python_session]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from interop.kitlib import (  # noqa: E402
    DriverRun,
    KitBuild,
    build_kit,
    find_cxx,
    finish_driver,
    pids_running,
    start_driver,
    wait_gone,
)

MODES = {"ours": "auto", "upstream-like": "upstream"}
COMMANDS = [
    "matmul", "add", "conv_k3_s1_p0", "conv_k3_s1_p1", "conv_k3_s2_p1", "conv_k1_s1_p0",
    "conv_k1_s2_p0", "conv_k7_s2_p3", "tconv_k3_s1_p1", "tconv_k3_s2_p1", "zeros_like",
    "ones_like", "relu", "sign", "square", "abs", "negative", "reciprocal", "round",
    "transpose", "sqrt", "transpose_3d",
]  # fmt: skip


def write_launcher(path: Path, workspace: Path, layout: str, wait: str) -> None:
    exe = Path(sys.executable).with_name("tsr-worker")
    subprocess.run(
        [str(exe), "--write-launcher", str(path), "--workspace", str(workspace),
         "--layout", layout, "--wait", wait],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def run_once(
    build: KitBuild, base: Path, *, mode: str, layout: str, scenario: str, extra: list[str]
) -> tuple[DriverRun, list[int]]:
    tag = uuid.uuid4().hex[:8]
    workspace = base / f"ws-{tag}"
    launcher = base / f"launcher-{mode}-{tag}.py"
    write_launcher(launcher, workspace, layout, MODES[mode])
    proc, log = start_driver(
        build.session_driver,
        script=launcher,
        workspace=workspace,
        layout=layout,
        session_id=f"bench_{tag}",
        out=base / f"out-{tag}",
        scenario=scenario,
        extra=extra,
    )
    run = finish_driver(proc, log)
    left = wait_gone(str(launcher), timeout=5.0)
    for pid in pids_running(str(launcher)):  # only the worker this run started
        subprocess.run(["kill", "-9", str(pid)], check=False)
    return run, left


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--layout", default="python_session",
                    choices=["python_session", "pytorch_session"])  # fmt: skip
    ap.add_argument(
        "--idle-ms",
        type=int,
        default=8000,
        help="idle time before a request and again before terminate(), plus a phase that "
        "steps through one 1024 ms window over the repeats (the upstream back-off reaches "
        "1024 ms sleeps after 7.9 s idle, so where a request lands in the worker's sleep "
        "decides its wait; default 8000)",
    )
    ap.add_argument("--json", type=Path, help="also write the raw timings here")
    args = ap.parse_args(argv)

    idle_label = f"{args.idle_ms / 1000:g}-{(args.idle_ms + 1024) / 1000:g} s idle"
    cxx = find_cxx()
    if cxx is None:
        print("no C++ compiler found ($CXX, c++, g++, clang++): nothing to benchmark")
        return 2
    # The table: one row per client step, one column per worker mode.
    with tempfile.TemporaryDirectory(prefix="bench-interop-") as tmp:
        base = Path(tmp)
        build = build_kit(cxx, base / "bin")
        print(f"kit compiled with {cxx[0]} in {build.seconds:.1f} s; layout {args.layout}, "
              f"{args.repeat} run(s) per mode, medians in ms\n")  # fmt: skip
        steps: dict[str, dict[str, list[float]]] = {m: {} for m in MODES}
        notes: dict[str, dict[str, list[str]]] = {m: {} for m in MODES}

        def add(mode: str, name: str, ms: float) -> None:
            steps[mode].setdefault(name, []).append(ms)

        def note(mode: str, name: str, text: str) -> None:
            notes[mode].setdefault(name, []).append(text)

        for rep in range(args.repeat):
            phase_ms = int((rep + 0.5) * 1024 / args.repeat)
            for mode in MODES:
                t0 = time.monotonic()
                full, left = run_once(
                    build, base, mode=mode, layout=args.layout, scenario="full", extra=[]
                )
                add(mode, "whole full scenario (wall)", (time.monotonic() - t0) * 1000)
                for name, ms in full.steps:
                    add(mode, name, ms)
                fetches = [full.step_ms(f"fetch_tensor:{c}") for c in COMMANDS]
                add(
                    mode,
                    f"fetch_tensor: mean of {len(COMMANDS)} commands",
                    statistics.mean(fetches),
                )
                add(mode, "fetch_tensor: max of the commands", max(fetches))
                note(mode, "client checks", "ok" if not full.failures() else str(full.failures()))
                note(mode, "workers left after exit", str(len(left)))
                for idle, what in ((0, "no idle"), (args.idle_ms + phase_ms, idle_label)):
                    term, left = run_once(
                        build, base, mode=mode, layout=args.layout, scenario="terminate",
                        extra=["--idle-ms", str(idle)],
                    )  # fmt: skip
                    if idle:
                        wait_ms = term.step_ms("fetch_response:hello_after_idle")
                        add(mode, f"fetch_response after {what}", wait_ms)
                        note(mode, f"fetch_response after {what} (each run)", f"{wait_ms:.0f}")
                    add(mode, f"terminate after {what}", term.step_ms("terminate"))
                    note(mode, f"status 500 ms after terminate ({what})",
                         term.texts.get("status_after_terminate", "?"))  # fmt: skip
                    note(mode, f"workers left after terminate ({what})", str(len(left)))

    rows = [
        "construct", "start", "send_tensor:design.a", "send_tensor:design.b",
        "fetch_tensor:design_matmul", "fetch_response:hello", "fetch_response:hi",
        *[f"fetch_tensor:{c}" for c in COMMANDS],
        f"fetch_tensor: mean of {len(COMMANDS)} commands", "fetch_tensor: max of the commands",
        "recv_tensor:tensor_square", "fetch_response:bad_arity",
        "fetch_response:good_after_bad_arity", "fetch_tensor:bad_request_timeout",
        "fetch_tensor:good_after_bad", "please_exit", "please_exit_until_terminated",
        "destructor", f"fetch_response after {idle_label}",
        "terminate after no idle", f"terminate after {idle_label}",
        "whole full scenario (wall)",
    ]  # fmt: skip
    width = max(len(r) for r in rows) + 2
    head = f"{'step':{width}s}" + "".join(f"{m:>15s}" for m in MODES)
    print(head)
    print("-" * len(head))
    for r in rows:
        cells = "".join(f"{median(steps[m].get(r, [])):15.1f}" for m in MODES)
        print(f"{r:{width}s}{cells}")
    print()
    for name in notes["ours"]:
        print(name)
        for m in MODES:
            print(f"    {m:15s} {' '.join(notes[m].get(name, []))}")
    if args.json:
        args.json.write_text(json.dumps({"steps": steps, "notes": notes}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
