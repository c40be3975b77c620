"""Generate the tables of spec/tsr-v4.md from the schema and the repository's TSR4 vectors.

    python scripts/gen_spec_v4.py          # rewrite the generated sections of the spec
    python scripts/gen_spec_v4.py --check  # exit 1 if the spec differs from what is generated

Sections (between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``): ``header-table`` and
``entry-table`` (from :data:`tsr.v4.HEADER` / :data:`tsr.v4.ENTRY`), ``vectors`` (every
C++-written file of ``tests/data/vectors4/``, read by this library) and ``malformed``
(every malformed file: the error a strict reader raises and what the real C++ importer did,
from ``malformed/index.json``, which the model in :mod:`tsr._v4cpp` reproduces).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import tsr
from tsr import v4
from tsr.errors import TSRError

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec" / "tsr-v4.md"
VECTORS = ROOT / "tests" / "data" / "vectors4"


def vectors_table() -> str:
    manifest = json.loads((VECTORS / "manifest.json").read_text())["files"]
    lines = [
        "| file | mode | size | tensors (dtype stored-shape) | SHA-256 (first 16) |",
        "|------|------|-----:|------------------------------|--------------------|",
    ]
    for e in manifest:
        data = (VECTORS / e["file"]).read_bytes()
        arrays = tsr.load_all(VECTORS / e["file"])
        names = {a.dtype.name: v4.DTYPES[v4.CODE_OF[a.dtype.name]].name for a in arrays}
        tensors = ", ".join(f"{names[a.dtype.name]} {'×'.join(map(str, a.shape))}" for a in arrays)
        digest = hashlib.sha256(data).hexdigest()[:16]
        lines.append(f"| `{e['file']}` | {e['mode']} | {len(data)} | {tensors} | `{digest}` |")
    return "\n".join(lines)


def malformed_table() -> str:
    index = json.loads((VECTORS / "malformed" / "index.json").read_text())
    lines = [
        "| file | mutation | strict reader | `strict=False` | C++ importer (1 GiB) |",
        "|------|----------|---------------|----------------|----------------------|",
    ]
    for f in index["files"]:
        path = VECTORS / "malformed" / f["file"]
        outcomes = []
        for strict in (True, False):
            try:
                tsr.load_all(path, strict=strict)
                outcomes.append("reads")
            except TSRError as exc:
                outcomes.append(f"`{type(exc).__name__}`")
        cpp = f["cpp"]
        verdict = (
            cpp["verdict"]
            if cpp["check"] in ("accepted", "abort")
            else (f"rejected: {cpp['check']}")
        )
        if f["file"].startswith("m042"):
            verdict += " (a shape far larger than its buffer)"
        mutation = f["mutation"].replace("|", "/")
        lines.append(f"| `{f['file']}` | {mutation} | {outcomes[0]} | {outcomes[1]} | {verdict} |")
    return "\n".join(lines)


SECTIONS = {
    "header-table": v4.HEADER_LAYOUT.spec_table,
    "entry-table": v4.ENTRY_LAYOUT.spec_table,
    "vectors": vectors_table,
    "malformed": malformed_table,
}


def generate(text: str) -> str:
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"spec/tsr-v4.md lost its {name} markers")
        body = make()

        def fill(m: re.Match[str], body: str = body) -> str:
            return m.group(1) + body + "\n" + m.group(2)

        text = pattern.sub(fill, text)
    return text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    current = SPEC.read_text(encoding="utf-8")
    wanted = generate(current)
    if args.check:
        if wanted != current:
            print("spec/tsr-v4.md is out of date: run scripts/gen_spec_v4.py", file=sys.stderr)
            return 1
        return 0
    SPEC.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
