"""A trained run as inference reads it, and the checks predict, evaluate and export make before any work.

No TensorFlow here: the console scripts call these checks before they import the modules that load it,
so a wrong MODEL, RUN_DIR, IMAGES, --top-k or --out is a one-line error in about a second, not after
TensorFlow's start-up (3-9 s).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hvdweather.data.images import IMAGE_EXTENSIONS, is_image_name, visible_below
from hvdweather.errors import ConfigError, DataError, check_output_dir
from hvdweather.runfiles import read_json

__all__ = ["CHECKPOINTS", "RunModel", "check_out_file", "check_run_dir", "check_top_k", "find_images",
           "resolve_model"]

CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class RunModel:
    """A checkpoint and the facts from its run's config.json that inference needs."""

    checkpoint: Path
    class_names: tuple[str, ...]
    image_size: int
    per_worker_batch_size: int  # the run's batch: evaluation reuses it, so it batches as training did


def resolve_model(model: str | Path, checkpoint: str = "best", label: str = "MODEL") -> RunModel:
    """The checkpoint file and config facts of a run directory or of a .keras file inside one."""
    path = Path(model)
    if not path.exists():
        raise DataError(f"{label} {path}: not found; pass a run directory written by hvdweather-train "
                        "(config.json + best.keras) or one of its .keras files")
    run_dir, keras_file = (path, path / f"{checkpoint}.keras") if path.is_dir() else (path.parent, path)
    if not keras_file.is_file():
        raise DataError(f"{label} {path}: no {keras_file.name} in it; pass a run directory written by "
                        "hvdweather-train, or --checkpoint last if only last.keras exists")
    record = read_json(run_dir / "config.json")
    needed = ("image_size", "per_worker_batch_size")
    if not record or "class_names" not in record or any(k not in record.get("config", {}) for k in needed):
        raise DataError(f"{label} {path}: {run_dir / 'config.json'} is missing or has no class_names, "
                        "image_size or per_worker_batch_size; keep the run's config.json (written by "
                        "hvdweather-train 0.1) next to its .keras files")
    cfg = record["config"]
    return RunModel(keras_file, tuple(record["class_names"]), int(cfg["image_size"]),
                    int(cfg["per_worker_batch_size"]))


def find_images(inputs: list[str] | tuple[str, ...], label: str = "IMAGES") -> list[str]:
    """Files as given, and every image below each folder (sorted), in argument order, without repeats."""
    if not inputs:
        raise DataError(f"{label}: give at least one image file or folder")
    found: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found.append(str(path))
        elif path.is_dir():
            images = sorted(os.path.join(d, f) for d, dirs, files in os.walk(path)
                            for f in files if is_image_name(f) and visible_below(path, d))
            if not images:
                raise DataError(f"{label} {path}: no images found in it or below it "
                                f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
            found.extend(images)
        else:
            raise DataError(f"{label} {path}: not found; pass image files or folders of images")
    return list(dict.fromkeys(found))


def check_top_k(top_k: int, class_names: tuple[str, ...]) -> None:
    if not 1 <= top_k <= len(class_names):
        raise ConfigError(f"--top-k {top_k}: the model knows {len(class_names)} classes; "
                          f"pass 1 to {len(class_names)}")


def check_out_file(out: str | Path, flag: str = "--out") -> Path:
    """The output file's folder exists (or is made) and is writable, before any long work."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{flag} {out}: is a directory; pass a file name such as {out / 'predictions.csv'}")
    check_output_dir(out.parent if str(out.parent) else Path("."), flag)
    return out


def check_run_dir(run_dir: str | Path, checkpoint: str = "best") -> RunModel:
    """evaluate's and export's RUN_DIR: a run directory with the checkpoint asked for."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise DataError(f"RUN_DIR {path}: not a directory; pass the run directory hvdweather-train wrote")
    return resolve_model(path, checkpoint, "RUN_DIR")
