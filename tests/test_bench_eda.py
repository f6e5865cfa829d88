"""`hvdweather-bench eda`: the tables built from measurement rows, flag errors, and one tiny end-to-end
run that writes every file (no timing is asserted: timings are for the benchmark to report)."""
from __future__ import annotations

import csv
import json

import pytest

from conftest import run_cli
from hvdweather.bench.eda import REFERENCE, EdaBenchSpec
from hvdweather.bench.eda_report import (
    kernel_markdown,
    plot_speedup,
    scaling_markdown,
    scaling_summary,
    train_markdown,
    write_tables,
)
from hvdweather.bench.spec import spec_from_flags
from hvdweather.config import ConfigError

MACHINE = {"host": "h", "cores": 2, "cpu_model": "Test CPU", "cpu_flags": ["avx2"], "mpi": "Open MPI 4.1.4",
           "versions": {"tensorflow": "2.15.1", "horovod": "0.28.1"}, "date": "today"}


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


def test_kernel_table_compares_with_the_reference_kernel():
    rows = [{"part": "kernel", "method": method, "scope": "decode + histogram", "repeat": r, "time_s": t,
             "images": 10, "same_result": True}
            for r in range(3) for method, t in ((REFERENCE, 0.2 + r / 100), ("ours", 0.1))]
    text = kernel_markdown(rows)
    assert "same totals as the reference kernel: yes" in text
    assert f"| ours | decode + histogram | 0.100 | 10.00 | {0.21 / 0.1:.2f} |" in text


def test_train_table_compares_epoch_1_with_epoch_2():
    rows = [{"part": "train", "source": "prepare", "time_s": 5.0, "workers": 2},
            {"part": "train", "source": "shards", "epoch": 1, "train_time_s": 3.0},
            {"part": "train", "source": "shards", "epoch": 2, "train_time_s": 2.0}]
    text = train_markdown(rows)
    assert "prepare: 5.00 s on 2 workers" in text and "| prepared shards | 3.00 | 2.00 | 1.50 | 1.00 |" in text
    assert "class folders" not in text  # no folder rows, no row


def test_tables_name_the_machine_and_the_plot_has_whole_worker_ticks(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.image import imread

    text = write_tables(EdaBenchSpec(data="/d", out=str(tmp_path)), fake_rows(), 99, MACHINE)
    assert text.splitlines()[0] == "Machine: h, 2 cores (Test CPU; flags: avx2); TensorFlow 2.15.1, " \
                                   "Horovod 0.28.1, Open MPI 4.1.4; today."
    assert (tmp_path / "eda_scaling.md").read_text() == text and imread(tmp_path / "eda_speedup.png").size
    figure = plot_speedup(scaling_summary(fake_rows()))
    ticks = [list(ax.get_xticks()) for ax in figure.axes]
    plt.close(figure)
    assert ticks == [[1, 2, 4]]  # measured worker counts (and the 2 cores): never 1.5 workers


@pytest.mark.parametrize("flags, message", [
    ({"processes": "0,2"}, "--processes"), ({"executors": "mpi,dask"}, "--executors"),
    ({"parts": "train,x"}, "--parts"), ({"per_worker_batch_size": 0}, "--batch-size"),
    ({"image_size": 64}, "--image-size"),
    ({"train_epochs": 1}, "--train-epochs"), ({"repeats": 0}, "--repeats")])
def test_bad_flags_are_config_errors_naming_the_flag(tiny_data, tmp_path, flags, message):
    with pytest.raises(ConfigError, match=message):
        spec_from_flags(EdaBenchSpec, data=str(tiny_data), out=str(tmp_path), **flags)


def test_small_image_size_is_fine_without_training(tiny_data, tmp_path):
    spec = spec_from_flags(EdaBenchSpec, data=str(tiny_data), out=str(tmp_path), image_size=64,
                           parts="scaling,kernel", executors="sequential")
    assert spec.parts == ("scaling", "kernel") and spec.executors == ("sequential",)


@pytest.mark.multiprocess
@pytest.mark.timeout(600)
def test_bench_eda_end_to_end_writes_tables_and_plot(tiny_data, tmp_path):
    out = tmp_path / "bench"
    result = run_cli("hvdweather-bench", "eda", "--data", str(tiny_data), "--executors",
                     "sequential,multiprocessing,mpi", "--processes", "2", "--repeats", "1",
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
    assert all(float(r["tensorflow_import_s"]) > 0 for r in table if r["stage"] == "prepare")
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
    result = run_cli("hvdweather-bench", "eda", "--data", str(tiny_data), "--processes", "0,2",
                     "--out", str(tmp_path), timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--processes" in lines[0], result.stderr
