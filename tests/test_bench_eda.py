"""`hvdweather-bench eda`: the tables built from measurement rows, flag errors, and one tiny end-to-end
run that writes every file (no timing is asserted: timings are for the benchmark to report)."""
from __future__ import annotations

import csv
import json

import pytest

from conftest import run_cli
from hvdweather.bench.eda import parse_list, scaling_markdown, scaling_summary
from hvdweather.config import ConfigError


def fake_rows() -> list[dict]:
    rows = []
    for backend, workers, seconds in (("sequential", 1, [10.0, 12.0, 11.0]), ("multiprocessing", 2, [6.0, 5.5, 50.0]),
                                      ("mpi", 4, [4.0, 4.0, 4.0])):
        rows += [{"part": "scaling", "stage": "eda", "backend": backend, "workers": workers, "repeat": r,
                  "time_s": t, "wall_s": t + 1, "cores": 2, "oversubscribed": workers > 2, "same_result": True}
                 for r, t in enumerate(seconds)]
    return rows


def test_scaling_summary_uses_medians_against_sequential():
    table = {(r["backend"], r["workers"]): r for r in scaling_summary(fake_rows())}
    assert table[("sequential", 1)]["time_s"] == 11.0 and table[("sequential", 1)]["speedup"] == 1.0
    assert table[("multiprocessing", 2)]["time_s"] == 6.0  # the 50 s outlier does not move the median
    assert table[("multiprocessing", 2)]["speedup"] == pytest.approx(11 / 6)
    assert table[("multiprocessing", 2)]["efficiency"] == pytest.approx(11 / 12)
    assert table[("mpi", 4)]["oversubscribed"] and not table[("multiprocessing", 2)]["oversubscribed"]
    markdown = scaling_markdown(list(table.values()), images=99)
    assert "99 images, 2 cores, median of 3" in markdown
    assert "| mpi | 4 | 4.00 | 2.75 | 0.69 | oversubscribed |" in markdown


@pytest.mark.parametrize("text, allowed", [("0,2", None), ("a", None), ("2,2", None), ("", None),
                                           ("mpi,dask", ("sequential", "mpi"))])
def test_parse_list_rejects_bad_values(text, allowed):
    with pytest.raises(ConfigError, match="--flag"):
        parse_list(text, "--flag", allowed)


@pytest.mark.multiprocess
@pytest.mark.timeout(600)
def test_bench_eda_end_to_end_writes_tables_and_plot(tiny_data, tmp_path):
    out = tmp_path / "bench"
    result = run_cli("hvdweather-bench", "eda", "--data", str(tiny_data), "--backends",
                     "sequential,multiprocessing,mpi", "--workers", "2", "--repeats", "1",
                     "--kernel-images", "6", "--batch-size", "4", "--out", str(out), timeout=580)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for name in ("results.jsonl", "eda_scaling.csv", "eda_scaling.md", "eda_speedup.png"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "eda_scaling.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert {(r["stage"], r["backend"], r["workers"]) for r in table} == {
        (stage, backend, workers) for stage in ("eda", "prepare")
        for backend, workers in (("sequential", "1"), ("multiprocessing", "2"), ("mpi", "2"))}
    assert all(r["same_result"] == "True" for r in table)
    assert all(float(r["tensorflow_import_s"]) >= 0 for r in table if r["stage"] == "prepare")
    assert all(r["tensorflow_import_s"] == "" for r in table if r["stage"] == "eda")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["part"] for r in rows} == {"scaling", "kernel", "train"}
    assert all(r["same_result"] for r in rows if r["part"] == "kernel")
    assert {(r["source"], r.get("epoch")) for r in rows if r["part"] == "train"} == {
        ("prepare", None), ("shards", 1), ("shards", 2), ("folders", 1), ("folders", 2)}
    markdown = (out / "eda_scaling.md").read_text()
    for heading in ("**EDA", "**prepare (", "**histogram kernel**", "**prepare + train**"):
        assert heading in markdown and heading in result.stdout


def test_bench_eda_flag_errors_are_one_line(tiny_data, tmp_path):
    result = run_cli("hvdweather-bench", "eda", "--data", str(tiny_data), "--workers", "0,2",
                     "--out", str(tmp_path), timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--workers" in lines[0], result.stderr
