"""hvdweather-bench: each benchmark prints a measured table and writes JSON lines. The flag defaults are
the spec dataclasses' (hvdweather/bench/*.py). The benchmark modules import TensorFlow (or PyTorch) only
inside their runs, never at import, so importing them here keeps --help fast.

    hvdweather-bench scaling --data DATA --workers 1,2 --batch-sizes 32
    hvdweather-bench pipeline --data DATA
"""
from __future__ import annotations

import click

from hvdweather.bench.collect import collect_array
from hvdweather.bench.eda import EdaBenchSpec, run_eda_bench
from hvdweather.bench.inference import InferenceSpec, parse_counts, run_inference_bench
from hvdweather.bench.knobs import KnobsSpec, run_knobs_bench
from hvdweather.bench.layers import LayersBenchSpec, run_layers_bench
from hvdweather.bench.models import ModelsSpec, run_models_bench
from hvdweather.bench.pipeline import PipelineSpec, run_pipeline_bench
from hvdweather.bench.scaling import ScalingSpec, run_scaling
from hvdweather.bench.spec import spec_from_flags
from hvdweather.cli.options import CONTEXT, field_default, onednn_option
from hvdweather.config import CHOICES
from hvdweather.evaluate.runmodel import CHECKPOINTS
from hvdweather.geometry import WEATHER_CNN_MIN_IMAGE_SIZE


@click.group(context_settings=CONTEXT)
def bench_group() -> None:
    """Benchmarks: each prints a measured table and writes JSON lines."""


@bench_group.command("pipeline")
@click.option("--data", required=True, type=click.Path(), help="Class-folder data set.")
@click.option("--image-size", type=click.IntRange(min=8), default=field_default(PipelineSpec, "image_size"),
              show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for the tf.data pipeline  [default: all cores]")
@click.option("--repeats", type=click.IntRange(min=1), default=field_default(PipelineSpec, "repeats"),
              show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write pipeline.jsonl (one line per row), pipeline.md (the table) and machine.json here.")
@onednn_option()
def bench_pipeline_command(**flags) -> None:
    """tf.data decode+resize throughput vs a sequential PIL loop; epoch 1 vs epoch 2 (cache)."""
    run_pipeline_bench(spec_from_flags(PipelineSpec, **flags))


# Every benchmark: one click option per spec field (the parameter name is the field), then
# spec_from_flags(Spec, **flags), which parses the comma lists and runs the spec's checks.
@bench_group.command("scaling")
@click.option("--data", required=True, help="Class-folder data set every run trains on.")
@click.option("--strategies", default=field_default(ScalingSpec, "strategies"), show_default=True,
              help="Comma-separated subset of horovod, mirrored, torch-ddp (PyTorch DDP reference; needs "
                   "pip install -e .[torch]).")
@click.option("--workers", default=field_default(ScalingSpec, "workers"), show_default=True,
              help="Horovod / torch-ddp processes, mirrored replicas.")
@click.option("--batch-sizes", "per_worker_batch_sizes", default=field_default(ScalingSpec, "per_worker_batch_sizes"),
              show_default=True, help="Per-worker batch sizes (global batch = this x workers).")
@click.option("--epochs", type=int, default=field_default(ScalingSpec, "epochs"), show_default=True,
              help="Per run; epoch 1 (warm-up) is excluded from the timings, so use >= 2.")
@click.option("--out", default=field_default(ScalingSpec, "out"), show_default=True,
              help="results.jsonl, scaling.csv/.md, epoch_time.png, speedup.png, machine.json, logs/, runs/.")
@click.option("--image-size", type=int, default=field_default(ScalingSpec, "image_size"), show_default=True)
@click.option("--threads-per-worker", type=int, default=field_default(ScalingSpec, "threads_per_worker"),
              show_default=True, help="TF threads per worker in every run; 0 = cores // max workers.")
@click.option("--target-accuracy", type=float, default=field_default(ScalingSpec, "target_accuracy"), show_default=True,
              help="Report epochs to reach this val accuracy; 0 = off.")
@click.option("--timeline/--no-timeline", default=field_default(ScalingSpec, "timeline"), show_default=True,
              help="Horovod runs write OUT/timelines/<run>.json (profiling; adds overhead).")
@click.option("--per-run-timeout", "per_run_timeout_s", type=float,
              default=field_default(ScalingSpec, "per_run_timeout_s"), show_default=True,
              help="Seconds before a run is killed and reported as timed out.")
@click.option("--baseline/--no-baseline", default=field_default(ScalingSpec, "baseline"), show_default=True,
              help="Also run the plain single process on all cores.")
@click.option("--seed", type=int, default=field_default(ScalingSpec, "seed"), show_default=True)
@click.option("--launcher", default=field_default(ScalingSpec, "launcher"),
              help="horovodrun to use  [default: the venv's]")
@click.option("--compute/--no-compute",
              default=field_default(ScalingSpec, "compute"), show_default=True,
              help="Measure the CNN's training FLOPs per image and the float32 matmul rate on each run's "
                   "total threads: achieved GFLOP/s and its share of that rate per row.")
@onednn_option(expose=True)
def bench_scaling_command(**flags) -> None:
    """Horovod vs mirrored (vs PyTorch DDP) over workers x batch sizes: each run its own process; tables
    and plots. --onednn goes to every TensorFlow run; ONEDNN_MAX_CPU_ISA (e.g. AVX2) in the environment
    reaches every run, PyTorch's included, and is recorded."""
    run_scaling(spec_from_flags(ScalingSpec, **flags))


@bench_group.command("collect")
@click.argument("array_dir", type=click.Path())
def bench_collect_command(array_dir: str) -> None:
    """Build the scaling tables from a SLURM scaling array's run directories (runs/scaling-JOBID)."""

    collect_array(array_dir)


@bench_group.command("layers")
@onednn_option(expose=True)
@click.option("--repeats", type=click.IntRange(min=1), default=field_default(LayersBenchSpec, "repeats"),
              show_default=True, help="Timed calls per layer (after 2 warm-up calls); the median is reported.")
@click.option("--batch", type=click.IntRange(min=1), default=field_default(LayersBenchSpec, "batch"), show_default=True)
@click.option("--image-size", type=click.IntRange(min=WEATHER_CNN_MIN_IMAGE_SIZE),
              default=field_default(LayersBenchSpec, "image_size"), show_default=True)
@click.option("--torch/--no-torch", "with_torch",
              default=field_default(LayersBenchSpec, "torch"), show_default=True,
              help="Also time PyTorch's layers when it is installed.")
@click.option("--out", type=click.Path(file_okay=False), default=field_default(LayersBenchSpec, "out"),
              show_default=True)
def bench_layers_command(onednn: str, repeats: int, batch: int, image_size: int, with_torch: bool,
                         out: str) -> None:
    """Per-layer forward+backward ms (one thread): TF reference vs package layer form, and PyTorch."""

    run_layers_bench(LayersBenchSpec(out, onednn, batch, repeats, image_size, with_torch))


@bench_group.command("inference")
@click.argument("model", type=click.Path())
@click.option("--checkpoint", type=click.Choice(CHECKPOINTS), default=field_default(InferenceSpec, "checkpoint"),
              show_default=True)
@click.option("--batch-sizes", default=field_default(InferenceSpec, "batch_sizes"), show_default=True,
              help="Comma-separated batch sizes.")
@click.option("--threads", default="1,all", show_default=True,
              help="Comma-separated TensorFlow thread counts, each timed in its own process; all = every core.")
@click.option("--repeats", type=int, default=field_default(InferenceSpec, "repeats"), show_default=True,
              help="Timed calls per batch size (median); single-image latency takes 5x as many.")
@click.option("--out", default=field_default(InferenceSpec, "out"), type=click.Path(file_okay=False),
              help="Write inference.jsonl and inference.md here. [default: print only]")
@onednn_option()
def bench_inference_command(model: str, checkpoint: str, batch_sizes: str, threads: str, repeats: int,
                            out: str) -> None:
    """Images/s per batch size and single-image latency p50/p95: the Keras model (decoded pixels) vs the
    exported SavedModel (encoded JPEG bytes), on one thread and on all cores. MODEL: a run directory."""

    run_inference_bench(InferenceSpec(model, checkpoint, parse_counts(batch_sizes, "--batch-sizes"),
                                      parse_counts(threads, "--threads", allow_all=True), repeats, out))


@bench_group.command("eda")
@click.option("--data", required=True, type=click.Path(), help="Class-folder data set.")
@click.option("--executors", default=field_default(EdaBenchSpec, "executors"), show_default=True,
              help="Comma-separated EDA executors to time; the sequential baseline always runs.")
@click.option("--processes", default=field_default(EdaBenchSpec, "processes"), show_default=True,
              help="Comma-separated process (pool) or rank (mpi) counts; above the core count is allowed and "
                   "marked oversubscribed.")
@click.option("--out", default=field_default(EdaBenchSpec, "out"), show_default=True, type=click.Path(file_okay=False),
              help="results.jsonl, eda_scaling.csv/.md, eda_speedup.png, machine.json, logs/, work/.")
@click.option("--repeats", type=click.IntRange(min=1), default=field_default(EdaBenchSpec, "repeats"),
              show_default=True, help="Runs per row; median.")
@click.option("--image-size", type=click.IntRange(min=8), default=field_default(EdaBenchSpec, "image_size"),
              show_default=True, help="Prepare and training image size.")
@click.option("--kernel-images", type=click.IntRange(min=1), default=field_default(EdaBenchSpec, "kernel_images"),
              show_default=True, help="Images for the kernel vs PIL per-channel histogram comparison.")
@click.option("--train-epochs", type=click.IntRange(min=2), default=field_default(EdaBenchSpec, "train_epochs"),
              show_default=True, help="Epochs of the train-from-shards and train-from-folders runs.")
@click.option("--batch-size", "per_worker_batch_size", type=click.IntRange(min=1),
              default=field_default(EdaBenchSpec, "per_worker_batch_size"),
              show_default=True, help="Per-worker batch of the training runs.")
@click.option("--parts", default=field_default(EdaBenchSpec, "parts"), show_default=True,
              help="Comma-separated subset of scaling (eda + prepare stages), kernel, train.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=field_default(EdaBenchSpec, "timeout_s"),
              show_default=True, help="Seconds before one run is killed (the benchmark then stops).")
@onednn_option()
def bench_eda_command(**flags) -> None:
    """EDA and prepare scaling over executors x processes, histogram kernel vs PIL, train from shards."""
    run_eda_bench(spec_from_flags(EdaBenchSpec, **flags))


@bench_group.command("models")
@click.option("--models", default=field_default(ModelsSpec, "models"), show_default=True,
              help="Comma-separated --model names to measure.")
@click.option("--image-size", type=int, default=field_default(ModelsSpec, "image_size"), show_default=True,
              help="One input size for every model (the weather CNN needs >= "
                   f"{WEATHER_CNN_MIN_IMAGE_SIZE}, ViT a multiple of 16).")
@click.option("--batch-size", "per_worker_batch_size", type=int,
              default=field_default(ModelsSpec, "per_worker_batch_size"), show_default=True,
              help="Images per training step and per forward pass.")
@click.option("--steps", type=int, default=field_default(ModelsSpec, "steps"), show_default=True,
              help="Timed training steps (and forward passes) per model in each repeat, after an untimed one.")
@click.option("--repeats", type=int, default=field_default(ModelsSpec, "repeats"), show_default=True,
              help="Rounds over all models, taken in turn; the table shows medians.")
@click.option("--threads", type=int, default=field_default(ModelsSpec, "threads"), show_default=True,
              help="TensorFlow threads in each model's process; 0 = all cores.")
@click.option("--seed", type=int, default=field_default(ModelsSpec, "seed"), show_default=True)
@click.option("--timeout", "timeout_s", type=float, default=field_default(ModelsSpec, "timeout_s"), show_default=True,
              help="Seconds one model's process (start-up and timed steps) may take before it is killed.")
@click.option("--precision", type=click.Choice(CHOICES["precision"]), default=field_default(ModelsSpec, "precision"),
              show_default=True,
              help="As hvdweather-train's: bfloat16 (Keras's mixed_bfloat16) only on CPUs with AVX512_BF16 or AMX.")
@click.option("--out", default=field_default(ModelsSpec, "out"), type=click.Path(file_okay=False),
              help="Write models.jsonl, models.md, machine.json and logs/ here. [default: print only]")
@onednn_option()
def bench_models_command(**flags) -> None:
    """Every --model at one image size: trainable parameters, training and inference images/s (synthetic
    tensors), each measurement in its own process, the models in turn within each repeat."""
    run_models_bench(spec_from_flags(ModelsSpec, **flags))


@bench_group.command("knobs")
@click.option("--data", required=True, help="Class-folder data set every run trains on (e.g. hvdweather-data synth).")
@click.option("--variants", default=None, help="Comma-separated knob variants to run; each one's reference "
              "(baseline, or horovod-np2 for Horovod's options) runs too.  [default: all but baseline]")
@click.option("--epochs", type=int, default=field_default(KnobsSpec, "epochs"), show_default=True,
              help="Epochs of every run.")
@click.option("--batch-size", "per_worker_batch_size", type=int,
              default=field_default(KnobsSpec, "per_worker_batch_size"), show_default=True,
              help="Per-worker batch of every run (as hvdweather-train --batch-size).")
@click.option("--image-size", type=int, default=field_default(KnobsSpec, "image_size"), show_default=True)
@click.option("--model", type=click.Choice(CHOICES["model"]), default=field_default(KnobsSpec, "model"),
              show_default=True)
@click.option("--repeats", type=int, default=field_default(KnobsSpec, "repeats"), show_default=True,
              help="Times the whole list runs, in turn; the table shows medians.")
@click.option("--seed", type=int, default=field_default(KnobsSpec, "seed"), show_default=True)
@click.option("--per-run-timeout", "per_run_timeout_s", type=float,
              default=field_default(KnobsSpec, "per_run_timeout_s"), show_default=True,
              help="Seconds before a run is killed and reported as timed out.")
@click.option("--out", default=field_default(KnobsSpec, "out"), show_default=True,
              help="knobs.jsonl, knobs.md, machine.json, logs/, runs/.")
@click.option("--launcher", default=field_default(KnobsSpec, "launcher"),
              help="horovodrun to use  [default: the venv's]")
@onednn_option()
def bench_knobs_command(**flags) -> None:
    """What each training knob and Horovod option does to a short run: final val accuracy/loss, test
    accuracy, epochs run, images/s, each against a baseline run of the same benchmark."""
    run_knobs_bench(spec_from_flags(KnobsSpec, **flags))
