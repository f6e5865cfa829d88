"""`hvdweather-bench knobs`: the variant registry (every variant's flags reach hvdweather-train as the
config it names), references planned first, flags checked before any run, the table built from
hand-made lines (differences and ratios recomputed here), and one small real run of two variants."""
from __future__ import annotations

import json
import shlex
import statistics
from pathlib import Path

import pytest

from conftest import run_cli
from hvdweather.bench.knobs import (
    BASELINE,
    HOROVOD_BASELINE,
    VARIANTS,
    KnobsSpec,
    bench_command,
    build_command,
    plan_variants,
    variant_flags,
)
from hvdweather.bench.knobs_report import format_table, markdown_report, summarize
from hvdweather.bench.spec import spec_from_flags
from hvdweather.cli import bench_group, train_command, train_config
from hvdweather.config import ConfigError

MACHINE = {"host": "h", "cores": 2, "cpu_model": "Test CPU", "cpu_flags": [], "mpi": "Open MPI 4.1.4",
           "versions": {"tensorflow": "2.15.1", "horovod": "0.28.1"}, "date": "today"}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_flags_give_the_config_they_name(name):
    args = ["--data", "d", *variant_flags(VARIANTS[name])]
    cfg = train_config(None, train_command.make_context("hvdweather-train", args).params)
    for field, value in VARIANTS[name].changes:
        assert getattr(cfg, field) == value


def test_references_run_first_and_once():
    assert plan_variants(("fp16-allreduce", "adam", "adasum")) == [
        BASELINE, HOROVOD_BASELINE, "fp16-allreduce", "adam", "adasum"]
    assert plan_variants((BASELINE,)) == [BASELINE]


def test_horovod_options_run_under_horovodrun_against_the_two_rank_run(tiny_data, tmp_path):
    spec = KnobsSpec(data=str(tiny_data), out=str(tmp_path))
    command = build_command(spec, "backward-passes-2", tmp_path / "run")
    assert Path(command[0]).name == "horovodrun" and command[1:3] == ["-np", "2"]
    assert command[-2:] == ["--backward-passes-per-step", "2"] and "--overwrite" in command
    assert VARIANTS["backward-passes-2"].reference == HOROVOD_BASELINE
    assert Path(build_command(spec, "adam", tmp_path / "run")[0]).name == "hvdweather-train"


@pytest.mark.parametrize("flags, message", [
    ({"variants": "adam,bogus"}, "--variants must be"), ({"epochs": 0}, "--epochs"),
    ({"image_size": 100}, "--image-size 100 is too small for weather_cnn"), ({"repeats": 0}, "--repeats"),
    ({"per_run_timeout_s": 0}, "--per-run-timeout"), ({"model": "bogus"}, "--model must be")])
def test_bad_flags_name_the_flag(tiny_data, tmp_path, flags, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        spec_from_flags(KnobsSpec, data=str(tiny_data), out=str(tmp_path), **flags)


def test_command_line_reproduces_the_spec(tiny_data, tmp_path):
    spec = spec_from_flags(KnobsSpec, data=str(tiny_data), variants="adam,adasum", epochs=2,
                           per_worker_batch_size=8, image_size=64, model="resnet18", repeats=2, seed=1,
                           out=str(tmp_path / "o"))
    args = shlex.split(bench_command(spec))
    params = bench_group.commands["knobs"].make_context("knobs", args[2:]).params
    assert args[:2] == ["hvdweather-bench", "knobs"] and spec_from_flags(KnobsSpec, **params) == spec


def run_line(variant: str, repeat: int, images_per_s: float, val_accuracy: float, status: str = "ok") -> dict:
    knob = VARIANTS[variant]
    line = {"kind": "run", "run": f"{variant}-r{repeat}", "variant": variant, "repeat": repeat,
            "reference": knob.reference, "flags": shlex.join(variant_flags(knob)), "processes": knob.processes,
            "status": status, "error": None if status == "ok" else "boom"}
    if status == "ok":
        line.update(epochs_run=4 - (variant == "early-stopping"), final_val_accuracy=val_accuracy,
                    final_val_loss=1.0 - val_accuracy / 2, test_accuracy=val_accuracy - 0.05,
                    images_per_s=images_per_s, wall_s=30.0 + repeat, val_images=66, test_images=66)
    return line


@pytest.fixture
def lines() -> list[dict]:
    found = []
    for repeat, (base, adam, hvd, fp16) in enumerate(((100, 90, 180, 170), (120, 80, 190, 200)), 1):
        found += [run_line(BASELINE, repeat, base, 0.60), run_line("adam", repeat, adam, 0.70),
                  run_line("early-stopping", repeat, 95, 0.55), run_line(HOROVOD_BASELINE, repeat, hvd, 0.50),
                  run_line("fp16-allreduce", repeat, fp16, 0.52), run_line("adasum", repeat, 0, 0, "failed")]
    return found + [{"kind": "benchmark", "command": "hvdweather-bench knobs --data d", "epochs": 4,
                     "per_worker_batch_size": 32, "image_size": 256, "model": "weather_cnn", "repeats": 2,
                     "seed": 42, "loadavg_before": "1.00 1.00 1.00", "loadavg_after": "2.00 2.00 2.00",
                     "wall_s": 300.0}]


def test_summary_compares_each_variant_with_its_reference(lines):
    rows = {r["variant"]: r for r in summarize(lines)}
    runs = [line for line in lines if line["kind"] == "run" and line["status"] == "ok"]

    def median(variant: str, key: str) -> float:
        return statistics.median(line[key] for line in runs if line["variant"] == variant)

    adam, fp16, stopped = rows["adam"], rows["fp16-allreduce"], rows["early-stopping"]
    assert adam["images_per_s"] == median("adam", "images_per_s")
    assert adam["images_per_s_ratio"] == pytest.approx(median("adam", "images_per_s") /
                                                       median(BASELINE, "images_per_s"))
    assert adam["final_val_accuracy_diff"] == pytest.approx(median("adam", "final_val_accuracy") -
                                                            median(BASELINE, "final_val_accuracy"))
    assert adam["test_accuracy_diff"] == pytest.approx(median("adam", "test_accuracy") -
                                                       median(BASELINE, "test_accuracy"))
    assert fp16["images_per_s_ratio"] == pytest.approx(median("fp16-allreduce", "images_per_s") /
                                                       median(HOROVOD_BASELINE, "images_per_s"))
    assert stopped["epochs_run_diff"] == median("early-stopping", "epochs_run") - median(BASELINE, "epochs_run")
    assert rows["adasum"]["status"] == "failed" and rows["adasum"]["images_per_s_ratio"] is None
    assert rows[BASELINE]["images_per_s_ratio"] == 1.0 and adam["ok_repeats"] == 2


def test_table_shows_the_computed_numbers(lines):
    rows = summarize(lines)
    adam = next(r for r in rows if r["variant"] == "adam")
    table = format_table(rows)
    row = next(line for line in table.splitlines() if line.startswith("| adam "))
    assert "`--optimizer adam --lr 0.001`" in row
    assert f"{adam['final_val_accuracy']:.3f} ({adam['final_val_accuracy_diff']:+.3f})" in row
    assert f"{adam['images_per_s']:.1f} ({adam['images_per_s_ratio']:.2f}x)" in row
    assert "| adasum | `--adasum` | 2 | horovod-np2 | failed |" in table


def test_report_names_machine_command_load_and_failures(lines):
    text = markdown_report(lines, MACHINE)
    assert text.startswith("Machine: h, 2 cores")
    assert "Command: `hvdweather-bench knobs --data d`" in text
    assert "1.00 1.00 1.00 before, 2.00 2.00 2.00 after" in text
    assert "66 validation images (one image = 0.015 accuracy)" in text and "- adasum failed: boom" in text


def test_two_variants_end_to_end(tiny_data, tmp_path):
    out = tmp_path / "knobs"
    done = run_cli("hvdweather-bench", "knobs", "--data", str(tiny_data), "--variants", "label-smoothing",
                   "--epochs", "1", "--image-size", "253", "--batch-size", "4", "--out", str(out), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in (out / "knobs.jsonl").read_text().splitlines()]
    runs = {line["variant"]: line for line in lines if line["kind"] == "run"}
    assert list(runs) == [BASELINE, "label-smoothing"] and lines[-1]["kind"] == "benchmark"
    assert all(r["status"] == "ok" and r["epochs_run"] == 1 for r in runs.values()), runs
    assert (out / "runs" / "label-smoothing-r1" / "config.json").exists() and (out / "machine.json").exists()
    smoothing = next(r for r in summarize(lines) if r["variant"] == "label-smoothing")
    assert smoothing["final_val_loss_diff"] == pytest.approx(
        runs["label-smoothing"]["final_val_loss"] - runs[BASELINE]["final_val_loss"])
    report = (out / "knobs.md").read_text()
    assert report in done.stdout and "| label-smoothing | `--label-smoothing 0.1` | 1 | baseline | 1 (+0) |" in report
