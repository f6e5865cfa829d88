"""`hvdweather-bench models`: flags checked before any model is built, the round-robin order, the table
built from hand-made lines (medians and ratios recomputed here), workers that die or hang, and one small
real run of two models."""
from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys

import pytest

from conftest import run_cli
from hvdweather.bench.models import ModelsSpec, Worker, WorkerError, bench_command, round_order
from hvdweather.bench.models_report import format_table, markdown_report, summarize
from hvdweather.bench.spec import spec_from_flags
from hvdweather.cli import bench_group
from hvdweather.config import ConfigError

MACHINE = {"host": "h", "cores": 2, "cpu_model": "Test CPU", "cpu_flags": ["avx2"], "mpi": "Open MPI 4.1.4",
           "versions": {"tensorflow": "2.15.1", "horovod": "0.28.1"}, "date": "today"}
# Two models measured over three repeats; a third failed at start-up.
RATES = {("weather_cnn", "train"): [200.0, 150.0, 210.0], ("weather_cnn", "inference"): [700.0, 650.0, 800.0],
         ("resnet18", "train"): [16.0, 12.0, 17.0], ("resnet18", "inference"): [40.0, 44.0, 30.0]}


def model_line(model: str, params: int) -> dict:
    return {"kind": "model", "model": model, "image_size": 256, "per_worker_batch_size": 32, "threads": 2,
            "trainable_parameters": params, "parameters": params + 10, "build_s": 3.0, "warmup_s": 1.5,
            "status": "ok", "error": None}


@pytest.fixture
def lines() -> list[dict]:
    found = [model_line("weather_cnn", 108511), model_line("resnet18", 11182155),
             {"kind": "model", "model": "vit_tiny", "image_size": 256, "status": "failed", "error": "boom"}]
    for repeat in range(3):
        found += [{"kind": "timing", "model": model, "phase": phase, "repeat": repeat + 1, "steps": 3,
                   "images": 96, "seconds": 96 / rates[repeat], "images_per_s": rates[repeat],
                   "peak_rss_mb": 500.0 + repeat} for (model, phase), rates in RATES.items()]
    return found + [{"kind": "benchmark", "command": "hvdweather-bench models --repeats 3", "image_size": 256,
                     "per_worker_batch_size": 32, "steps": 3, "repeats": 3, "threads": 2,
                     "loadavg_before": "1.00 2.00 3.00", "loadavg_after": "4.00 5.00 6.00", "wall_s": 61.0}]


def test_parent_processes_do_not_import_tensorflow():
    code = ("import sys; import hvdweather.bench.models, hvdweather.bench.models_report, hvdweather.bench.knobs, "
            "hvdweather.bench.knobs_report; assert 'tensorflow' not in sys.modules, 'TF imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_round_order_rotates_so_every_model_leads_once():
    models = ["a", "b", "c"]
    orders = [round_order(models, repeat) for repeat in range(3)]
    assert [order[0] for order in orders] == models
    assert all(sorted(order) == models for order in orders)


@pytest.mark.parametrize("flags, message", [
    ({"image_size": 128}, "--image-size 128 is too small for weather_cnn"),
    ({"models": "vit_tiny", "image_size": 100}, "--image-size 100: vit_tiny"),
    ({"models": "resnet18,bogus"}, "--models must be"), ({"steps": 0}, "--steps"), ({"repeats": 0}, "--repeats"),
    ({"threads": -1}, "--threads"), ({"timeout_s": 0}, "--timeout"), ({"per_worker_batch_size": 0}, "--batch-size")])
def test_bad_flags_name_the_flag(flags, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        spec_from_flags(ModelsSpec, **flags)


def test_command_line_reproduces_the_spec(tmp_path):
    spec = spec_from_flags(ModelsSpec, models="resnet18,vit_tiny", image_size=64, per_worker_batch_size=8,
                           steps=2, repeats=4, threads=1, seed=3, out=str(tmp_path / "o"))
    args = shlex.split(bench_command(spec))
    assert args[:2] == ["hvdweather-bench", "models"]
    params = bench_group.commands["models"].make_context("models", args[2:]).params
    assert spec_from_flags(ModelsSpec, **params) == spec


def test_summary_takes_medians_and_ratios_from_the_lines(lines):
    rows = {r["model"]: r for r in summarize(lines)}
    medians = {key: statistics.median(rates) for key, rates in RATES.items()}
    cnn, resnet = rows["weather_cnn"], rows["resnet18"]
    assert resnet["train_images_per_s"] == medians[("resnet18", "train")]
    assert (resnet["inference_min"], resnet["inference_max"]) == (30.0, 44.0)
    assert resnet["inference_to_train"] == pytest.approx(
        medians[("resnet18", "inference")] / medians[("resnet18", "train")])
    assert resnet["train_vs_reference"] == pytest.approx(
        medians[("resnet18", "train")] / medians[("weather_cnn", "train")])
    assert resnet["inference_vs_reference"] == pytest.approx(
        medians[("resnet18", "inference")] / medians[("weather_cnn", "inference")])
    assert cnn["train_vs_reference"] == 1.0 and cnn["reference"] == "weather_cnn"
    assert resnet["peak_rss_mb"] == 502.0 and rows["vit_tiny"]["train_images_per_s"] is None


def test_reference_is_the_first_measured_model_without_the_cnn(lines):
    without_cnn = [line for line in lines if line.get("model") != "weather_cnn"]
    rows = summarize(without_cnn)
    assert rows[0]["reference"] == "resnet18" and rows[0]["train_vs_reference"] == 1.0


def test_table_shows_the_computed_numbers(lines):
    rows = summarize(lines)
    resnet = next(r for r in rows if r["model"] == "resnet18")
    table = format_table(rows).splitlines()
    assert "training vs weather_cnn" in table[0]
    row = next(line for line in table if line.startswith("| resnet18 "))
    assert f"{resnet['train_images_per_s']:.1f} ({resnet['train_min']:.1f}-{resnet['train_max']:.1f})" in row
    assert f"| {resnet['inference_to_train']:.2f}x | {resnet['train_vs_reference']:.2f}x |" in row
    assert "| 11,182,155 |" in row and "| 4.5 |" in row  # start-up: build_s + warmup_s
    assert "| vit_tiny | 256 | - | failed | failed |" in format_table(rows)


def test_report_names_machine_command_and_load(lines):
    text = markdown_report(lines, MACHINE)
    assert text.startswith("Machine: h, 2 cores (Test CPU; flags: avx2)")
    assert "Command: `hvdweather-bench models --repeats 3`" in text
    assert "1.00 2.00 3.00 before, 4.00 5.00 6.00 after" in text
    assert "- vit_tiny failed: boom" in text


def test_worker_that_exits_is_an_error_naming_its_exit(tmp_path):
    worker = Worker("bogus-model", ModelsSpec(timeout_s=60), 1, tmp_path / "w.log")
    with pytest.raises(WorkerError, match="exited with code 2"):
        worker.read_reply()


def test_worker_that_stays_silent_is_killed(tmp_path):
    worker = Worker("resnet18", ModelsSpec(timeout_s=0.3), 1, tmp_path / "w.log")
    with pytest.raises(WorkerError, match="no answer within 0.3 s"):
        worker.read_reply()  # it is still importing TensorFlow
    assert worker.proc.poll() is not None


def test_two_small_models_end_to_end(tmp_path):
    out = tmp_path / "bench"
    done = run_cli("hvdweather-bench", "models", "--models", "resnet18,vit_tiny", "--image-size", "32",
                   "--batch-size", "4", "--steps", "1", "--repeats", "2", "--out", str(out), timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in (out / "models.jsonl").read_text().splitlines()]
    kinds = [line["kind"] for line in lines]
    assert kinds.count("model") == 2 and kinds.count("timing") == 2 * 2 * 2 and kinds[-1] == "benchmark"
    order = [(t["repeat"], t["model"]) for t in lines if t["kind"] == "timing" and t["phase"] == "train"]
    assert order == [(1, "resnet18"), (1, "vit_tiny"), (2, "vit_tiny"), (2, "resnet18")]  # rotated
    params = {line["model"]: line["trainable_parameters"] for line in lines if line["kind"] == "model"}
    assert params["resnet18"] == 11_182_155  # torchvision's resnet18 with 11 classes; independent of size
    report = (out / "models.md").read_text()
    assert report in done.stdout and (out / "machine.json").exists() and (out / "logs" / "vit_tiny.log").exists()
    assert f"| vit_tiny | 32 | {params['vit_tiny']:,} |" in report
