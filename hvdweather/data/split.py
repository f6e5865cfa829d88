"""The stratified, seeded train/val/test split, kept in split.csv so every later stage reuses it."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hvdweather.data.discovery import Catalog, DataError

SUBSETS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Paths and labels of each subset, plus the class names they index."""

    class_names: tuple[str, ...]
    paths: dict[str, tuple[str, ...]]
    labels: dict[str, tuple[int, ...]]

    def size(self, subset: str) -> int:
        return len(self.paths[subset])


def _subset_sizes(n: int, val_frac: float, test_frac: float) -> tuple[int, int]:
    n_val = int(round(n * val_frac)) if val_frac > 0 else 0
    n_test = int(round(n * test_frac)) if test_frac > 0 else 0
    # A requested subset gets at least one image of every class, so reports cover every class.
    return max(n_val, 1 if val_frac > 0 else 0), max(n_test, 1 if test_frac > 0 else 0)


def stratified_split(catalog: Catalog, val_frac: float, test_frac: float, seed: int) -> Split:
    """Split each class separately with a seeded permutation; same inputs, same split."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(catalog.labels)
    assignment = np.empty(len(labels), dtype=object)
    for label, name in enumerate(catalog.class_names):
        members = np.flatnonzero(labels == label)
        n_val, n_test = _subset_sizes(len(members), val_frac, test_frac)
        if len(members) - n_val - n_test < 1:
            need = 1 + (val_frac > 0) + (test_frac > 0)
            raise DataError(f"--data {catalog.root}: class '{name}' has {len(members)} usable image(s), "
                            f"too few for --val-split {val_frac} --test-split {test_frac} (need >= {need})")
        order = rng.permutation(members)
        assignment[order[:n_test]] = "test"
        assignment[order[n_test:n_test + n_val]] = "val"
        assignment[order[n_test + n_val:]] = "train"
    paths = {s: tuple(p for p, a in zip(catalog.paths, assignment) if a == s) for s in SUBSETS}
    labs = {s: tuple(int(v) for v, a in zip(labels, assignment) if a == s) for s in SUBSETS}
    return Split(catalog.class_names, paths, labs)


def write_split(split: Split, path: str | Path) -> None:
    """Write split.csv: one row per image with its subset, label index and class name."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subset", "label", "class_name", "path"])
        for subset in SUBSETS:
            for file, label in zip(split.paths[subset], split.labels[subset]):
                writer.writerow([subset, label, split.class_names[label], file])


def read_split(path: str | Path, class_names: tuple[str, ...]) -> Split:
    """Read a split.csv written by `write_split` (used on --resume and by evaluation)."""
    paths: dict[str, list[str]] = {s: [] for s in SUBSETS}
    labels: dict[str, list[int]] = {s: [] for s in SUBSETS}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["class_name"] not in class_names:
                raise DataError(f"{path}: class '{row['class_name']}' is not in the data set; "
                                "start a new run directory or restore the data")
            paths[row["subset"]].append(row["path"])
            labels[row["subset"]].append(class_names.index(row["class_name"]))
    return Split(class_names, {s: tuple(v) for s, v in paths.items()},
                 {s: tuple(v) for s, v in labels.items()})
