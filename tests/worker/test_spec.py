"""spec/session-protocol.md and the code cannot drift apart: its tables of error codes,
commands and limits, and its extension example, are checked against the implementation."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tsr_worker import DEFAULT, ErrorCode, Limits
from tsr_worker.cli import build_parser
from tsr_worker.config import DEFAULT_IDLE_TIMEOUT_S

SPEC = Path(__file__).resolve().parents[2] / "spec" / "session-protocol.md"


def table(name: str) -> list[list[str]]:
    text = SPEC.read_text()
    block = text.split(f"<!-- {name}:begin -->")[1].split(f"<!-- {name}:end -->")[0]
    rows = [line for line in block.strip().splitlines() if line.startswith("|")][2:]
    return [[cell.strip().strip("`") for cell in row.strip("|").split("|")] for row in rows]


def test_error_code_table_is_the_enum() -> None:
    codes = [row[0] for row in table("error-codes")]
    assert codes == [c.value for c in ErrorCode]


def test_command_table_is_the_registry() -> None:
    rows = {row[0]: row[1] for row in table("commands")}
    assert set(rows) == {*DEFAULT.names(), "exit"}
    for name, inputs in rows.items():
        cmd = DEFAULT.get(name)
        if name == "exit":
            continue
        assert cmd is not None
        if inputs == "text":
            assert cmd.is_text, name
        elif inputs.endswith(".tsr"):
            assert cmd.inputs == (inputs.removesuffix(".tsr").strip("`"),), name
        else:
            assert cmd.inputs == int(inputs.split()[0]), name


def test_limits_table_matches_the_defaults_and_options() -> None:
    text = SPEC.read_text()
    limits = Limits()
    assert limits.max_request_bytes == 64 * 1024 and "| 64 KiB |" in text
    assert f"| {limits.max_params_chars} characters |" in text
    assert limits.max_input_bytes == 1 << 30 and "| 1 GiB |" in text
    assert f"| {limits.max_inputs} |" in text
    options = {o for a in build_parser()._actions for o in a.option_strings}
    for option in re.findall(r"`(--[a-z-]+)", text):
        assert option in options, option
    assert f"default {DEFAULT_IDLE_TIMEOUT_S:g}" in text


def test_extension_example_registers_its_commands() -> None:
    code = SPEC.read_text().split("```python\n")[1].split("```")[0]
    probe = code + "\nfrom tsr_worker import DEFAULT\nprint(sorted(DEFAULT.names()))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    names = out.stdout.strip()
    for name in ("scale2", "split_sign", "echo"):
        assert repr(name) in names
