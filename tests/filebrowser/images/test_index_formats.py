"""The index and the other generators: what the rows hold, Fooocus' log.html written
after its image (by event and by rescan), stealth info as an opt-in, PostgreSQL-free
round trips of the ``params`` column."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.engine import Engine

from filebrowser import db
from filebrowser.access.jail import Scope
from filebrowser.images.index import Index, SearchQuery, search

from . import generators as gen
from .conftest import A1111_TEXT

ALL = Scope(read=("",), write=("",))


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


def one(index: Index, name: str) -> dict:
    r = search(index, ALL, SearchQuery(name=name, limit=5))["results"]
    assert len(r) == 1, r
    return r[0]


def age(path: Path, seconds: float = 100.0) -> None:
    t = path.stat().st_mtime - seconds
    os.utime(path, (t, t))


def test_rows_of_every_generator(engine: Engine, root: Path) -> None:
    gen.a1111_png(root / "a.png", A1111_TEXT)
    gen.fooocus_png(root / "fa.png", "a1111")
    gen.comfy_png(root / "c.png", gen.FLUX_PROMPT, gen.FLUX_WORKFLOW)
    gen.novelai_png(root / "n.png")
    gen.swarm_jpeg(root / "s.jpg")
    index = Index(engine, root)
    assert index.scan() == 5
    a = one(index, "a.png")
    # A1111's parameter line is kept as written and read again for the page: the same
    # fields as the other generators' JSON
    assert a["source"] == "a1111" and a["params"]["hires"]["upscaler"] == "4x-UltraSharp"
    assert a["params"]["adetailer"]["prompt"] == "smile, closed eyes: 1"
    assert a["loras"][0] == {"name": "add_detail", "weight": 0.8, "hash": "7c6bad76eb54"}
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT params FROM image_index WHERE name = 'a.png'")
                              ).scalar_one()
    assert stored.startswith("Steps: 28, Sampler: DPM++ 2M")
    fa = one(index, "fa.png")
    assert fa["source"] == "fooocus" and fa["loras"][0]["weight"] == 0.1
    c = one(index, "c.png")
    assert (c["source"], c["model"], c["seed"]) == ("comfyui", "flux1-dev", 219670278747233)
    assert c["params"]["extra"] == {"Guidance": "3.5"} and c["loras"][0]["name"] == "realism_lora"
    n = one(index, "n.png")
    assert (n["source"], n["sampler"], n["params"]["scheduler"]) == ("novelai", "DPM++ 2M",
                                                                      "Karras")
    s = one(index, "s.jpg")
    assert (s["source"], s["model"]) == ("swarmui", "sd_xl_base_1.0")


def test_fooocus_log_written_after_the_image(engine: Engine, root: Path) -> None:
    day = root / "outputs" / "2024-06-13"
    day.mkdir(parents=True)
    img = day / "2024-06-13_10-00-00_1.png"
    Image.new("RGB", (8, 8)).save(img)  # Fooocus saves the image first...
    age(img)
    index = Index(engine, root)
    index.scan()
    assert one(index, img.name)["source"] is None
    gen.fooocus_log(day, [(img.name, gen.FOOOCUS_FIELDS)])  # ...then its log
    index.update_paths(["outputs/2024-06-13/log.html"])  # the watcher's event
    assert one(index, img.name)["source"] == "fooocus"
    assert search(index, ALL, SearchQuery(q="astronaut"))["total"] == 1


def test_fooocus_log_found_by_a_rescan(engine: Engine, root: Path) -> None:
    day = root / "outputs" / "2024-06-14"
    day.mkdir(parents=True)
    img = day / "2024-06-14_09-00-00_7.png"
    Image.new("RGB", (8, 8)).save(img)
    age(img)
    index = Index(engine, root)
    index.scan()
    assert one(index, img.name)["source"] is None
    gen.fooocus_log(day, [(img.name, gen.FOOOCUS_FIELDS)])  # another host wrote it (NFS)
    index.scan()
    assert one(index, img.name)["model"] == "juggernautXL_v8Rundiffusion"


def test_fooocus_log_read_again_when_it_changed(engine: Engine, root: Path) -> None:
    """A scan reads a folder's log once, for all its images; the next scan must read
    the log Fooocus has rewritten since, not the one the last scan saw."""
    day = root / "outputs" / "2024-06-15"
    day.mkdir(parents=True)
    first, second = day / "2024-06-15_08-00-00_1.png", day / "2024-06-15_08-05-00_2.png"
    Image.new("RGB", (8, 8)).save(first)
    fields = [(label, key, "lighthouse keeper" if key == "prompt" else v)
              for label, key, v in gen.FOOOCUS_FIELDS]
    gen.fooocus_log(day, [(first.name, fields)])
    index = Index(engine, root)
    index.scan()
    assert one(index, first.name)["prompt"] == "lighthouse keeper"
    Image.new("RGB", (8, 8)).save(second)
    gen.fooocus_log(day, [(first.name, fields), (second.name, gen.FOOOCUS_FIELDS)])
    index.scan()
    assert one(index, second.name)["source"] == "fooocus"
    assert one(index, first.name)["prompt"] == "lighthouse keeper"


def test_stealth_info_is_opt_in(engine: Engine, root: Path, tmp_path: Path) -> None:
    gen.stealth_png(root / "s.png", A1111_TEXT)
    plain = Index(engine, root)
    plain.scan()
    assert one(plain, "s.png")["source"] is None
    other = db.connect(f"sqlite:///{tmp_path / 'state2.sqlite'}")
    try:
        stealthy = Index(other, root, stealth=True)
        stealthy.scan()
        row = one(stealthy, "s.png")
        assert (row["source"], row["seed"]) == ("a1111", 3141592653)
    finally:
        other.dispose()


def test_unknown_json_is_not_words(engine: Engine, root: Path) -> None:
    gen.a1111_png(root / "u.png", '{"tool": "x", "positive": "zebrafinch"}')
    index = Index(engine, root)
    index.scan()
    row = one(index, "u.png")
    assert (row["source"], row["prompt"]) == ("unknown", "")
    assert search(index, ALL, SearchQuery(q="zebrafinch"))["total"] == 0
