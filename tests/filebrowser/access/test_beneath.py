"""Opening beneath the root through descriptors, with openat2 and with the per-component
fallback: links followed only into scope, every hop checked, names found as listed."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from filebrowser.access import beneath
from filebrowser.access.jail import Jail, Scope
from filebrowser.errors import BadPath, NotFound, ReadOnly

ANN = Scope.for_user("ann", "user")
ADMIN = Scope.for_user("root", "admin")
NFD = unicodedata.normalize("NFD", "café.png")
NFC = unicodedata.normalize("NFC", "café.png")


@pytest.fixture(params=["openat2", "per-component"])
def jail(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Jail]:
    """The same tree, opened once with the kernel's openat2 and once without it."""
    if request.param == "openat2" and not beneath.openat2.enabled:
        pytest.fail("openat2 is not available on this kernel (Linux >= 5.6 expected)")
    saved = beneath.openat2.enabled
    beneath.openat2.enabled = request.param == "openat2"
    root = tmp_path / "root"
    for d in ("models/Lora", "users/ann/out/deep", "users/bob"):
        (root / d).mkdir(parents=True)
    (root / "models/Lora/a.safetensors").write_bytes(b"lora")
    (root / "users/ann/out/deep/x.txt").write_text("ann")
    (root / "users/bob/secret.txt").write_text("bob")
    (root / "users/ann" / NFD).write_bytes(b"nfd")
    ann = root / "users/ann"
    os.symlink("../../models", ann / "models-rel")              # relative, in scope
    os.symlink(str(root / "models/Lora"), ann / "lora-abs")     # absolute, in scope
    os.symlink("../bob", ann / "bob-rel")                       # another home
    os.symlink("models-rel/../../bob", ann / "via-models")      # '..' of a link: above root
    os.symlink("models-rel/../users/bob", ann / "via-models2")  # in scope, then out
    os.symlink("out/deep/..", ann / "up")                       # ends on a '..'
    os.symlink(".", ann / "self")
    os.symlink("/etc/passwd", ann / "passwd")                   # outside the root
    os.symlink("loop-b", ann / "loop-a")
    os.symlink("loop-a", ann / "loop-b")
    os.symlink("out/deep", ann / "chain1")
    os.symlink("chain1", ann / "chain2")                        # a link to a link
    os.symlink("nowhere", ann / "dangling")
    yield Jail(root)
    beneath.openat2.enabled = saved


def read(jail: Jail, scope: Scope, path: str) -> bytes:
    with jail.open(scope, path) as h:
        fd = h.open_file()
        try:
            return os.read(fd, 100)
        finally:
            os.close(fd)


def test_plain_paths_and_real_locations(jail: Jail) -> None:
    assert read(jail, ANN, "users/ann/out/deep/x.txt") == b"ann"
    with jail.open(ANN, "users/ann/out") as h:
        assert h.is_dir and h.vpath == h.real == "users/ann/out"
        assert sorted(os.listdir(h.path)) == ["deep"]  # /proc/self/fd/N is the folder


def test_links_into_scope_are_followed_and_reported_where_they_lead(jail: Jail) -> None:
    assert read(jail, ANN, "users/ann/models-rel/Lora/a.safetensors") == b"lora"
    assert read(jail, ANN, "users/ann/lora-abs/a.safetensors") == b"lora"
    assert read(jail, ANN, "users/ann/chain2/x.txt") == b"ann"
    with jail.open(ANN, "users/ann/models-rel/Lora") as h:
        assert h.vpath == "users/ann/models-rel/Lora" and h.real == "models/Lora"
    with pytest.raises(ReadOnly):  # read-only where it really is
        jail.open(ANN, "users/ann/models-rel/Lora/new.bin", write=True, must_exist=False)


@pytest.mark.parametrize("path", [
    "users/ann/bob-rel/secret.txt", "users/ann/via-models/secret.txt", "users/ann/passwd",
    "users/ann/via-models2/secret.txt",
    "users/ann/loop-a", "users/ann/loop-a/x", "users/ann/dangling", "users/bob/secret.txt",
    "users/ann/bob-rel",
])
def test_links_out_of_scope_answer_not_found(jail: Jail, path: str) -> None:
    with pytest.raises(NotFound):
        jail.open(ANN, path)


def test_an_admin_follows_in_root_links_but_never_out_of_the_root(jail: Jail) -> None:
    assert read(jail, ADMIN, "users/ann/bob-rel/secret.txt") == b"bob"
    # '..' after a link is the parent of where the link led (the kernel's reading)
    assert read(jail, ADMIN, "users/ann/via-models2/secret.txt") == b"bob"
    with pytest.raises(NotFound):
        jail.open(ADMIN, "users/ann/passwd")
    with pytest.raises(NotFound):  # models/.. is the root, and ../bob is above it
        jail.open(ADMIN, "users/ann/via-models/secret.txt")


def test_links_ending_on_a_folder_above(jail: Jail) -> None:
    with jail.open(ANN, "users/ann/up") as h:
        assert h.is_dir and h.real == "users/ann/out" and sorted(os.listdir(h.path)) == ["deep"]
        assert h.entry.resolve() == jail.root / "users/ann/out"
    assert read(jail, ANN, "users/ann/self/self/out/deep/x.txt") == b"ann"


def test_the_link_itself_when_not_following(jail: Jail) -> None:
    with jail.open(ANN, "users/ann/bob-rel", follow=False) as h:
        assert h.is_link and h.real == "users/ann/bob-rel"
        assert os.readlink(h.entry) == "../bob"


def test_nfd_names_reachable_as_listed_and_by_their_nfc_spelling(jail: Jail) -> None:
    assert read(jail, ANN, f"users/ann/{NFD}") == b"nfd"
    assert read(jail, ANN, f"users/ann/{NFC}") == b"nfd"
    with jail.open(ANN, f"users/ann/{NFC}") as h:
        assert h.name == NFD and h.vpath == f"users/ann/{NFD}"


def test_new_names_are_nfc_and_never_a_look_alike_twin(jail: Jail) -> None:
    # an NFC spelling of an existing NFD name is that entry, not a new one
    with jail.open(ANN, f"users/ann/{NFC}", write=True, must_exist=False) as h:
        assert h.exists and h.name == NFD
    new = unicodedata.normalize("NFD", "über.txt")
    with jail.open(ANN, f"users/ann/{new}", write=True, must_exist=False) as h:
        assert not h.exists and h.name == unicodedata.normalize("NFC", "über.txt")
    with pytest.raises(BadPath):  # reserved names are never created...
        jail.open(ANN, "users/ann/CON", write=True, must_exist=False)


def test_existing_reserved_names_stay_reachable(jail: Jail) -> None:
    (jail.root / "users/ann/aux.safetensors").write_bytes(b"aux")
    assert read(jail, ANN, "users/ann/aux.safetensors") == b"aux"


def test_missing_folders_on_the_way(jail: Jail) -> None:
    with jail.open(ANN, "users/ann/no/such/x", write=True, must_exist=False) as h:
        assert not h.exists and not h.has_folder
        with pytest.raises(NotFound):
            _ = h.folder
    with pytest.raises(NotFound):
        jail.open(ANN, "users/ann/no/such/x")


def test_a_swapped_folder_is_not_followed_by_an_open_handle(jail: Jail) -> None:
    """The handle keeps naming the checked folder after its name is swapped for a link."""
    ann = jail.root / "users/ann"
    with jail.open(ANN, "users/ann/out") as h:
        os.rename(ann / "out", ann / "out-moved")
        os.symlink("../bob", ann / "out")
        assert sorted(os.listdir(h.path)) == ["deep"]
        assert not (h.path / "secret.txt").exists()


def test_names_that_normalise_to_ascii(jail: Jail) -> None:
    """KELVIN SIGN is NFC 'K': an entry spelled with it is found by 'K', and 'K' is
    found by it."""
    kelvin = "\u212aelvin.txt"
    (jail.root / "users/ann" / kelvin).write_bytes(b"kelvin")
    assert read(jail, ANN, "users/ann/Kelvin.txt") == b"kelvin"
    with jail.open(ANN, "users/ann/Kelvin.txt", write=True, must_exist=False) as h:
        assert h.exists and h.name == kelvin
    (jail.root / "users/ann/Kx.txt").write_bytes(b"ascii")
    with jail.open(ANN, "users/ann/\u212ax.txt") as h:
        assert h.name == "Kx.txt"
