"""pytest's entry at the repository root: puts this folder on sys.path (pytest does that for a
rootdir conftest), so `tests` and `bench` import as packages, and loads the lab plugin.

The product imports only as `pcloud.*` (the editable install maps server/ to pcloud.server, ...).
This folder on sys.path would also make the bare folder names importable, a second copy of every
module whose classes are unequal to the real ones; they are refused here at run time, and by
ruff (TID251) and tests/test_layering.py in the source.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

pytest_plugins = ["tests.lab.fixtures"]

BARE = {"server", "backend", "gui", "resources", "shared"}


class RefuseBareNames(importlib.abc.MetaPathFinder):
    """Fails `import server...` with the name to use instead."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        top = fullname.partition(".")[0]
        if top in BARE:
            raise ModuleNotFoundError(f"import pcloud.{fullname}, not {fullname}", name=fullname)
        return None


sys.meta_path.insert(0, RefuseBareNames())
