"""Run-directory writers: the primary writes, every other rank writes nothing and reads nothing."""
from __future__ import annotations

import json

from hvdweather.writers import RunWriter, read_jsonl


def _write_everything(writer: RunWriter) -> None:
    writer.write_json("config.json", {"a": 1})
    writer.append_jsonl("metrics.jsonl", {"epoch": 1})
    writer.append_jsonl("metrics.jsonl", {"epoch": 2})
    writer.write_csv("skipped.csv", ["path", "reason"], [["x.jpg", "empty"]])
    writer.write_text("report/r.txt", "hello")
    writer.write_with("split.csv", lambda path: path.write_text("subset\n"))


def test_primary_writes_and_reads_back(tmp_path, capsys):
    writer = RunWriter(tmp_path / "run", is_primary=True)
    _write_everything(writer)
    writer.log("one line")
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"a": 1}
    assert [r["epoch"] for r in writer.read_jsonl("metrics.jsonl")] == [1, 2]
    assert (tmp_path / "run" / "report" / "r.txt").read_text() == "hello"
    assert (tmp_path / "run" / "skipped.csv").read_text().splitlines() == ["path,reason", "x.jpg,empty"]
    assert capsys.readouterr().out == "one line\n"


def test_other_ranks_do_nothing(tmp_path, capsys):
    writer = RunWriter(tmp_path / "run", is_primary=False)
    _write_everything(writer)
    writer.log("should not appear")
    called = []
    writer.save_figure("f.png", lambda: called.append(1))
    assert not (tmp_path / "run").exists()
    assert writer.read_jsonl("metrics.jsonl") == []
    assert called == [] and capsys.readouterr().out == ""


def test_read_jsonl_of_a_missing_file_is_empty(tmp_path):
    assert read_jsonl(tmp_path / "none.jsonl") == []


def test_copy_file_keeps_the_version_it_copied_when_the_source_is_written_again(tmp_path, monkeypatch):
    """best.keras is last.keras of the improving epoch: a hard link (or, without them, a copy), atomic, and
    untouched when last.keras is saved again. Proven to fail: a symlink instead of a hard link follows
    last.keras to its new contents."""
    import os

    writer = RunWriter(tmp_path, is_primary=True)
    writer.write_json("last.json", {"epoch": 1})
    writer.copy_file("last.json", "best.json")
    writer.write_json("last.json", {"epoch": 2})  # the next epoch's save replaces it by a rename
    assert writer.read_json("best.json") == {"epoch": 1} and writer.read_json("last.json") == {"epoch": 2}
    writer.copy_file("last.json", "best.json")  # again over an existing best
    assert writer.read_json("best.json") == {"epoch": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "last.json"]  # no temporary left

    def no_links(*args):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    writer.write_json("last.json", {"epoch": 3})
    writer.copy_file("last.json", "best.json")
    assert writer.read_json("best.json") == {"epoch": 3}
    RunWriter(tmp_path, is_primary=False).copy_file("last.json", "other.json")  # other ranks: nothing
    assert not (tmp_path / "other.json").exists()
