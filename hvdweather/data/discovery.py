"""Find the images of a class-folder data set (WEAPD / ImageFolder layout) and check they decode."""
from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hvdweather.data.decode import check_image
from hvdweather.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "Catalog", "DataError", "discover", "find_unreadable"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})


@dataclass(frozen=True)
class Catalog:
    """Every candidate image of a data set: parallel lists of paths and integer labels."""

    root: str
    class_names: tuple[str, ...]
    paths: tuple[str, ...]
    labels: tuple[int, ...]

    def counts(self) -> dict[str, int]:
        result = {name: 0 for name in self.class_names}
        for label in self.labels:
            result[self.class_names[label]] += 1
        return result

    def without(self, drop: set[str]) -> Catalog:
        keep = [i for i, p in enumerate(self.paths) if p not in drop]
        return Catalog(self.root, self.class_names, tuple(self.paths[i] for i in keep),
                       tuple(self.labels[i] for i in keep))


def _is_visible(name: str) -> bool:
    return not name.startswith((".", "_"))


def discover(root: str | Path) -> Catalog:
    """List class folders (sorted) and their image files; hidden and non-image files are ignored."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"--data {root}: directory not found; point it at a folder of class folders")
    if not root.is_dir():
        raise DataError(f"--data {root}: not a directory; point it at a folder of class folders")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and _is_visible(d.name))
    paths, labels, names = [], [], []
    for class_dir in class_dirs:
        files = sorted(_image_files(class_dir))
        if not files:
            continue
        names.append(class_dir.name)
        paths.extend(files)
        labels.extend([len(names) - 1] * len(files))
    if not paths:
        raise DataError(f"--data {root}: no images found; expected {root}/<class>/<image>.jpg|png|...")
    if len(names) < 2:
        raise DataError(f"--data {root}: found only 1 class folder with images ({names[0]}); "
                        "a classifier needs at least 2")
    return Catalog(str(root), tuple(names), tuple(paths), tuple(labels))


def _image_files(class_dir: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = [d for d in dirnames if _is_visible(d)]
        for name in filenames:
            if _is_visible(name) and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(os.path.join(dirpath, name))
    return found


def find_unreadable(paths: list[str] | tuple[str, ...], threads: int = 2,
                    check: Callable[[str], str] = check_image) -> dict[str, str]:
    """Map each path that `check` (Pillow by default) cannot decode to its reason, in `threads` threads."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        reasons = list(pool.map(check, paths, chunksize=16))
    return {path: reason for path, reason in zip(paths, reasons) if reason}
