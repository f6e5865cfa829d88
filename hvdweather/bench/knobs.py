"""Knobs benchmark, running part: what each training knob (and Horovod option) does to a short run on the
same data, against a baseline run measured in the same benchmark. The table is built by
hvdweather.bench.knobs_report.

    hvdweather-data synth bench/data --images-per-class 40 --seed 0
    hvdweather-bench knobs --data bench/data --epochs 4 --out bench/knobs
    hvdweather-bench knobs --data bench/data --variants adam,lr-cosine --epochs 1 --out /tmp/knobs

A variant is a set of TrainConfig fields changed from hvdweather-train's defaults, and how many processes
run it. Every run is a whole `hvdweather-train` (or `horovodrun -np 2 hvdweather-train`) process tree,
launched as `hvdweather-bench scaling` launches its runs, into its own run directory with --overwrite.
Horovod's options are compared with a plain 2-rank Horovod run, not with the one-process baseline: the
2 ranks change the global batch and the learning rate by themselves. A variant's reference is always run
too. With --repeats N the whole list runs N times in turn, so the load of a shared machine falls on every
variant alike; the table shows medians (training is deterministic for a given seed and world, so only
images/s and wall time vary between repeats).

Written to --out: knobs.jsonl (one line per run, and one for the benchmark), knobs.md (the table, also
printed), machine.json, logs/<run>.log and runs/<run>/ (each run's own run directory).
"""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvdweather.bench.machine import machine_info, write_machine
from hvdweather.bench.spec import check_train_flags, list_field
from hvdweather.config import flag_name
from hvdweather.errors import ConfigError, check_output_dir
from hvdweather.host import load_average
from hvdweather.launch import executable, last_log_line, launch
from hvdweather.runfiles import median_after_first, read_json, read_jsonl

BASELINE = "baseline"  # hvdweather-train's defaults, one process
HOROVOD_BASELINE = "horovod-np2"  # the same under horovodrun -np 2: the Horovod options' reference


@dataclass(frozen=True)
class Variant:
    """One knob setting: the TrainConfig fields it changes, its process count, and what it is compared with."""

    changes: tuple[tuple[str, Any], ...]  # (field, value) pairs applied on top of the defaults
    processes: int = 1  # 1: plain hvdweather-train; N: horovodrun -np N hvdweather-train
    reference: str = BASELINE  # the variant whose run its differences and ratios are taken against


def _horovod(*changes: tuple[str, Any]) -> Variant:
    return Variant(changes, processes=2, reference=HOROVOD_BASELINE)


# Adam-family optimizers at SGD's default LR of 0.01 diverge on this CNN; 0.001 is their usual LR, and
# the flags column shows it. Adding a variant is one entry here (its name is then accepted by --variants).
VARIANTS: dict[str, Variant] = {
    BASELINE: Variant(()),
    "augment-standard": Variant((("augment", "standard"),)),
    "lr-cosine": Variant((("lr_schedule", "cosine"),)),
    "adam": Variant((("optimizer", "adam"), ("lr", 0.001))),
    "adamw": Variant((("optimizer", "adamw"), ("lr", 0.001), ("weight_decay", 0.004))),
    "rmsprop": Variant((("optimizer", "rmsprop"), ("lr", 0.001))),
    "weight-decay": Variant((("weight_decay", 0.0005),)),
    "label-smoothing": Variant((("label_smoothing", 0.1),)),
    "class-weights": Variant((("class_weights", "balanced"),)),
    "normalize-dataset": Variant((("normalize", "dataset"),)),
    "normalize-imagenet": Variant((("normalize", "imagenet"),)),
    "early-stopping": Variant((("early_stopping", 1),)),
    HOROVOD_BASELINE: Variant((), processes=2),
    "fp16-allreduce": _horovod(("fp16_allreduce", True)),
    "backward-passes-2": _horovod(("backward_passes_per_step", 2)),
    "adasum": _horovod(("adasum", True)),
}


def variant_flags(variant: Variant) -> list[str]:
    """hvdweather-train flags of a variant's changes: --optimizer adam, --fp16-allreduce, ..."""
    flags: list[str] = []
    for field, value in variant.changes:
        if isinstance(value, bool):
            flags.append(flag_name(field) if value else "--no-" + flag_name(field)[2:])
        else:
            flags += [flag_name(field), str(value)]
    return flags


@dataclass(frozen=True)
class KnobsSpec:
    """What `hvdweather-bench knobs` runs; one field per flag."""

    data: str  # class-folder data set every run trains on
    variants: tuple[str, ...] = list_field(tuple(v for v in VARIANTS if v != BASELINE), "--variants",
                                           tuple(VARIANTS))
    out: str = "bench/knobs"  # knobs.jsonl, knobs.md, machine.json, logs/, runs/
    epochs: int = 4  # per run: short, so the table says what a knob does early in training
    per_worker_batch_size: int = 32  # flag --batch-size, in every run (Horovod runs: per rank)
    image_size: int = 256
    model: str = "weather_cnn"
    repeats: int = 1  # times the whole list runs, in turn; medians reported
    seed: int = 42  # same split, initial weights and data order in every run
    per_run_timeout_s: float = 900.0  # a run still going after this is killed and reported
    launcher: str = ""  # horovodrun to use ("" = the one next to this Python)

    def check(self) -> None:
        """Every check that can fail in seconds, so a bad flag never costs a run."""
        from hvdweather.data.discovery import discover

        for name in plan_variants(self.variants):  # each variant's config passes training's own checks
            check_train_flags(self.per_worker_batch_size, epochs=self.epochs, image_size=self.image_size,
                              model=self.model, seed=self.seed, **dict(VARIANTS[name].changes))
        if self.repeats < 1:
            raise ConfigError(f"--repeats must be a positive integer, got {self.repeats}")
        if not self.per_run_timeout_s > 0:
            raise ConfigError(f"--per-run-timeout must be > 0 seconds, got {self.per_run_timeout_s}")
        discover(self.data)  # DataError names --data
        executable("hvdweather-train")
        if any(VARIANTS[name].processes > 1 for name in plan_variants(self.variants)):
            executable("horovodrun", self.launcher, "--launcher")
        check_output_dir(self.out, subdirs=("logs", "runs"))


def plan_variants(requested: tuple[str, ...]) -> list[str]:
    """The variants to run: each requested one after its reference (and that one's), each once."""
    planned: list[str] = []

    def add(name: str) -> None:
        reference = VARIANTS[name].reference
        if reference != name:
            add(reference)
        if name not in planned:
            planned.append(name)

    for name in requested:
        add(name)
    return planned


def run_name(variant: str, repeat: int) -> str:
    return f"{variant}-r{repeat}"


def build_command(spec: KnobsSpec, variant: str, run_dir: Path) -> list[str]:
    """The exact command line of one run (it goes into its log and its results line)."""
    knob = VARIANTS[variant]
    command = [executable("hvdweather-train"), "--data", spec.data, "--out", str(run_dir), "--overwrite",
               "--epochs", str(spec.epochs), "--batch-size", str(spec.per_worker_batch_size),
               "--image-size", str(spec.image_size), "--model", spec.model, "--seed", str(spec.seed),
               "--verbose", "2", *variant_flags(knob)]
    if knob.processes > 1:
        return [executable("horovodrun", spec.launcher, "--launcher"), "-np", str(knob.processes), *command]
    return command


def bench_command(spec: KnobsSpec) -> str:
    """The command line that reproduces this benchmark, every setting spelled out (it heads the table)."""
    return shlex.join(["hvdweather-bench", "knobs", "--data", spec.data, "--variants", ",".join(spec.variants),
                       "--epochs", str(spec.epochs), "--batch-size", str(spec.per_worker_batch_size),
                       "--image-size", str(spec.image_size), "--model", spec.model, "--repeats", str(spec.repeats),
                       "--seed", str(spec.seed), "--out", spec.out])


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """What the table needs from a finished run: epochs run, the last epoch's validation numbers, the
    test accuracy of the best checkpoint (the run's report), and images/s (median of epochs 2 on: epoch 1
    holds the cache fill)."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    if not rows:
        return {"error": "metrics.jsonl has no epoch line"}
    best = (read_json(run_dir / "report" / "test_metrics.json") or {}).get("best", {})
    sizes = (read_json(run_dir / "config.json") or {}).get("subset_sizes", {})
    return {"epochs_run": len(rows), "final_val_accuracy": rows[-1].get("val_accuracy"),
            "final_val_loss": rows[-1].get("val_loss"), "test_accuracy": best.get("test_accuracy"),
            "images_per_s": median_after_first(rows),
            "global_batch_size": rows[-1].get("global_batch_size"), "world_size": rows[-1].get("world_size"),
            "val_images": sizes.get("val"), "test_images": sizes.get("test")}


def execute_run(spec: KnobsSpec, variant: str, repeat: int) -> dict[str, Any]:
    """Run one variant once and return its results line; failures are recorded, never raised."""
    name = run_name(variant, repeat)
    run_dir, log = Path(spec.out, "runs", name), Path(spec.out, "logs", f"{name}.log")
    knob = VARIANTS[variant]
    command = build_command(spec, variant, run_dir)
    code, wall_s = launch(command, log, spec.per_run_timeout_s)
    line = {"kind": "run", "run": name, "variant": variant, "repeat": repeat, "reference": knob.reference,
            "flags": shlex.join(variant_flags(knob)), "processes": knob.processes, "command": shlex.join(command),
            "returncode": code, "wall_s": round(wall_s, 2), "run_dir": str(run_dir), "log": str(log),
            "loadavg": load_average()}
    if code != 0:
        error = f"timed out after {spec.per_run_timeout_s:g} s" if code is None else last_log_line(log)
        return {**line, "status": "timeout" if code is None else "failed", "error": error}
    summary = summarize_run(run_dir)
    return {**line, **summary, "status": "failed" if "error" in summary else "ok", "error": summary.get("error")}


def run_knobs_bench(spec: KnobsSpec) -> list[dict[str, Any]]:
    """Run every variant (with its references) --repeats times in turn; write the lines and the table."""
    from hvdweather.bench.knobs_report import markdown_report

    spec.check()
    machine = machine_info()
    out = Path(spec.out)
    write_machine(out, machine)
    variants = plan_variants(spec.variants)
    results_file = out / "knobs.jsonl"
    results_file.write_text("")
    load_before, start = load_average(), time.perf_counter()
    lines = []
    for repeat in range(1, spec.repeats + 1):
        for index, variant in enumerate(variants, 1):
            print(f"[{repeat}/{spec.repeats}: {index}/{len(variants)}] {variant}: "
                  f"{shlex.join(build_command(spec, variant, out / 'runs' / run_name(variant, repeat)))}", flush=True)
            lines.append(execute_run(spec, variant, repeat))
            with results_file.open("a") as handle:  # appended per run: a killed benchmark keeps what it has
                handle.write(json.dumps(lines[-1]) + "\n")
            print(f"    {_progress(lines[-1])}", flush=True)
    lines.append({"kind": "benchmark", "command": bench_command(spec), "epochs": spec.epochs,
                  "per_worker_batch_size": spec.per_worker_batch_size, "image_size": spec.image_size,
                  "model": spec.model, "repeats": spec.repeats, "seed": spec.seed, "data": spec.data,
                  "loadavg_before": load_before,
                  "loadavg_after": load_average(), "wall_s": round(time.perf_counter() - start, 1)})
    with results_file.open("a") as handle:
        handle.write(json.dumps(lines[-1]) + "\n")
    report = markdown_report(lines, machine)
    (out / "knobs.md").write_text(report)
    print(report, flush=True)
    print(f"wrote knobs.jsonl, knobs.md, machine.json, logs/ and runs/ in {out}")
    return lines


def _progress(line: dict[str, Any]) -> str:
    if line["status"] != "ok":
        return f"{line['status'].upper()}: {line['error']} (log: {line['log']})"
    def fixed(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    return (f"ok: {line['epochs_run']} epochs, val accuracy {fixed(line['final_val_accuracy'])}, test accuracy "
            f"{fixed(line['test_accuracy'])}, {line['images_per_s']:.1f} images/s, wall {line['wall_s']:.0f} s")
