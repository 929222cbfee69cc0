"""The index: scanning, rescans by folder mtime, deep rescans, the watcher, crash safety."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from filebrowser import db
from filebrowser.access.jail import Scope
from filebrowser.images.index import Index, IndexService, SearchQuery, fts_text, search

from .conftest import CHINESE_TEXT, comfy_png, wait_until, write_exif_image, write_png

ALL = Scope(read=("",), write=("",))


def text(prompt: str, seed: int = 1, model: str = "m") -> str:
    return (f"{prompt}\nNegative prompt: blurry\n"
            f"Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: {seed}, Model: {model}")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = db.connect(f"sqlite:///{tmp_path / 'state' / 'db.sqlite'}")
    yield e
    e.dispose()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "nas"
    r.mkdir()
    return r


def paths(index: Index) -> set[str]:
    with index.engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT path FROM image_index")).scalars())


def found(index: Index, q: str, **kw: object) -> set[str]:
    r = search(index, ALL, SearchQuery(q=q, limit=1000, **kw))  # type: ignore[arg-type]
    return {x["path"] for x in r["results"]}


def age_folders(root: Path) -> None:
    """Give every folder one fixed old mtime (no 'racy' relisting, same value each time)."""
    t = 1_700_000_000.0
    for dirpath, _dirs, _files in os.walk(root):
        os.utime(dirpath, (t, t))


def test_scan_what_is_indexed(engine: Engine, root: Path) -> None:
    write_png(root / "outputs" / "a.png", text("red hair girl"))
    write_exif_image(root / "outputs" / "b.jpg", CHINESE_TEXT)
    comfy_png(root / "outputs" / "c.png")
    (root / "models" / "Lora").mkdir(parents=True)
    (root / "models" / "Lora" / "x.safetensors").write_bytes(b"\0" * 100)
    (root / "outputs" / "notes.md").write_text("no")
    write_png(root / "outputs" / ".hidden.png", text("hidden"))
    write_png(root / ".atelier" / "t.png", text("internal"))
    os.symlink(root / "outputs" / "a.png", root / "outputs" / "link.png")
    index = Index(engine, root)
    assert index.scan() == 4
    assert paths(index) == {"outputs/a.png", "outputs/b.jpg", "outputs/c.png",
                            "models/Lora/x.safetensors"}
    assert index.counts() == {"image": 3, "model": 1}
    assert found(index, "red hair") == {"outputs/a.png"}
    assert found(index, "红发") == {"outputs/b.jpg"}  # CJK inside a run of characters
    assert found(index, "glass bottle") == {"outputs/c.png"}  # ComfyUI graph text
    r = search(index, ALL, SearchQuery(q="red"))["results"][0]
    assert (r["width"], r["height"], r["seed"], r["model"]) == (64, 48, 1, "m")
    assert index.scan() == 0  # nothing changed, nothing re-read


def test_fts_text_spaces_cjk() -> None:
    assert fts_text("red hair") == "red hair"
    assert fts_text("红发girl").split() == ["红", "发", "girl"]


def test_rescan_new_moved_deleted_by_folder_mtime(engine: Engine, root: Path) -> None:
    for i in range(3):
        write_png(root / "a" / f"{i}.png", text(f"first{i}"))
    write_png(root / "b" / "sub" / "s.png", text("deep one"))
    index = Index(engine, root)
    index.scan()
    age_folders(root)
    index.scan()
    assert len(paths(index)) == 4
    write_png(root / "a" / "new.png", text("brand new"))  # new
    os.rename(root / "a" / "0.png", root / "b" / "moved.png")  # moved
    (root / "a" / "1.png").unlink()  # deleted
    index.scan()
    assert paths(index) == {"a/2.png", "a/new.png", "b/moved.png", "b/sub/s.png"}
    assert found(index, "brand new") == {"a/new.png"}
    assert found(index, "first0") == {"b/moved.png"}
    # folders: a moved folder takes its rows along, a deleted one drops them
    os.rename(root / "b" / "sub", root / "a" / "sub2")
    index.scan()
    assert found(index, "deep one") == {"a/sub2/s.png"}
    shutil.rmtree(root / "a")
    index.scan()
    assert paths(index) == {"b/moved.png"}
    with engine.connect() as conn:
        folders = set(conn.execute(sa.text("SELECT path FROM index_folders")).scalars())
        fts = conn.execute(sa.text("SELECT count(*) FROM image_fts")).scalar_one()
    assert folders == {"", "b"} and fts == 1


def test_in_place_rewrite_needs_deep_rescan(engine: Engine, root: Path) -> None:
    p = write_png(root / "o" / "x.png", text("old prompt"))
    index = Index(engine, root)
    index.scan()
    age_folders(root)
    index.scan()
    write_png(p, text("fresh prompt"))  # same name: the folder's mtime does not move
    age_folders(root)
    index.scan()
    assert found(index, "old") == {"o/x.png"}  # a shallow rescan cannot know
    index.scan(deep=True)
    assert found(index, "fresh") == {"o/x.png"} and found(index, "old") == set()


def test_rewritten_and_removed_images_leave_no_words_behind(engine: Engine,
                                                            root: Path) -> None:
    """The full-text table keeps no copy of the texts: a doc must be taken out with
    the very texts it went in with (CJK spaced out, the path too), or its old words
    go on finding the row now at its id, or another."""
    p = write_png(root / "w" / "x.png", text("一个红发女孩 lighthouse"))
    write_png(root / "w" / "y.png", text("弓箭手 harbour"))
    write_png(root / "v" / "z.png", text("水彩 windmill"))
    index = Index(engine, root)
    index.scan()
    assert found(index, "红发") == {"w/x.png"} and found(index, "x.png") == {"w/x.png"}
    write_png(p, text("plain meadow"))  # rewritten in place: deep rescan
    index.scan(deep=True)
    assert found(index, "meadow") == {"w/x.png"}
    for word in ("红发", "女孩", "lighthouse"):
        assert found(index, word) == set(), word
    (root / "w" / "y.png").unlink()  # an event for a file gone
    index.update_paths(["w/y.png"])
    assert found(index, "弓箭手") == set() and found(index, "harbour") == set()
    write_png(root / "w" / "y.png", text("新的 second life"))  # back, under the same name
    index.update_paths(["w/y.png"])
    assert found(index, "second life") == {"w/y.png"} and found(index, "弓箭手") == set()
    shutil.rmtree(root / "v")  # a folder gone: its rows and words with it
    index.scan()
    assert found(index, "水彩") == set() and found(index, "windmill") == set()
    assert found(index, "meadow") == {"w/x.png"} and found(index, "新的") == {"w/y.png"}
    with engine.connect() as conn:
        fts = conn.execute(sa.text("SELECT count(*) FROM image_fts")).scalar_one()
    assert fts == 2
    index.reset()  # the whole tree again, from nothing
    index.scan()
    assert found(index, "meadow") == {"w/x.png"} and found(index, "红发") == set()


def test_sidecar_change_reindexes_image(engine: Engine, root: Path) -> None:
    write_png(root / "s" / "x.png", None)
    index = Index(engine, root)
    index.scan()
    (root / "s" / "x.txt").write_text(text("from the sidecar"))
    index.update_paths(["s/x.txt"])
    assert found(index, "sidecar") == {"s/x.png"}


def test_searchable_during_indexing_and_stop_is_safe(engine: Engine, root: Path,
                                                     tmp_path: Path) -> None:
    n = 700
    for i in range(n):
        write_png(root / f"f{i % 7}" / f"{i}.png", text(f"walrus number{i}", seed=i),
                  size=(8, 8))
    index = Index(engine, root)
    reader = db.connect(f"sqlite:///{tmp_path / 'state' / 'db.sqlite'}")
    seen: list[int] = []

    def on_flush(written: int) -> None:
        # another connection, as a request thread would use, while the scan goes on
        seen.append(search(Index(reader, root), ALL, SearchQuery(q="walrus", limit=1))["total"])
        index.stop()  # stop mid-way, as a crash would

    index.on_flush = on_flush
    index.scan()
    assert seen and 0 < seen[0] < n
    partial = paths(index)
    assert 0 < len(partial) < n
    # a fresh start completes the index without duplicates
    again = Index(engine, root)
    again.scan()
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*), count(DISTINCT path) FROM image_index")
                            ).one()
        fts = conn.execute(sa.text("SELECT count(*) FROM image_fts")).scalar_one()
    assert tuple(rows) == (n, n) and fts == n
    assert found(again, "number123") == {"f4/123.png"}
    reader.dispose()


def test_index_is_a_rebuildable_cache(engine: Engine, root: Path) -> None:
    write_png(root / "x" / "a.png", text("lighthouse"))
    index = Index(engine, root)
    index.scan()
    with engine.begin() as conn:  # someone deletes the cache
        conn.exec_driver_sql("DROP TABLE image_fts")
        conn.exec_driver_sql("DROP TABLE image_index")
    index = Index(engine, root)
    index.scan()
    assert found(index, "lighthouse") == {"x/a.png"}
    with engine.begin() as conn:  # an index from another version
        conn.exec_driver_sql("UPDATE index_meta SET value = 'old' WHERE key = 'schema'")
    index = Index(engine, root)
    assert paths(index) == set()
    index.scan()
    assert found(index, "lighthouse") == {"x/a.png"}


def _exercise(service: IndexService, index: Index, root: Path) -> None:
    """new, changed, moved, deleted files and folders, each awaited by condition."""
    service.start()
    try:
        wait_until(lambda: found(index, "existing") == {"keep/e.png"}, what="initial scan")
        write_png(root / "keep" / "n.png", text("newcomer"))
        wait_until(lambda: found(index, "newcomer") == {"keep/n.png"}, what="new file")
        write_png(root / "keep" / "e.png", text("rewritten"), size=(70, 50))
        wait_until(lambda: found(index, "rewritten") == {"keep/e.png"}, what="changed file")
        assert found(index, "existing") == set()
        (root / "other").mkdir()
        os.rename(root / "keep" / "n.png", root / "other" / "n2.png")
        wait_until(lambda: found(index, "newcomer") == {"other/n2.png"}, what="moved file")
        (root / "keep" / "e.png").unlink()
        wait_until(lambda: "keep/e.png" not in paths(index), what="deleted file")
        write_png(root / "tmp" / "deep" / "d.png", text("nested"))
        wait_until(lambda: found(index, "nested") == {"tmp/deep/d.png"}, what="new folder")
        os.rename(root / "tmp", root / "renamed")
        wait_until(lambda: found(index, "nested") == {"renamed/deep/d.png"},
                   what="moved folder")
        shutil.rmtree(root / "renamed")
        wait_until(lambda: found(index, "nested") == set(), what="deleted folder")
    finally:
        service.stop()


def test_watcher_follows_changes(engine: Engine, root: Path) -> None:
    write_png(root / "keep" / "e.png", text("existing"))
    index = Index(engine, root)
    # no periodic rescan within the test: only filesystem events can do it
    service = IndexService(index, watch=True, rescan_seconds=3600, deep_seconds=3600,
                           debounce=0.05)
    _exercise(service, index, root)
    assert index.status.watching


def test_rescan_follows_changes_without_events(engine: Engine, root: Path) -> None:
    write_png(root / "keep" / "e.png", text("existing"))
    index = Index(engine, root)
    # as on NFS: no events at all, only the periodic (and deep) rescans
    service = IndexService(index, watch=False, rescan_seconds=0.2, deep_seconds=0.6)
    _exercise(service, index, root)
    assert not index.status.watching
    assert index.status.last_deep_scan is not None


def test_reset_is_atomic_for_concurrent_searches(engine: Engine, root: Path) -> None:
    """A search running while an admin resets the index sees the old or the new (empty)
    index, never missing tables (pysqlite would otherwise run the DDL unprotected)."""
    import threading

    idx = Index(engine, root)
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT count(*) FROM image_fts").scalar()
                    conn.execute(sa.select(sa.func.count()).select_from(
                        sa.table("image_index"))).scalar()
            except sa.exc.OperationalError as exc:
                errors.append(str(exc))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(60):
            idx.reset()
    finally:
        stop.set()
        t.join(30)
    assert errors == []
