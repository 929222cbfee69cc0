"""The house rules of the layout, read from the source with ``ast``:

- ``filebrowser`` and ``modelzoo`` never import each other or ``atelier``; ``atelier_io``
  imports none of them;
- the composition edge (``atelier/``) reaches the packages only through their public
  names (an ``__init__``), never a module inside them;
- no two modules import each other, directly or in a ring (module-level imports; those
  under ``TYPE_CHECKING`` and inside functions are not cycles at import time).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("atelier", "atelier_io", "filebrowser", "modelzoo")
FORBIDDEN = {
    "atelier_io": {"atelier", "filebrowser", "modelzoo"},
    "filebrowser": {"atelier", "modelzoo"},
    "modelzoo": {"atelier", "filebrowser"},
    "atelier": set(),
}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = modules()


def is_package(name: str) -> bool:
    return (ROOT / name.replace(".", "/") / "__init__.py").exists()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, *, top_level_only: bool) -> Iterator[tuple[str, int]]:
    """(imported module, line) for each import in ``module``; ``from x import y`` yields
    ``x.y`` when that is a module, else ``x``."""
    tree = ast.parse(MODULES[module].read_text())
    nodes: list[ast.stmt] = list(tree.body) if top_level_only else list(ast.walk(tree))  # type: ignore[arg-type]
    for node in nodes:
        if isinstance(node, ast.If) and top_level_only:
            test = node.test
            if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                continue
            nodes.extend(node.body)
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in MODULES else target), node.lineno


@pytest.mark.parametrize("module", sorted(MODULES))
def test_packages_keep_to_their_side(module: str) -> None:
    own = module.split(".")[0]
    for target, line in imports(module, top_level_only=False):
        other = target.split(".")[0]
        assert other not in FORBIDDEN[own], f"{module}:{line} imports {target}"


def test_the_edge_uses_public_names_only() -> None:
    for module in (m for m in MODULES if m.split(".")[0] == "atelier"):
        for target, line in imports(module, top_level_only=False):
            if target.split(".")[0] in ("filebrowser", "modelzoo", "atelier_io"):
                assert is_package(target), \
                    f"{module}:{line} reaches into {target}; import its package's names"


def test_no_import_cycles() -> None:
    graph = {m: {t for t, _ in imports(m, top_level_only=True) if t in MODULES and t != m}
             for m in MODULES}
    # a package's __init__ importing its own modules is how names are handed on
    for m, targets in graph.items():
        if is_package(m):
            graph[m] = {t for t in targets if not t.startswith(m + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []
