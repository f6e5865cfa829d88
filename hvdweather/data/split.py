"""The stratified, seeded train/val/test split, kept in split.csv so every later stage reuses it."""
from __future__ import annotations

import csv
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hvdweather.data.discovery import Catalog, DataError
from hvdweather.runfiles import rebase

SUBSETS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Paths and labels of each subset, plus the class names they index."""

    class_names: tuple[str, ...]
    paths: dict[str, tuple[str, ...]]
    labels: dict[str, tuple[int, ...]]

    def size(self, subset: str) -> int:
        return len(self.paths[subset])


def subset_sizes(n: int, val_frac: float, test_frac: float) -> tuple[int, int]:
    n_val = int(round(n * val_frac)) if val_frac > 0 else 0
    n_test = int(round(n * test_frac)) if test_frac > 0 else 0
    # A requested subset gets at least one image of every class, so reports cover every class.
    return max(n_val, 1 if val_frac > 0 else 0), max(n_test, 1 if test_frac > 0 else 0)


def stratified_split(catalog: Catalog, val_frac: float, test_frac: float, seed: int,
                     groups: Sequence[Sequence[str]] = ()) -> Split:
    """Split each class separately with a seeded permutation; same inputs, same split.

    `groups` (duplicate files, see `hvdweather.data.fingerprint`) stay together: each is one unit of
    the permutation and lands whole in one subset, so no copy of a test image is trained on. A group
    whose files lie in different classes (a labelling error) goes to train, never val or test. With
    no groups every unit is one file, and the split is the one this function made before groups.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(catalog.labels)
    assignment = np.empty(len(labels), dtype=object)
    units, conflicts = _units(catalog, groups)
    assignment[conflicts] = "train"
    for label, name in enumerate(catalog.class_names):
        n_class = int((labels == label).sum())
        n_val, n_test = subset_sizes(n_class, val_frac, test_frac)
        if n_class - n_val - n_test < 1:
            need = 1 + (val_frac > 0) + (test_frac > 0)
            raise DataError(f"--data {catalog.root}: class '{name}' has {n_class} usable image(s), "
                            f"too few for --val-split {val_frac} --test-split {test_frac} (need >= {need})")
        mine = units[label]
        taken = {"test": 0, "val": 0}
        for index in rng.permutation(len(mine)):
            # Whole units in permuted order: test first, then val, to their image counts.
            subset = ("test" if taken["test"] < n_test else "val" if taken["val"] < n_val else "train")
            assignment[mine[index]] = subset
            if subset != "train":
                taken[subset] += len(mine[index])
    paths = {s: tuple(p for p, a in zip(catalog.paths, assignment) if a == s) for s in SUBSETS}
    labs = {s: tuple(int(v) for v, a in zip(labels, assignment) if a == s) for s in SUBSETS}
    return Split(catalog.class_names, paths, labs)


def _units(catalog: Catalog, groups: Sequence[Sequence[str]]) -> tuple[list[list[list[int]]], list[int]]:
    """Per class, the units to permute (lists of catalog indices, in catalog order of their first
    file), and the indices of groups that span classes. Files outside the catalog are ignored."""
    position = {path: i for i, path in enumerate(catalog.paths)}
    group_of: dict[int, int] = {}
    members: list[list[int]] = []
    conflicts: list[int] = []
    for group in groups:
        indices = sorted(position[p] for p in group if p in position)
        if len(indices) < 2:
            continue
        if len({catalog.labels[i] for i in indices}) > 1:
            conflicts.extend(indices)
            continue
        for i in indices:
            group_of[i] = len(members)
        members.append(indices)
    units: list[list[list[int]]] = [[] for _ in catalog.class_names]
    conflicted = set(conflicts)
    for i, label in enumerate(catalog.labels):
        if i in conflicted:
            continue
        if i not in group_of:
            units[label].append([i])
        elif members[group_of[i]][0] == i:
            units[label].append(members[group_of[i]])
    return units, conflicts


def write_split(split: Split, path: str | Path) -> None:
    """Write split.csv: one row per image with its subset, label index and class name."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subset", "label", "class_name", "path"])
        for subset in SUBSETS:
            for file, label in zip(split.paths[subset], split.labels[subset]):
                writer.writerow([subset, label, split.class_names[label], file])


def read_split(path: str | Path, class_names: tuple[str, ...], recorded_root: str = "", root: str = "") -> Split:
    """Read a split.csv written by `write_split` (used on --resume and by evaluation). Its paths lie under
    `recorded_root` (config.json's split_root); with `root`, they are read under it instead (the data set
    moved, or an old run's paths were relative to the folder training started in)."""
    paths: dict[str, list[str]] = {s: [] for s in SUBSETS}
    labels: dict[str, list[int]] = {s: [] for s in SUBSETS}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["class_name"] not in class_names:
                raise DataError(f"{path}: class '{row['class_name']}' is not in the data set; "
                                "start a new run directory or restore the data")
            paths[row["subset"]].append(row["path"])
            labels[row["subset"]].append(class_names.index(row["class_name"]))
    return Split(class_names, {s: rebase(v, recorded_root, root) for s, v in paths.items()},
                 {s: tuple(v) for s, v in labels.items()})


DUPLICATES_HEADER = ["group", "kind", "class_name", "subset", "path"]


def duplicate_rows(split: Split, groups: Sequence[Sequence[str]], exact: Collection[Sequence[str]]) -> list[list]:
    """duplicates.csv's rows: every file of every group with its class and subset. kind: exact
    (byte-identical), near (joined by a perceptual hash) or conflict (one group, several classes:
    a labelling error, trained on and never tested on)."""
    where = {path: (subset, split.class_names[label]) for subset in SUBSETS
             for path, label in zip(split.paths[subset], split.labels[subset])}
    rows = []
    for number, group in enumerate(groups, start=1):
        members = [path for path in group if path in where]
        classes = {where[path][1] for path in members}
        kind = "conflict" if len(classes) > 1 else "exact" if tuple(group) in exact else "near"
        rows.extend([number, kind, where[path][1], where[path][0], path] for path in members)
    return rows
