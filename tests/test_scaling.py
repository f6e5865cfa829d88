"""The scaling benchmark: derived numbers, tables and plots from hand-made results lines, flag
errors, and real end-to-end runs on tiny data (including a failing run that must not stop it)."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from hvdweather.bench import scaling, scaling_spec
from hvdweather.bench.scaling import execute_run, summarize_metrics
from hvdweather.bench.scaling_report import (
    CSV_COLUMNS,
    add_derived,
    markdown_report,
    pivot_table,
    plot_epoch_time,
    plot_speedup,
    write_csv,
)
from hvdweather.bench.scaling_spec import BASELINE, RunSpec, ScalingSpec, build_command, plan_runs
from hvdweather.bench.spec import spec_from_flags
from hvdweather.config import ConfigError

MACHINE = {"host": "h", "cores": 2, "cpu_model": "Test CPU", "cpu_flags": ["avx2", "avx512f"],
           "mpi": "mpirun (Open MPI) 4.1.4", "versions": {"tensorflow": "2.15.1", "horovod": "0.28.1"},
           "date": "today"}


def line(strategy: str, workers: int, batch: int, images_per_s: float, train_time_s: float,
         status: str = "ok") -> dict:
    """A results.jsonl line as execute_run writes it."""
    row = {"run": f"{strategy}-w{workers}-b{batch}", "strategy": strategy, "workers": workers,
           "processes": workers if strategy == "horovod" else 1, "threads_per_worker": 1,
           "per_worker_batch_size": batch, "global_batch_size": workers * batch, "epochs": 3,
           "status": status, "log": f"/bench/logs/{strategy}-w{workers}-b{batch}.log",
           "error": None if status == "ok" else "boom"}
    if status == "ok":
        row.update(images_per_s=images_per_s, train_time_s=train_time_s, epoch_time_s=train_time_s + 0.5,
                   timed_epochs=2, epochs_to_target=workers + 1)
    return row


@pytest.fixture
def results() -> list[dict]:
    return [line("horovod", 1, 32, 100.0, 3.0), line("horovod", 2, 32, 190.0, 1.6),
            line("mirrored", 1, 32, 95.0, 3.2), line("mirrored", 2, 32, 150.0, 2.0),
            line("horovod", 1, 64, 110.0, 2.8), line("horovod", 2, 64, 0, 0, status="failed"),
            line("mirrored", 1, 64, 0, 0, status="timeout"), line("mirrored", 2, 64, 160.0, 1.9),
            line(BASELINE, 1, 32, 120.0, 2.5), line(BASELINE, 1, 64, 125.0, 2.4)]


def by_run(rows: list[dict]) -> dict[str, dict]:
    return {r["run"]: r for r in rows}


def test_speedup_efficiency_and_ratios(results):
    raw = by_run(results)
    rows = by_run(add_derived(results))
    h2, h1 = raw["horovod-w2-b32"], raw["horovod-w1-b32"]
    speedup = h2["images_per_s"] / h1["images_per_s"]
    assert rows["horovod-w2-b32"]["speedup"] == pytest.approx(speedup)
    assert rows["horovod-w2-b32"]["efficiency"] == pytest.approx(speedup / 2)
    m2 = raw["mirrored-w2-b32"]
    assert rows["mirrored-w2-b32"]["efficiency"] == pytest.approx(
        m2["images_per_s"] / raw["mirrored-w1-b32"]["images_per_s"] / 2)
    ratio = h2["train_time_s"] / m2["train_time_s"]
    assert rows["horovod-w2-b32"]["horovod_to_mirrored_time"] == pytest.approx(ratio)
    assert rows["horovod-w2-b32"]["vs_baseline"] == pytest.approx(
        h2["images_per_s"] / raw["single-w1-b32"]["images_per_s"])
    assert rows["horovod-w1-b32"]["speedup"] == pytest.approx(1.0)


def test_failed_runs_give_no_derived_numbers(results):
    rows = by_run(add_derived(results))
    failed = rows["horovod-w2-b64"]
    assert failed["status"] == "failed"
    assert failed["speedup"] is None and failed["efficiency"] is None and failed["vs_baseline"] is None
    assert rows["mirrored-w2-b64"]["speedup"] is None  # its 1-worker reference timed out
    assert rows["mirrored-w2-b64"]["horovod_to_mirrored_time"] is None  # its Horovod pair failed
    assert rows["mirrored-w2-b64"]["vs_baseline"] == pytest.approx(160.0 / 125.0)


def test_pivot_table_is_shaped_like_the_reference_projects_table(results):
    rows = add_derived(results)
    table = pivot_table(rows, "train_time_s", "{:.2f}").splitlines()
    assert table[0] == "| strategy x workers | bs 32 | bs 64 |"
    body = {cells[1].strip(): [c.strip() for c in cells[2:-1]] for cells in (r.split("|") for r in table[2:])}
    assert body["horovod x 2"] == ["1.60", "failed"]
    assert body["mirrored x 1"] == ["3.20", "timeout"]
    assert body["single process, 1 threads"] == ["2.50", "2.40"]
    assert len(table) == 2 + 5
    speedups = pivot_table(rows, "speedup", "{:.2f}", ("horovod", "mirrored"))
    assert "single process" not in speedups
    assert f"| horovod x 2 | {190 / 100:.2f} | failed |" in speedups


def test_markdown_report_names_the_machine_and_failed_logs(results):
    spec = ScalingSpec(data="/data", out="/bench", epochs=3)
    text = markdown_report(add_derived(results), MACHINE, spec)
    assert "2 cores (Test CPU;" in text and "TensorFlow 2.15.1" in text and "Horovod 0.28.1" in text
    assert "Open MPI" in text
    for title in ("Median epoch time", "Speed-up vs 1 worker", "Efficiency", "Horovod / mirrored",
                  "single process on all cores", "Epochs to val accuracy"):
        assert title in text, title
    assert "| horovod-w2-b64 | failed | /bench/logs/horovod-w2-b64.log | boom |" in text
    assert "| mirrored-w1-b64 | timeout |" in text


def test_csv_has_every_column_and_row(results, tmp_path):
    path = tmp_path / "scaling.csv"
    write_csv(add_derived(results), path)
    with path.open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert [r["run"] for r in rows] == [r["run"] for r in results]
    assert by_run(rows)["horovod-w2-b64"]["speedup"] == ""


def test_plots_skip_failed_runs_and_draw_the_ideal_line(results):
    import matplotlib.pyplot as plt

    rows = add_derived(results)
    figure = plot_epoch_time(rows)
    axes = figure.axes
    assert [ax.get_title() for ax in axes] == ["per-worker batch 32", "per-worker batch 64"]
    horovod_64 = next(li for li in axes[1].lines if li.get_label() == "horovod")
    assert list(horovod_64.get_xdata()) == [1]  # the failed 2-worker run is not plotted
    plt.close(figure)
    figure = plot_speedup(rows)
    labels = [li.get_label() for li in figure.axes[0].lines]
    assert labels[0] == "ideal" and "horovod, bs 32" in labels and "mirrored, bs 64" not in labels
    ideal = figure.axes[0].lines[0]
    assert list(ideal.get_xdata()) == list(ideal.get_ydata()) == [1, 2]
    plt.close(figure)


def with_torch_ddp(results: list[dict]) -> list[dict]:
    return results + [line("torch-ddp", 1, 32, 80.0, 3.5), line("torch-ddp", 2, 32, 120.0, 2.6),
                      line("torch-ddp", 1, 64, 90.0, 3.4), line("torch-ddp", 2, 64, 0, 0, status="failed")]


def test_three_strategies_compare_against_torch_ddp(results):
    rows = by_run(add_derived(with_torch_ddp(results)))
    assert rows["horovod-w2-b32"]["vs_torch_ddp"] == pytest.approx(190.0 / 120.0)
    assert rows["mirrored-w1-b32"]["vs_torch_ddp"] == pytest.approx(95.0 / 80.0)
    assert rows["torch-ddp-w2-b32"]["speedup"] == pytest.approx(120.0 / 80.0)
    assert rows["mirrored-w2-b64"]["vs_torch_ddp"] is None  # its torch-ddp pair failed
    assert rows["single-w1-b32"]["vs_torch_ddp"] is None  # the baseline has no pair
    text = markdown_report(list(rows.values()), MACHINE, ScalingSpec(data="/data", epochs=3))
    assert text.startswith("# Scaling benchmark: Horovod vs MirroredStrategy vs PyTorch DDP")
    section = text.split("## Images/s vs torch-ddp")[1].split("##")[0]
    assert f"| horovod x 2 | {190 / 120:.2f} | failed |" in section
    assert "| torch-ddp x 2 | 1.00 | failed |" in section
    assert "| torch-ddp x 2 | 1.50 |" in text.split("## Speed-up vs 1 worker")[1].split("##")[0]


def test_no_torch_ddp_section_without_torch_ddp_runs(results):
    text = markdown_report(add_derived(results), MACHINE, ScalingSpec(data="/data", epochs=3))
    assert "vs torch-ddp" not in text and "PyTorch" not in text


def test_markdown_header_names_cpu_model_and_flags(results):
    text = markdown_report(add_derived(results), MACHINE, ScalingSpec(data="/data", epochs=3))
    header = text.splitlines()[2]
    assert header.startswith("Machine: h, 2 cores (Test CPU; flags: avx2, avx512f)")


def test_plots_draw_every_strategy_with_whole_worker_ticks(results):
    import matplotlib.pyplot as plt

    rows = add_derived(with_torch_ddp(results) + [line("horovod", 4, 32, 300.0, 1.0)])
    for figure in (plot_epoch_time(rows), plot_speedup(rows)):
        figure.canvas.draw()
        for ax in figure.axes:
            assert list(ax.get_xticks()) == [1, 2, 4]  # measured counts only: no 1.5 or 2.5 workers
        labels = {li.get_label() for ax in figure.axes for li in ax.lines}
        assert {"torch-ddp", "torch-ddp, bs 32"} & labels
        plt.close(figure)


def test_summarize_excludes_the_warmup_epoch():
    rows = [{"epoch": 1, "epoch_time_s": 30.0, "train_time_s": 29.0, "images_per_s": 5.0, "val_accuracy": 0.2},
            {"epoch": 2, "epoch_time_s": 3.0, "train_time_s": 2.0, "images_per_s": 50.0, "val_accuracy": 0.6},
            {"epoch": 3, "epoch_time_s": 5.0, "train_time_s": 4.0, "images_per_s": 30.0, "val_accuracy": 0.5},
            {"epoch": 4, "epoch_time_s": 4.0, "train_time_s": 3.0, "images_per_s": 40.0, "val_accuracy": 0.7}]
    summary = summarize_metrics(rows, target_accuracy=0.55)
    assert summary["timed_epochs"] == 3
    assert (summary["epoch_time_s"], summary["train_time_s"], summary["images_per_s"]) == (4.0, 3.0, 40.0)
    assert summary["epochs_to_target"] == 2
    assert summarize_metrics(rows, target_accuracy=0.9)["epochs_to_target"] is None
    assert summarize_metrics(rows[:1], 0.0)["train_time_s"] == 29.0  # one epoch: nothing else to time
    assert summary["full_epoch_s"] is None  # no phases recorded (torch-ddp, older runs)
    with_phases = [r | {"phases": {"epoch_s": r["epoch_time_s"] + 0.5}} for r in rows]
    assert summarize_metrics(with_phases, 0.5)["full_epoch_s"] == 4.5  # checkpoints and callbacks included


def test_plan_gives_every_worker_the_same_threads(tiny_data, tmp_path):
    spec = ScalingSpec(data=str(tiny_data), out=str(tmp_path), workers=(1, 2, 4), per_worker_batch_sizes=(8, 16))
    runs = plan_runs(spec, cores=8)
    scaling = [r for r in runs if r.strategy != BASELINE]
    assert len(scaling) == 2 * 3 * 2 and {r.threads_per_worker for r in scaling} == {8 // 4}
    assert [(r.workers, r.threads_per_worker) for r in runs if r.strategy == BASELINE] == [(1, 8), (1, 8)]


def test_commands_per_strategy(tiny_data, tmp_path):
    spec = ScalingSpec(data=str(tiny_data), out=str(tmp_path), launcher="/bin/true", timeline=True)
    horovod = build_command(spec, RunSpec("horovod", 2, 8, 1))
    assert horovod[:3] == ["/bin/true", "-np", "2"] and horovod[5].endswith("hvdweather-train")
    assert horovod[3:5] == ["--timeline-filename", str(tmp_path / "timelines" / "horovod-w2-b8.json")]
    mirrored = build_command(spec, RunSpec("mirrored", 2, 8, 1))
    assert mirrored[0].endswith("hvdweather-train") and mirrored[1:5] == ["--strategy", "mirrored",
                                                                          "--replicas", "2"]
    single = build_command(spec, RunSpec(BASELINE, 1, 8, 4))
    assert "--strategy" not in single and single[single.index("--threads-per-worker") + 1] == "4"
    assert not any(arg.startswith("--timeline") for arg in mirrored + single)
    for command in (horovod, mirrored, single):  # train refuses an --out holding a run without it
        assert "--overwrite" in command and command[command.index("--batch-size") + 1] == "8"
    torch = build_command(spec, RunSpec("torch-ddp", 2, 8, 1))
    assert torch[1:3] == ["-m", "hvdweather.bench.torch_ddp"]
    flags = dict(zip(torch[3::2], torch[4::2]))
    assert flags == {"--data": str(tiny_data), "--out": str(tmp_path / "runs" / "torch-ddp-w2-b8"),
                     "--workers": "2", "--batch-size": "8", "--epochs": "4", "--image-size": "256",
                     "--seed": "42", "--threads-per-worker": "1"}


def test_onednn_mode_reaches_every_tensorflow_run(tiny_data, tmp_path):
    """--onednn auto must be passed on: a child hvdweather-train given nothing would turn oneDNN on."""
    spec = ScalingSpec(data=str(tiny_data), out=str(tmp_path), launcher="/bin/true", onednn="auto")
    for strategy in ("horovod", "mirrored", BASELINE):
        command = build_command(spec, RunSpec(strategy, 1, 8, 1))
        assert command[command.index("--onednn") + 1] == "auto"
    assert "--onednn" not in build_command(spec, RunSpec("torch-ddp", 1, 8, 1))


def test_machine_line_says_how_onednn_was_asked_and_ran_and_the_matmul_rate():
    from hvdweather.bench.machine import machine_line

    machine = MACHINE | {"onednn": "on", "onednn_request": {"mode": "on", "source": "flag", "max_cpu_isa": "AVX2"},
                         "onednn_ran": ["on"], "matmul_gflops": {"1": 50.5, "2": 99.0}}
    assert ("; oneDNN on (--onednn on given; ISA capped at AVX2; ran: on); float32 matmul 50.5 GFLOP/s on "
            "1 thread(s), 99 GFLOP/s on 2 thread(s); today.") in machine_line(machine)


def test_a_rerun_keeps_the_old_run_directory_for_train_to_replace(tiny_data, tmp_path, monkeypatch):
    """The benchmark no longer deletes run directories itself: train's --overwrite clears them."""
    spec = ScalingSpec(data=str(tiny_data), out=str(tmp_path), epochs=1)
    run = RunSpec("mirrored", 1, 8, 1)
    old = tmp_path / "runs" / run.name
    old.mkdir(parents=True)
    (old / "metrics.jsonl").write_text("")
    seen = []

    def fake_launch(command: list[str], log: Path, timeout_s: float) -> tuple[int, float]:
        seen.append(old.exists())
        log.write_text("hvdweather-train: error: stopped by the test\n")
        return 1, 0.1

    monkeypatch.setattr(scaling, "launch", fake_launch)
    result = execute_run(spec, run, cores=2)
    assert result["status"] == "failed" and result["error"] == "hvdweather-train: error: stopped by the test"
    assert seen == [True]


FAKE_TRAIN = """
import json, sys
from pathlib import Path
out, workers, epochs = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
rows = [{"epoch": e, "epoch_time_s": 2.0, "train_time_s": 1.5, "images_per_s": 50.0 * workers,
         "val_accuracy": 0.6, "world_size": workers, "strategy": "torch-ddp"} for e in range(1, epochs + 1)]
(out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
(out / "config.json").write_text(json.dumps({"config": {"per_worker_batch_size": 8}}))
"""


def test_a_strategy_is_one_command_builder(tiny_data, tmp_path, monkeypatch):
    """A stand-in for the torch-ddp module: the runner's command builder decides what runs."""
    def fake_command(spec, run):
        return [sys.executable, "-c", FAKE_TRAIN, str(tmp_path / "runs" / run.name), str(run.workers),
                str(spec.epochs)]

    monkeypatch.setitem(scaling_spec.RUNNERS, "torch-ddp", scaling_spec.Runner(fake_command, False, "torch-ddp"))
    spec = spec_from_flags(ScalingSpec, **{**FLAGS, "strategies": "torch-ddp,horovod", "data": str(tiny_data),
                                           "out": str(tmp_path), "epochs": 3})
    line = execute_run(spec, RunSpec("torch-ddp", 2, 8, 1), cores=2)
    assert line["status"] == "ok", line
    assert line["images_per_s"] == 100.0 and line["processes"] == 2 and line["epochs_to_target"] == 1
    wrong_batch = execute_run(spec, RunSpec("torch-ddp", 2, 16, 1), cores=2)
    assert wrong_batch["status"] == "failed" and "per-worker batch 8, expected 16" in wrong_batch["error"]


def test_torch_ddp_without_torch_fails_its_row_in_one_line(tiny_data, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    monkeypatch.setattr(scaling, "launch", lambda *a: pytest.fail("launched a torch-ddp run without torch"))
    spec = ScalingSpec(data=str(tiny_data), out=str(tmp_path), strategies=("torch-ddp",))
    line = execute_run(spec, RunSpec("torch-ddp", 2, 8, 1), cores=2)
    assert line["status"] == "failed" and "pip install -e .[torch]" in line["error"]
    assert "\n" not in line["error"] and Path(line["log"]).read_text().strip() == line["error"]


@pytest.mark.parametrize("config", [{"config": {"per_worker_batch_size": 32}}, {"config": {"batch_size": 32}}])
def test_config_json_batch_is_checked_under_the_old_and_new_key(tmp_path, config):
    rows = [{"epoch": 1, "world_size": 2, "strategy": "horovod"}]
    assert scaling.check_metrics(rows, RunSpec("horovod", 2, 32, 1), 1, config) == ""
    assert "per-worker batch 32, expected 64" in scaling.check_metrics(rows, RunSpec("horovod", 2, 64, 1), 1,
                                                                       config)


FLAGS = {"strategies": "horovod,mirrored", "workers": "1,2", "per_worker_batch_sizes": "8",
         "per_run_timeout_s": 60.0}


@pytest.mark.parametrize("flags, message", [
    ({"workers": "1,x"}, "--workers"), ({"workers": "1,1"}, "--workers"),
    ({"per_worker_batch_sizes": "0"}, "--batch-sizes"), ({"strategies": "horovod,ddp"}, "--strategies"),
    ({"strategies": "horovod,horovod"}, "--strategies"), ({"epochs": 0}, "--epochs"),
    ({"image_size": 64}, "--image-size"), ({"launcher": "/no/such/horovodrun"}, "--launcher"),
    ({"target_accuracy": 2.0}, "--target-accuracy"), ({"per_run_timeout_s": 0}, "--per-run-timeout"),
    ({"threads_per_worker": -1}, "--threads-per-worker")])
def test_bad_flag_values_are_config_errors(tiny_data, tmp_path, flags, message):
    with pytest.raises(ConfigError, match=message):
        spec_from_flags(ScalingSpec, **{**FLAGS, "data": str(tiny_data), "out": str(tmp_path), **flags})


@pytest.mark.timeout(120)
def test_bad_flag_fails_in_one_line_before_any_run(tiny_data, tmp_path):
    out = tmp_path / "bench"
    result = run_cli("hvdweather-bench", "scaling", "--data", str(tiny_data), "--out", str(out),
                     "--image-size", "64", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--image-size" in result.stderr
    assert not (out / "results.jsonl").exists()


def test_bad_data_dir_fails_before_any_run(tmp_path):
    from hvdweather.data.discovery import DataError

    with pytest.raises(DataError, match="--data"):
        spec_from_flags(ScalingSpec, **FLAGS, data=str(tmp_path / "missing"), out=str(tmp_path / "b"))


def _read_results(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.multiprocess
@pytest.mark.timeout(600)
def test_end_to_end_both_strategies(tiny_data, tmp_path):
    out = tmp_path / "bench"
    result = run_cli("hvdweather-bench", "scaling", "--data", str(tiny_data), "--out", str(out),
                     "--strategies", "horovod,mirrored", "--workers", "1,2", "--batch-sizes", "4",
                     "--epochs", "1", "--per-run-timeout", "240", "--timeline", "--onednn", "off", timeout=580)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("results.jsonl", "scaling.csv", "scaling.md", "epoch_time.png", "speedup.png", "machine.json"):
        assert (out / name).stat().st_size > 0, name
    lines = _read_results(out)
    assert sorted(r["run"] for r in lines) == ["horovod-w1-b4", "horovod-w2-b4", "mirrored-w1-b4",
                                               "mirrored-w2-b4", "single-w1-b4"]
    assert all(r["status"] == "ok" and r["images_per_s"] > 0 for r in lines), lines
    for r in lines:
        assert Path(r["log"]).is_file() and (Path(r["run_dir"]) / "metrics.jsonl").is_file()
    with (out / "scaling.csv").open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS and len(rows) == 5
    assert all(r["speedup"] for r in rows if r["strategy"] != BASELINE)
    machine = json.loads((out / "machine.json").read_text())
    assert machine["cores"] >= 1 and machine["versions"]["horovod"]
    assert machine["onednn_request"]["mode"] == "off" and machine["onednn_ran"] == ["off"]  # the runs got it
    assert set(machine["matmul_gflops"]) == {"1", "2"} and machine["model_flops"]["train_flops_per_image"] > 0
    assert all(float(r["of_matmul"]) > 0 for r in rows)  # every row: achieved GFLOP/s / matmul rate
    timelines = {r["run"]: r["timeline"] for r in lines if r["strategy"] == "horovod"}
    for timeline in timelines.values():
        assert "NEGOTIATE_ALLREDUCE" in Path(timeline).read_text()  # horovodrun got the timeline flag
    assert "## Efficiency" in result.stdout and "| horovod x 2 |" in result.stdout  # the table is printed
    assert all(r["full_epoch_s"] >= r["epoch_time_s"] for r in lines)  # the checkpoint's writes too
    assert "## Compute: achieved GFLOP/s" in result.stdout


@pytest.mark.timeout(300)
def test_a_failing_run_is_reported_and_the_benchmark_goes_on(tiny_data, tmp_path):
    out = tmp_path / "bench"
    result = run_cli("hvdweather-bench", "scaling", "--data", str(tiny_data), "--out", str(out),
                     "--strategies", "horovod", "--workers", "1", "--batch-sizes", "4", "--epochs", "1",
                     "--launcher", "/bin/false", "--no-compute", timeout=280)  # a launcher that always fails
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = {r["run"]: r for r in _read_results(out)}
    assert lines["horovod-w1-b4"]["status"] == "failed"
    assert lines["horovod-w1-b4"]["log"] == str(out / "logs" / "horovod-w1-b4.log")
    assert lines["single-w1-b4"]["status"] == "ok"  # the run after the failure still ran
    report = (out / "scaling.md").read_text()
    assert "## Failed runs" in report and str(out / "logs" / "horovod-w1-b4.log") in report
    assert "FAILED" in result.stdout


def test_no_baseline_leaves_out_its_table_and_two_epochs_need_no_note(results):
    """Issue 25: `scaling --no-baseline` printed a speed-up table of '-' only, and a note about runs of
    fewer than 2 epochs when every run had 2 (one timed epoch after the warm-up). Proven to fail against
    the code before the fix."""
    spec = ScalingSpec(data="/data", out="/bench", epochs=2)
    rows = [r | {"epochs": 2, "timed_epochs": 1} for r in results if r["strategy"] != BASELINE]
    text = markdown_report(add_derived(rows), MACHINE, spec)
    assert "## Speed-up vs the single process" not in text
    assert "Not shown, nothing to compare with: Speed-up vs the single process on all cores: no single-process " \
           "run (--no-baseline)." in text
    assert "## Speed-up vs 1 worker" in text and "Note:" not in text
    one_epoch = markdown_report(add_derived([r | {"epochs": 1} for r in rows]), MACHINE, spec)
    assert "Note: runs of 1 epoch have no epoch after warm-up" in one_epoch


def test_the_report_orders_the_strategies_the_benchmark_runs():
    """The report keeps its own copy of the strategy names (it may not import the run module: issue 23's
    cycle); this holds the copy to the runners."""
    from hvdweather.bench import scaling_report, scaling_spec

    assert tuple(scaling_spec.STRATEGIES) == scaling_report.STRATEGIES
    assert scaling_report.BASELINE in scaling_spec.RUNNERS and scaling_report.BASELINE not in scaling_spec.STRATEGIES
