"""spec/tsr-v4.md: its field tables are the schemas', its vector tables what the code
does with the repository's vectors (regenerate with scripts/gen_spec_v4.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from tsr import v4

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "spec" / "tsr-v4.md"


def _generator() -> object:
    spec = importlib.util.spec_from_file_location(
        "gen_spec_v4", REPO / "scripts" / "gen_spec_v4.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _section(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:begin -->\n(.*?)\n<!-- {name}:end -->", text, re.S)
    assert match, f"spec/tsr-v4.md lost its {name} markers"
    return match.group(1)


def test_field_tables_are_the_schemas() -> None:
    text = SPEC.read_text(encoding="utf-8")
    assert _section(text, "header-table") == v4.HEADER_LAYOUT.spec_table()
    assert _section(text, "entry-table") == v4.ENTRY_LAYOUT.spec_table()
    rows = re.findall(r"^\| (\d+) \| (\d+) \| `(\w+)` \|", _section(text, "entry-table"), re.M)
    assert [(int(o), int(s), n) for o, s, n in rows] == [
        (f.offset, f.size, f.name) for f in v4.ENTRY_LAYOUT.fields
    ]


def test_the_generated_sections_are_up_to_date() -> None:
    text = SPEC.read_text(encoding="utf-8")
    gen = _generator()
    assert gen.generate(text) == text  # type: ignore[attr-defined]
    assert _section(text, "vectors").count("\n| `") == 52
    assert _section(text, "malformed").count("\n| `") == 47
