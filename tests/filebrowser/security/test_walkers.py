"""One walker: no module of the file service reads many directory entries on its own.

Zip, copy, listings, WebDAV and sizes for the quota of a copy take their entries from
``filebrowser/files/walk.py``, which applies the caller's scope to every entry and
never follows a link (issue 10, item 1). This test reads the source with ``ast`` and
fails on any other call that lists or walks a folder, or copies or removes a tree, so
a new feature cannot forget the rule. The few exceptions below walk trees that are
not a caller's view of the NAS; each names its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
WALKER = "filebrowser/files/walk.py"
# calls that enumerate or copy/remove a tree: os.walk(...), shutil.rmtree(...), p.glob(...)
MODULE_CALLS = {("os", "walk"), ("os", "fwalk"), ("os", "scandir"), ("os", "listdir"),
                ("shutil", "copytree"), ("shutil", "rmtree"), ("shutil", "move"),
                ("glob", "glob"), ("glob", "iglob")}
PATH_METHODS = {"iterdir", "glob", "rglob"}
ALLOWED = {
    ("filebrowser/access/beneath.py", "nfc_match"):
        "the names of one folder, to find how one name being opened is spelled on disk",
    ("filebrowser/files/fs.py", "tree_size"):
        "the service measuring a user's own home for the quota: a number, no entries, "
        "links never followed",
    ("filebrowser/files/fs.py", "_remove"):
        "removes our own hidden temporary names and trash items",
    ("filebrowser/files/fs.py", "move"):
        "shutil.move only renames across filesystems an entry the caller may write",
    ("filebrowser/files/trash.py", "_forget"): "our own trash folder",
    ("filebrowser/images/index.py", "_list"):
        "the service-wide index: search filters its rows by the caller's scope",
    ("filebrowser/images/thumbs.py", "prune"): "the thumbnail cache in the state folder",
    ("filebrowser/files/tmpsweep.py", "_temps"):
        "the service finding its own stale hidden temporary names (.atelier-tmp-*) to remove",
    ("filebrowser/files/tmpsweep.py", "_newest_mtime"):
        "the age and size of one of our own stale temporary folders",
    ("filebrowser/files/tmpsweep.py", "_consider"):
        "removes one of our own stale temporary folders",
    ("filebrowser/client/cli.py", "plan_push"):
        "the desktop CLI walking the files it uploads, on the user's own computer",
}


def _calls(path: Path) -> list[tuple[str, str, int]]:
    """(enclosing function, call text, line) of each tree-walking call in a module."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = func
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = child.name
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
                attr, base = child.func.attr, child.func.value
                if isinstance(base, ast.Name) and (base.id, attr) in MODULE_CALLS:
                    found.append((name, f"{base.id}.{attr}", child.lineno))
                elif attr in PATH_METHODS and not (isinstance(base, ast.Name)
                                                   and base.id in ("os", "shutil", "glob")):
                    found.append((name, f".{attr}()", child.lineno))
            if isinstance(child, ast.ImportFrom) and child.module in ("os", "shutil", "glob"):
                for alias in child.names:
                    if (child.module, alias.name) in MODULE_CALLS:
                        found.append((name, f"from {child.module} import {alias.name}",
                                      child.lineno))
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_only_the_walker_walks_user_folders() -> None:
    offenders = []
    used = set()
    for path in sorted((ROOT / "filebrowser").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == WALKER:
            continue
        for func, call, line in _calls(path):
            if (rel, func) in ALLOWED:
                used.add((rel, func))
                continue
            offenders.append(f"{rel}:{line} {func}() calls {call}; walk through "
                             f"filebrowser.files.walk (the caller's scope on every entry)")
    assert offenders == []
    assert used == set(ALLOWED), f"stale exceptions: {set(ALLOWED) - used}"


def test_the_check_sees_what_it_forbids(tmp_path: Path) -> None:
    """The detector itself: every form of walking call is found."""
    src = tmp_path / "m.py"
    src.write_text(
        "import os, shutil\nfrom os import scandir\n"
        "def a(p):\n    return os.listdir(p)\n"
        "def b(p):\n    shutil.copytree(p, p)\n"
        "def c(p):\n    return list(p.rglob('*'))\n"
        "async def d(p):\n    return os.walk(p)\n")
    found = {(f, c) for f, c, _ in _calls(src)}
    assert found == {("<module>", "from os import scandir"), ("a", "os.listdir"),
                     ("b", "shutil.copytree"), ("c", ".rglob()"), ("d", "os.walk")}
