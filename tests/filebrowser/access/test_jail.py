"""The path jail, without a server: validation, scope, and symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filebrowser.access.jail import Jail, Scope, clean
from filebrowser.errors import BadPath, NotFound, ReadOnly


@pytest.mark.parametrize("raw, expected", [
    ("", ""), (".", ""), ("models", "models"), ("models//Lora/", "models/Lora"),
    ("users/ann/outputs/a.png", "users/ann/outputs/a.png"),
    # kept as sent: an NFD name on disk must be reachable byte for byte (the lookup,
    # not clean(), matches NFC and NFD spellings)
    ("users/ann/cafe\u0301.png", "users/ann/cafe\u0301.png"),
    # a Windows reserved name written by another program stays reachable; only new
    # names are refused (check_new_name)
    ("models/CON", "models/CON"), ("models/nul.txt", "models/nul.txt"),
])
def test_clean_accepts(raw: str, expected: str) -> None:
    assert clean(raw) == expected


@pytest.mark.parametrize("raw", [
    "..", "../etc/passwd", "models/../../etc", "models/./x", "/etc/passwd", "C:/Windows",
    "c:\\windows", "models\\..\\x", "a\x00b", "a\nb", "x" * 256, ("d/" * 2100) + "x",
    "users/ann/.atelier/trash", ".atelier-tmp-x", "a\udcff.png", "a\ufffe", "tab\tname",
])
def test_clean_refuses(raw: str) -> None:
    with pytest.raises(BadPath):
        clean(raw)


@given(st.text(max_size=300))
def test_clean_never_yields_a_parent_reference(raw: str) -> None:
    try:
        out = clean(raw)
    except BadPath:
        return
    assert ".." not in out.split("/")
    assert not out.startswith("/") and "\x00" not in out and "\\" not in out


def test_scope_for_roles() -> None:
    user = Scope.for_user("ann", "user")
    assert user.can_write("users/ann/outputs/x.png") and user.can_read("models/Lora/a")
    assert not user.can_write("models/Lora/a") and not user.can_read("users/bob/x")
    assert not user.can_read("users/annabel/x")  # a prefix of a name is not the name
    assert user.can_see("") and user.can_see("users") and not user.can_see("outputs")
    viewer = Scope.for_user("vic", "viewer")
    assert viewer.can_read("users/vic/x") and not viewer.can_write("users/vic/x")
    admin = Scope.for_user("root", "admin")
    assert admin.can_write("outputs/x") and admin.can_write("")


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Jail, Path]:
    root = tmp_path / "root"
    for d in ("models/Lora", "users/ann", "users/bob"):
        (root / d).mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (root / "users/bob/private.txt").write_text("bob")
    os.symlink(outside, root / "users/ann/out")
    os.symlink(root / "users/bob", root / "users/ann/bob")
    os.symlink(root / "models", root / "users/ann/shared")
    return Jail(root), outside


def test_symlinks_out_of_root_answer_not_found(tree: tuple[Jail, Path]) -> None:
    jail, _ = tree
    scope = Scope.for_user("ann", "user")
    with pytest.raises(NotFound):
        jail.resolve(scope, "users/ann/out/secret.txt")
    with pytest.raises(NotFound):  # into another user's home through a link
        jail.resolve(scope, "users/ann/bob/private.txt")


def test_symlink_into_read_only_area_stays_read_only(tree: tuple[Jail, Path]) -> None:
    jail, _ = tree
    scope = Scope.for_user("ann", "user")
    v, real = jail.resolve(scope, "users/ann/shared/Lora")
    assert real == jail.root / "models/Lora" and v == "users/ann/shared/Lora"
    with pytest.raises(ReadOnly):
        jail.resolve(scope, "users/ann/shared/Lora/new.safetensors", write=True, must_exist=False)


def test_out_of_scope_and_missing_are_the_same_error(tree: tuple[Jail, Path]) -> None:
    jail, _ = tree
    scope = Scope.for_user("ann", "user")
    with pytest.raises(NotFound) as a:
        jail.resolve(scope, "users/bob/private.txt")
    with pytest.raises(NotFound) as b:
        jail.resolve(scope, "users/ann/missing.txt")
    assert a.value.to_json() == b.value.to_json()
