"""The parts of PCloud import one way (DESIGN section 1): every import of the product, the tests
and the benchmarks is checked against the rules in tests/layering.toml, and the product has no
import circle besides the listed ones (both lists may only shrink); no circle at all among the
imports that run when a module loads (module level, outside `if TYPE_CHECKING:`), and only the
server's state builds writes to its store (its one door for changes); no product module is
longer than the limit in the same file, besides the listed ones.

Imports are read with `ast` (nothing is imported) and named through pyproject's package-dir
mapping, so `server/sync.py` is `pcloud.server.sync`. Imports under `if TYPE_CHECKING:` and
inside functions count like any other: a type-only import is still a dependency of the design,
and a function-local one is a circle postponed to run time.
"""

from __future__ import annotations

import ast
import functools
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULES = Path(__file__).with_name("layering.toml")
# Top-level folders imported under their own name (never shipped).
UNMAPPED = ("tests", "bench")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (the longest known module the name starts with)
    line: int
    type_only: bool
    deferred: bool = False  # inside a function: runs when it is called, not when loading

    def __str__(self) -> str:
        kind = " (type only)" if self.type_only else ""
        return f"{self.source}:{self.line} -> {self.target}{kind}"

    @property
    def at_load(self) -> bool:
        """Whether the import runs when its module is loaded."""
        return not (self.type_only or self.deferred)


@functools.cache
def package_dirs() -> dict[str, str]:
    """Folder -> import name, from pyproject's package-dir, plus the unmapped folders."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping = data["tool"]["setuptools"]["package-dir"]
    return {folder: name for name, folder in mapping.items()} | {f: f for f in UNMAPPED}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every Python module of the tree by its import name."""
    found = {}
    for folder, name in package_dirs().items():
        for path in (root / folder).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([name, *parts])] = path
    return found


def _type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _walk(
    node: ast.AST, type_only: bool = False, deferred: bool = False
) -> Iterator[tuple[ast.AST, bool, bool]]:
    """Every node under `node`, with whether it sits in an `if TYPE_CHECKING:` body and
    whether it sits in a function (runs only when called)."""
    for child in ast.iter_child_nodes(node):
        yield child, type_only, deferred
        if _type_checking_block(child):
            assert isinstance(child, ast.If)
            for stmt in child.body:
                yield stmt, True, deferred
                yield from _walk(stmt, True, deferred)
            for stmt in child.orelse:
                yield stmt, type_only, deferred
                yield from _walk(stmt, type_only, deferred)
        else:
            yield from _walk(child, type_only, deferred or isinstance(child, _FUNCTIONS))


def imports_of(module: str, source: str, *, is_package: bool, known: Iterable[str]) -> list[Import]:
    """The imports `module` makes of modules in `known` (stdlib and third party are left out);
    `from pkg import name` counts as an import of `pkg.name` when that is a module."""
    modules = set(known)
    here = module.split(".") if is_package else module.split(".")[:-1]

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found = []
    for node, type_only, deferred in _walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module or ""
            for alias in node.names:
                child = f"{parent}.{alias.name}"
                names.append(child if child in modules else parent)
        else:
            continue
        for name in names:
            target = resolve(name)
            if target and target != module:
                found.append(Import(module, target, node.lineno, type_only, deferred))
            elif target is None and name.split(".")[0] in package_dirs():
                # a bare folder name (`server.state`): a second copy of the product
                found.append(Import(module, name, node.lineno, type_only, deferred))
    return found


@functools.cache
def scan(root: Path = ROOT) -> tuple[Import, ...]:
    """Every import the tree makes of its own modules (read once per test session)."""
    files = module_files(root)
    found: list[Import] = []
    for module, path in files.items():
        found += imports_of(
            module, path.read_text(), is_package=path.name == "__init__.py", known=files
        )
    return tuple(found)


def load_rules() -> dict[str, dict]:
    return tomllib.loads(RULES.read_text())


def part_of(module: str, parts: dict[str, list[str]]) -> str | None:
    best, length = None, -1
    for part, prefixes in parts.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = part, len(prefix)
    return best


def violations(imports: Iterable[Import], rules: dict[str, dict]) -> list[Import]:
    """Every import the rules do not allow, known violations included."""
    parts, allowed = rules["parts"], rules["may_import"]
    bad = []
    for imp in imports:
        src, dst = part_of(imp.source, parts), part_of(imp.target, parts)
        if src is None or dst is None:
            bad.append(imp)  # a module outside every part, or a bare folder name
        elif src != dst and "*" not in allowed[src] and dst not in allowed[src]:
            bad.append(imp)
    return bad


def check_layers(imports: Iterable[Import], rules: dict[str, dict]) -> list[str]:
    """Problems: violations not listed as known, and known ones that no longer exist."""
    known = rules["known_violations"]
    seen = {f"{v.source} -> {v.target}": v for v in violations(imports, rules)}
    fresh = sorted(
        (v for key, v in seen.items() if key not in known), key=lambda v: (v.source, v.line)
    )
    problems = [f"forbidden import {v}" for v in fresh]
    problems += [
        f"known violation gone, delete it from {RULES.name}: {key}"
        for key in sorted(known)
        if key not in seen
    ]
    return problems


def circles(imports: Iterable[Import]) -> list[list[str]]:
    """Strongly connected components (of two or more modules) of the product's import graph."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.source.startswith("pcloud.") and imp.target.startswith("pcloud."):
            graph.setdefault(imp.source, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    # Tarjan's algorithm, iterative (the graph is a few hundred modules).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def load_time_circles(imports: Iterable[Import]) -> list[str]:
    """Circles among the imports that run when a module loads: each can fail with a partly
    initialised module depending on which side is imported first. None is ever allowed (a
    type-only or function-local import is the way out while a listed circle is being broken)."""
    return [
        f"import circle at load time: {' <-> '.join(c)}"
        for c in circles(i for i in imports if i.at_load)
    ]


# Ops that write the store (store.base); only the state (its one door for changes) and the
# stores themselves build them.
STORE_WRITES = {"Put", "Delete", "Claim"}
STORE_OPS_MODULE = "pcloud.server.store.base"
MAY_WRITE_STORE = ("pcloud.server.state", "pcloud.server.store")


def store_writers(modules: dict[str, str]) -> list[str]:
    """Server modules (name -> source) outside the state and the stores that import a store
    write op, as "module:line Op"."""
    found = []
    for name, source in sorted(modules.items()):
        if not name.startswith("pcloud.server.") or any(
            name == m or name.startswith(m + ".") for m in MAY_WRITE_STORE
        ):
            continue
        here = name.split(".")[:-1]
        for node, _type_only, _deferred in _walk(ast.parse(source)):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = here[: len(here) - (node.level - 1)] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target == STORE_OPS_MODULE:
                found += [
                    f"{name}:{node.lineno} {a.name}" for a in node.names if a.name in STORE_WRITES
                ]
    return found


def check_lengths(lengths: dict[str, int], rules: dict[str, dict]) -> list[str]:
    """Product modules (name -> lines) over the limit and not listed, and listed ones that are
    no longer over it."""
    limit, known = rules["long_modules"]["max_lines"], set(rules["long_modules"]["known"])
    long = {m for m, n in lengths.items() if m.startswith("pcloud.") and n > limit}
    problems = [
        f"{m} has {lengths[m]} lines (over {limit}): split it" for m in sorted(long - known)
    ]
    problems += [
        f"long module {m} is split or gone, delete it from {RULES.name}"
        for m in sorted(known - long)
    ]
    return problems


def check_circles(imports: Iterable[Import], rules: dict[str, dict]) -> list[str]:
    known = {tuple(sorted(c)): name for name, c in rules["known_circles"].items()}
    actual = {tuple(c) for c in circles(imports)}
    problems = [f"import circle: {' <-> '.join(c)}" for c in sorted(actual - set(known))]
    problems += [
        f"known circle {known[c]} changed or gone, update {RULES.name}: {list(c)}"
        for c in sorted(set(known) - actual)
    ]
    return problems


# -- the tree as it is ---------------------------------------------------------------------------


def test_every_import_follows_the_layers() -> None:
    assert check_layers(scan(), load_rules()) == []


def test_no_import_circle_besides_the_known_ones() -> None:
    assert check_circles(scan(), load_rules()) == []


def test_no_import_circle_at_load_time() -> None:
    assert load_time_circles(scan()) == []


def test_only_the_state_builds_store_writes() -> None:
    sources = {m: p.read_text() for m, p in module_files().items() if m.startswith("pcloud.")}
    assert store_writers(sources) == []


def test_no_product_module_over_the_line_limit() -> None:
    lengths = {m: len(p.read_text().splitlines()) for m, p in module_files().items()}
    assert check_lengths(lengths, load_rules()) == []


def test_every_module_is_in_a_part_and_every_part_has_rules() -> None:
    rules = load_rules()
    assert set(rules["parts"]) == set(rules["may_import"])
    for allowed in rules["may_import"].values():
        assert set(allowed) <= set(rules["parts"]) | {"*"}
    assert [m for m in module_files() if part_of(m, rules["parts"]) is None] == []


# -- the checks bite: synthetic modules ----------------------------------------------------------


def synthetic(modules: dict[str, str]) -> list[Import]:
    """The imports of made-up modules (name -> source), read as if they were in the tree."""
    known = [*module_files(), *modules]
    return [
        imp
        for name, source in modules.items()
        for imp in imports_of(name, source, is_package=False, known=known)
    ]


def new_problems(
    check: Callable[[Iterable[Import], dict[str, dict]], list[str]],
    added: list[Import],
    rules: dict[str, dict],
) -> list[str]:
    """What `check` finds once `added` joins the tree, beyond what it finds in the tree alone
    (so these tests show the check biting even while the tree itself has a problem)."""
    before = check(scan(), rules)
    return [p for p in check([*scan(), *added], rules) if p not in before]


def test_a_forbidden_import_fails() -> None:
    rules = load_rules()
    added = synthetic(
        {
            "pcloud.server.synthetic": "from typing import TYPE_CHECKING\n"
            "from .protocol import Peer\n"  # allowed: the server's own wire models
            "if TYPE_CHECKING:\n"
            "    from pcloud.backend.local import LocalBackend\n"
        }
    )
    assert new_problems(check_layers, added, rules) == [
        "forbidden import pcloud.server.synthetic:4 -> pcloud.backend.local (type only)"
    ]
    gui = synthetic({"pcloud.gui.synthetic": "def f():\n    import pcloud.backend.wg.kernel\n"})
    assert new_problems(check_layers, gui, rules) == [
        "forbidden import pcloud.gui.synthetic:2 -> pcloud.backend.wg.kernel"
    ]
    # The product never imports test code, and the bare folder names are a second copy.
    product = synthetic(
        {"pcloud.backend.synthetic": "from tests.lab.wait import until\nimport server.state\n"}
    )
    assert new_problems(check_layers, product, rules) == [
        "forbidden import pcloud.backend.synthetic:1 -> tests.lab.wait",
        "forbidden import pcloud.backend.synthetic:2 -> server.state",
    ]


def test_a_known_violation_that_is_gone_fails() -> None:
    rules = load_rules()
    gone = "pcloud.backend.ha.member -> pcloud.server.store.etcd"  # listed, imported nowhere
    rules["known_violations"] = {**rules["known_violations"], gone: "fixed"}
    before = check_layers(scan(), load_rules())
    assert [p for p in check_layers(scan(), rules) if p not in before] == [
        f"known violation gone, delete it from {RULES.name}: {gone}"
    ]


def test_the_backend_reaches_etcd_only_through_the_shared_package() -> None:
    rules = load_rules()
    added = synthetic(
        {
            "pcloud.backend.ha.synthetic": "from pcloud.shared.etcd.member import etcd_argv\n"
            "from pcloud.server.store.etcd import EtcdStore\n"
        }
    )
    assert new_problems(check_layers, added, rules) == [
        "forbidden import pcloud.backend.ha.synthetic:2 -> pcloud.server.store.etcd"
    ]


def test_a_new_circle_fails() -> None:
    rules = load_rules()
    added = synthetic(
        {
            "pcloud.server.synthetic_a": "from pcloud.server import synthetic_b\n",
            # a function-local import is a circle postponed to run time: it counts
            "pcloud.server.synthetic_b": "def later():\n    from .synthetic_a import X\n",
        }
    )
    assert new_problems(check_circles, added, rules) == [
        "import circle: pcloud.server.synthetic_a <-> pcloud.server.synthetic_b"
    ]


def test_a_circle_at_load_time_fails_even_when_listed() -> None:
    a = "from pcloud.server import synthetic_b\n"
    b = "from .synthetic_a import X\n"
    both = synthetic({"pcloud.server.synthetic_a": a, "pcloud.server.synthetic_b": b})
    assert load_time_circles([*scan(), *both]) == [
        "import circle at load time: pcloud.server.synthetic_a <-> pcloud.server.synthetic_b"
    ]
    # Deferred to a function or to type checking, it loads either way round (the circle check
    # above still lists it, to be broken).
    for later in (
        "def f():\n    " + b,
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    " + b,
    ):
        added = synthetic({"pcloud.server.synthetic_a": a, "pcloud.server.synthetic_b": later})
        assert load_time_circles([*scan(), *added]) == []
        assert circles(added) == [["pcloud.server.synthetic_a", "pcloud.server.synthetic_b"]]


def test_a_store_write_outside_the_state_fails() -> None:
    source = "from ..store.base import Delete, Op, Put\n"
    assert store_writers(
        {
            "pcloud.server.api.synthetic": source,  # a route building its own writes
            "pcloud.server.state.synthetic": source,  # the state: its job
            "pcloud.server.store.synthetic": "from .base import Put\n",  # a store: its job
        }
    ) == ["pcloud.server.api.synthetic:1 Delete", "pcloud.server.api.synthetic:1 Put"]


def test_a_long_module_fails() -> None:
    rules = {"long_modules": {"max_lines": 400, "known": ["pcloud.backend.local"]}}
    lengths = {"pcloud.server.synthetic": 401, "pcloud.backend.local": 450, "tests.long": 900}
    assert check_lengths(lengths, rules) == [
        "pcloud.server.synthetic has 401 lines (over 400): split it"
    ]
    assert check_lengths({"pcloud.backend.local": 399}, rules) == [
        f"long module pcloud.backend.local is split or gone, delete it from {RULES.name}"
    ]
