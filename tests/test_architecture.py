"""docs/architecture.md's module map matches the code: every module listed, no import outside its row."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = sorted(p for p in (ROOT / "kiosk").glob("*.py") if p.stem != "__init__")


def documented_imports() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("<!-- modules -->")[1].split("<!-- /modules -->")[0]
    rows = {}
    for line in table.splitlines():
        match = re.match(r"\| `(\w+)` \| .* \| ([^|]*) \|$", line)
        if match:
            allowed = match.group(2).strip()
            rows[match.group(1)] = set() if allowed == "-" else {name.strip() for name in allowed.split(",")}
    return rows


def kiosk_imports(path: Path) -> set[str]:
    """The ``kiosk`` modules a file imports (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "kiosk":
                found |= {a.name for a in node.names} if len(parts) == 1 else {parts[1]}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("kiosk.")}
    return found - {path.stem}


def test_every_runtime_module_is_on_the_map():
    assert set(documented_imports()) == {p.stem for p in RUNTIME}


def test_no_module_imports_outside_its_row_of_the_map():
    allowed = documented_imports()
    wrong = {p.stem: sorted(kiosk_imports(p) - allowed[p.stem]) for p in RUNTIME if kiosk_imports(p) - allowed[p.stem]}
    assert not wrong, f"update the code or docs/architecture.md: {wrong}"


def test_no_runtime_module_imports_the_training_tool():
    assert not [p.name for p in RUNTIME if "training" in kiosk_imports(p)]
