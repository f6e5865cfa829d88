"""`hvdweather-bench pipeline`: its help says what it writes, flags are checked before any pass, and the
report is built from rows alone. (The measurement itself runs in tests/test_pipeline.py's territory:
decoding; here nothing is timed.)"""
from __future__ import annotations

import pytest

from hvdweather.bench.pipeline import PipelineSpec
from hvdweather.bench.pipeline_report import markdown_report
from hvdweather.bench.spec import spec_from_flags
from hvdweather.cli import bench_group, run_command
from hvdweather.config import ConfigError

MACHINE = {"host": "h", "cores": 2, "cpu_model": "Test CPU", "cpu_flags": [], "mpi": "Open MPI 4.1.4",
           "versions": {"tensorflow": "2.15.1", "horovod": "0.28.1"}, "date": "today"}


def test_help_names_the_files_it_writes(capsys):
    assert run_command(bench_group, "hvdweather-bench", ["pipeline", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "pipeline.jsonl" in text and "pipeline.md" in text and "results.jsonl" not in text


@pytest.mark.parametrize("flags, message", [({"repeats": 0}, "--repeats"), ({"image_size": 0}, "--image-size"),
                                            ({"threads": -1}, "--threads")])
def test_bad_flags_name_the_flag(tiny_data, flags, message):
    with pytest.raises(ConfigError, match=f"^{message} "):
        spec_from_flags(PipelineSpec, data=str(tiny_data), **flags)


def test_threads_not_given_means_all_cores(tiny_data, tmp_path):
    spec = spec_from_flags(PipelineSpec, data=str(tiny_data), out=str(tmp_path / "o"), threads=None)
    assert spec.threads == 0 and (tmp_path / "o").is_dir()


def test_report_names_the_machine_and_tabulates_rows():
    rows = [{"method": m, "seconds": s, "images": 100, "image_size": 256, "threads": 2, "repeats": 3,
             "images_per_s": 100 / s, "speedup_vs_naive": 2.0 / s} for m, s in (("naive", 2.0), ("tf.data", 0.5))]
    text = markdown_report(rows, MACHINE, "/d", unreadable=1)
    lines = text.splitlines()
    assert lines[0].startswith("Machine: h, 2 cores (Test CPU; flags: none of avx2/")
    assert "100 images from /d at 256x256, median of 3; 1 unreadable skipped" in text
    assert "| tf.data | 0.50 | 200 | 4.00x |" in lines
