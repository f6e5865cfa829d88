"""How TrainConfig's fields meet the command line: their flags, the values choice fields accept, and the
groups of fields some rules name (Horovod-only, what --resume may change). Tables only, TensorFlow-free:
the config's checks, its file loading and the CLI's option lists read them."""
from __future__ import annotations

from hvdweather.geometry import MODEL_GEOMETRY

# Fields whose flag is not the field name with dashes. Config files accept either spelling.
_FLAGS = {"per_worker_batch_size": "batch-size"}
FIELD_OF_FLAG = {flag.replace("-", "_"): name for name, flag in _FLAGS.items()}
# Choice fields and what they accept (the CLI's click.Choice lists read these too).
CHOICES: dict[str, tuple[str, ...]] = {
    "strategy": ("horovod", "mirrored"), "optimizer": ("sgd", "adam", "adamw", "rmsprop"),
    "augment": ("none", "flip", "flip_crop", "standard"), "normalize": ("none", "imagenet", "dataset"),
    "lr_schedule": ("constant", "step", "cosine"), "class_weights": ("none", "balanced"),
    "model": tuple(MODEL_GEOMETRY), "precision": ("auto", "float32", "bfloat16")}
AUGMENT_OF_BOOL = {True: "standard", False: "none"}
HOROVOD_ONLY = ("fp16_allreduce", "adasum", "autotune", "autotune_log", "backward_passes_per_step", "elastic")
# What --resume may change, in the order help, errors and the README name them: nothing here changes
# what the run computes. LAUNCH_FIELDS describe the launch itself, not the run.
RESUMABLE_FIELDS = ("epochs", "verbose", "threads_per_worker", "cache_dir", "horovod_timeline", "tensorboard")
LAUNCH_FIELDS = ("resume", "out", "overwrite")
RESUMABLE = frozenset(RESUMABLE_FIELDS + LAUNCH_FIELDS)


def flag_name(field: str) -> str:
    """The command-line flag of a config field, with its dashes: per_worker_batch_size -> --batch-size."""
    return "--" + _FLAGS.get(field, field.replace("_", "-"))


def resumable_flags() -> str:
    """The flags --resume may change, as one phrase ("--epochs, ... and --tensorboard") for help and errors."""
    flags = [flag_name(name) for name in RESUMABLE_FIELDS]
    return ", ".join(flags[:-1]) + " and " + flags[-1]
