"""Every gui/ module says its job in a docstring and stays small. (What the GUI may import is
checked with the other parts' rules in tests/test_layering.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

GUI = Path(__file__).resolve().parents[3] / "gui"


def modules() -> list[Path]:
    return sorted(p for p in GUI.rglob("*.py") if "__pycache__" not in p.parts)


def test_modules_have_docstrings_and_stay_small() -> None:
    for path in modules():
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path} lacks a module docstring"
        assert len(path.read_text().splitlines()) < 450, f"{path} is getting long"
