"""The billing core is pure: it imports the standard library and itself, nothing else
(no database, clock, lock or logging library can creep in through an import)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "metering" / "core"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." if node.level else node.module or "")
    return names


def test_core_imports_only_the_standard_library_and_itself() -> None:
    files = sorted(CORE.glob("*.py"))
    assert files
    outside = {
        f"{path.name}: {name}"
        for path in files
        for name in imported_modules(path)
        if name != "."
        and not name.startswith("metering.core")
        and name.split(".")[0] not in sys.stdlib_module_names
    }
    assert outside == set()


def test_the_check_sees_a_third_party_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("import sqlalchemy\nfrom metering.store import usage\n")
    assert imported_modules(module) == {"sqlalchemy", "metering.store"}
