"""hvdweather.errors: the one writable-directory check every command runs before long work."""
from __future__ import annotations

import pytest

from hvdweather.errors import INPUT_ERRORS, OutputError, check_output_dir


def test_output_dir_check(tmp_path):
    check_output_dir(tmp_path / "new" / "run")
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="--cache-dir .*not writable"):
        check_output_dir(tmp_path / "f" / "sub", "--cache-dir")


def test_out_dir_with_subfolders_or_one_line_naming_the_flag(tmp_path):
    """Benchmarks and studies make their logs/ and runs/ here (fails if `subdirs` were ignored)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert check_output_dir(tmp_path / "b", subdirs=("logs",)) == tmp_path / "b"
    assert (tmp_path / "b" / "logs").is_dir()
    with pytest.raises(OutputError, match="^--out .*: not writable .*; choose a directory you can write to$"):
        check_output_dir(blocker / "sub", subdirs=("logs",))
    assert OutputError in INPUT_ERRORS  # so every command reports it in one line, exit 2
