"""The resume control file: round trip, in-place marks, corruption."""

from __future__ import annotations

from pathlib import Path

from modelzoo.fetch.control import ControlFile, Validators


def test_marks_survive_a_reload(tmp_path: Path) -> None:
    path = tmp_path / ".m.part.ctl"
    v = Validators(size=1000, etag='"abc"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT")
    ctl = ControlFile.create(path, v, piece_size=300, url="http://x/m")
    ctl.mark(0)
    ctl.mark(3)
    ctl.close()  # no sync: a killed process's writes are in the page cache all the same
    again = ControlFile.load(path)
    assert again is not None
    assert again.validators == v and again.piece_size == 300
    assert again.done == [True, False, False, True]
    again.remove()
    assert not path.exists()


def test_unreadable_control_file_means_start_over(tmp_path: Path) -> None:
    path = tmp_path / ".m.part.ctl"
    assert ControlFile.load(path) is None
    path.write_bytes(b"ATZFC01\n\x00\x00\x00\x05{bad}")
    assert ControlFile.load(path) is None
    ctl = ControlFile.create(path, Validators(1000), 100, "u")
    ctl.close()
    path.write_bytes(path.read_bytes()[:-1])  # bitmap cut short
    assert ControlFile.load(path) is None


def test_validators_compare_what_both_sides_know() -> None:
    base = Validators(10, '"a"', "Mon")
    assert base.same_as(Validators(10))
    assert base.same_as(Validators(10, '"a"'))
    assert not base.same_as(Validators(11, '"a"', "Mon"))
    assert not base.same_as(Validators(10, '"b"'))
    assert not base.same_as(Validators(10, None, "Tue"))
