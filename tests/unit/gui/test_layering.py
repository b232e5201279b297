"""gui/ imports from the backend only its local-API client and schemas (DESIGN section 1), and
every module says its job in a docstring."""

from __future__ import annotations

import ast
from pathlib import Path

GUI = Path(__file__).resolve().parents[3] / "gui"
ALLOWED = {"pcloud.backend.localapi.client", "pcloud.backend.localapi.schemas"}


def modules() -> list[Path]:
    return sorted(p for p in GUI.rglob("*.py") if "__pycache__" not in p.parts)


def test_gui_imports_only_the_local_api() -> None:
    bad = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.startswith(("pcloud.backend", "pcloud.server")) and name not in ALLOWED:
                    bad.append(f"{path.relative_to(GUI)}: {name}")
    assert bad == []


def test_modules_have_docstrings_and_stay_small() -> None:
    for path in modules():
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path} lacks a module docstring"
        assert len(path.read_text().splitlines()) < 450, f"{path} is getting long"
