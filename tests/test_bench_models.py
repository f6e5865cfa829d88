"""`hvdweather-bench models`: flags checked before any model is built, the round-robin order, the table
built from hand-made lines (medians and ratios recomputed here), model processes that die or hang, and one
small real run of two models."""
from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys

import pytest

from conftest import run_cli
from hvdweather.bench import models as models_bench
from hvdweather.bench.models import ModelsSpec, bench_command, measure_once, round_order
from hvdweather.bench.models_report import format_table, markdown_report, summarize
from hvdweather.bench.spec import spec_from_flags
from hvdweather.cli import bench_group
from hvdweather.config import ConfigError

MACHINE = {"host": "h", "cores": 2, "cpu_model": "Test CPU", "cpu_flags": ["avx2"], "mpi": "Open MPI 4.1.4",
           "versions": {"tensorflow": "2.15.1", "horovod": "0.28.1"}, "date": "today"}
# Two models measured over three repeats (training, inference images/s); a third failed every time.
RATES = {"weather_cnn": [(200.0, 700.0), (150.0, 650.0), (210.0, 800.0)],
         "resnet18": [(16.0, 40.0), (12.0, 44.0), (17.0, 30.0)]}
PARAMS = {"weather_cnn": 108511, "resnet18": 11182155}


def measurement(model: str, repeat: int) -> dict:
    """A models.jsonl line as measure_once writes it."""
    line = {"kind": "measurement", "model": model, "repeat": repeat, "image_size": 256, "status": "ok",
            "error": None}
    if model not in RATES:
        return {**line, "status": "failed", "error": "boom"}
    train, inference = RATES[model][repeat - 1]
    return {**line, "trainable_parameters": PARAMS[model], "build_s": 3.0 + repeat, "warmup_s": 1.5,
            "train_images_per_s": train, "inference_images_per_s": inference, "peak_rss_mb": 500.0 + repeat}


@pytest.fixture
def lines() -> list[dict]:
    found = [measurement(model, repeat) for repeat in (1, 2, 3) for model in ("weather_cnn", "resnet18", "vit_tiny")]
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
    median = {(model, phase): statistics.median(pair[index] for pair in pairs)
              for model, pairs in RATES.items() for index, phase in enumerate(("train", "inference"))}
    cnn, resnet = rows["weather_cnn"], rows["resnet18"]
    assert resnet["train_images_per_s"] == median[("resnet18", "train")]
    assert (resnet["inference_min"], resnet["inference_max"]) == (30.0, 44.0)
    assert resnet["inference_to_train"] == pytest.approx(
        median[("resnet18", "inference")] / median[("resnet18", "train")])
    assert resnet["train_vs_reference"] == pytest.approx(
        median[("resnet18", "train")] / median[("weather_cnn", "train")])
    assert resnet["inference_vs_reference"] == pytest.approx(
        median[("resnet18", "inference")] / median[("weather_cnn", "inference")])
    assert cnn["train_vs_reference"] == 1.0 and cnn["reference"] == "weather_cnn"
    assert resnet["startup_s"] == statistics.median(3.0 + r + 1.5 for r in (1, 2, 3))
    assert resnet["peak_rss_mb"] == 503.0 and resnet["trainable_parameters"] == PARAMS["resnet18"]
    assert rows["vit_tiny"]["status"] == "failed" and rows["vit_tiny"]["train_images_per_s"] is None


def test_reference_is_the_first_measured_model_without_the_cnn(lines):
    rows = summarize([line for line in lines if line.get("model") != "weather_cnn"])
    assert rows[0]["reference"] == "resnet18" and rows[0]["train_vs_reference"] == 1.0


def test_table_shows_the_computed_numbers(lines):
    rows = summarize(lines)
    resnet = next(r for r in rows if r["model"] == "resnet18")
    table = format_table(rows)
    assert "training vs weather_cnn" in table.splitlines()[0]
    row = next(line for line in table.splitlines() if line.startswith("| resnet18 "))
    assert f"{resnet['train_images_per_s']:.1f} ({resnet['train_min']:.1f}-{resnet['train_max']:.1f})" in row
    assert f"| {resnet['inference_to_train']:.2f}x | {resnet['train_vs_reference']:.2f}x |" in row
    assert f"| {PARAMS['resnet18']:,} |" in row and f"| {resnet['startup_s']:.1f} | 503 |" in row
    assert "| vit_tiny | 256 | - | failed | failed |" in table


def test_report_names_machine_command_load_and_failures(lines):
    timed_out = {"kind": "measurement", "model": "resnet18", "repeat": 4, "image_size": 256, "status": "timeout",
                 "error": "slow"}
    partly = lines[:-1] + [timed_out, lines[-1]]
    text = markdown_report(partly, MACHINE)
    assert text.startswith("Machine: h, 2 cores (Test CPU; flags: avx2)")
    assert "Command: `hvdweather-bench models --repeats 3`" in text
    assert "1.00 2.00 3.00 before, 4.00 5.00 6.00 after" in text
    assert "- vit_tiny failed: boom" in text and "- resnet18: 1 of 4 repeats failed" in text


def test_a_failing_or_hanging_model_process_is_a_line_not_an_exception(tmp_path):
    failed = measure_once(ModelsSpec(models=("resnet18",)), "bogus-model", 1, 1, tmp_path)
    assert failed["status"] == "failed" and failed["error"].startswith("exit 2: ")
    hung = measure_once(ModelsSpec(models=("resnet18",), timeout_s=0.5), "resnet18", 1, 1, tmp_path)
    assert hung["status"] == "timeout" and "0.5 s" in hung["error"]  # it was still importing TensorFlow


def test_repeats_take_the_models_in_rotated_turns_and_write_every_line(tmp_path, monkeypatch):
    def fake(spec, model, repeat, threads, logs):
        return {**measurement(model, repeat), "loadavg": "1.00 1.00 1.00", "log": str(logs / f"{model}.log")}

    monkeypatch.setattr(models_bench, "measure_once", fake)
    spec = ModelsSpec(models=("weather_cnn", "resnet18", "vit_tiny"), repeats=3, out=str(tmp_path / "o"))
    models_bench.run_models_bench(spec)
    lines = [json.loads(line) for line in (tmp_path / "o" / "models.jsonl").read_text().splitlines()]
    assert [line["model"] for line in lines[:-1]] == [
        "weather_cnn", "resnet18", "vit_tiny", "resnet18", "vit_tiny", "weather_cnn", "vit_tiny", "weather_cnn",
        "resnet18"]
    assert lines[-1]["command"] == bench_command(spec)
    assert format_table(summarize(lines)) in (tmp_path / "o" / "models.md").read_text()


def test_two_small_models_end_to_end(tmp_path):
    out = tmp_path / "bench"
    done = run_cli("hvdweather-bench", "models", "--models", "resnet18,vit_tiny", "--image-size", "32",
                   "--batch-size", "4", "--steps", "1", "--repeats", "1", "--out", str(out), timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in (out / "models.jsonl").read_text().splitlines()]
    assert [(line["model"], line["status"]) for line in lines[:-1]] == [("resnet18", "ok"), ("vit_tiny", "ok")]
    assert lines[-1]["kind"] == "benchmark"
    params = {line["model"]: line["trainable_parameters"] for line in lines[:-1]}
    assert params["resnet18"] == 11_182_155  # torchvision's resnet18 with 11 classes; independent of size
    assert all(line["train_images_per_s"] > 0 and line["inference_images_per_s"] > 0 for line in lines[:-1])
    report = (out / "models.md").read_text()
    assert report in done.stdout and (out / "machine.json").exists() and (out / "logs" / "vit_tiny-r1.log").exists()
    assert f"| vit_tiny | 32 | {params['vit_tiny']:,} |" in report


def test_bfloat16_is_refused_before_any_model_process_on_a_cpu_without_it(monkeypatch):
    from hvdweather import host

    monkeypatch.setattr(host, "cpu_flags", lambda: ["avx2"])
    with pytest.raises(ConfigError, match="^--precision bfloat16: this CPU has no native bfloat16"):
        spec_from_flags(ModelsSpec, precision="bfloat16")
    monkeypatch.setattr(host, "cpu_flags", lambda: ["avx2", "avx512_bf16"])
    assert "--precision bfloat16" in bench_command(spec_from_flags(ModelsSpec, precision="bfloat16"))
