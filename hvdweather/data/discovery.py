"""Find the images of a class-folder data set (WEAPD / ImageFolder layout) and check they decode."""
from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hvdweather.data.decode import check_image
from hvdweather.data.images import is_image_name, is_visible
from hvdweather.errors import DataError

__all__ = ["Catalog", "DataError", "discover", "find_unreadable"]


@dataclass(frozen=True)
class Catalog:
    """Every candidate image of a data set: parallel lists of paths and integer labels.

    `ignored`: images found outside any class folder (at the top level), which are not used.
    """

    root: str
    class_names: tuple[str, ...]
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    ignored: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        result = {name: 0 for name in self.class_names}
        for label in self.labels:
            result[self.class_names[label]] += 1
        return result

    def absolute(self) -> Catalog:
        """The same catalog with absolute file paths, which split.csv and every later stage can read from
        any folder (the root stays as given: messages name it as the user typed it)."""
        return Catalog(self.root, self.class_names, tuple(os.path.abspath(p) for p in self.paths), self.labels,
                       tuple(os.path.abspath(p) for p in self.ignored))

    def without(self, drop: set[str]) -> Catalog:
        keep = [i for i, p in enumerate(self.paths) if p not in drop]
        return Catalog(self.root, self.class_names, tuple(self.paths[i] for i in keep),
                       tuple(self.labels[i] for i in keep), self.ignored)


def discover(root: str | Path, label: str = "--data") -> Catalog:
    """List class folders (sorted) and their image files; hidden and non-image files are ignored.

    `label` is how errors name the location (a flag, or an argument such as DATA).
    """
    root = Path(root)
    where = f"{label} {root}"
    if not root.exists():
        raise DataError(f"{where}: directory not found; point it at a folder of class folders")
    if not root.is_dir():
        raise DataError(f"{where}: not a directory; point it at a folder of class folders")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and is_visible(d.name))
    top_images = tuple(sorted(str(f) for f in root.iterdir() if f.is_file() and is_image_name(f.name)))
    nested = [d.name for d in class_dirs if _holds_images_below(d)]
    if nested:
        raise DataError(f"{where}: class folder(s) {_names(nested)} hold sub-folders of images, so {root} "
                        f"looks like a folder of data sets; pass one of them, e.g. {label} {root / nested[0]}")
    paths, labels, names = [], [], []
    for class_dir in class_dirs:
        files = sorted(str(f) for f in class_dir.iterdir() if f.is_file() and is_image_name(f.name))
        if files:
            names.append(class_dir.name)
            paths.extend(files)
            labels.extend([len(names) - 1] * len(files))
    if not paths:
        raise DataError(_no_images_message(root, where, label, bool(top_images)))
    if len(names) < 2:
        raise DataError(f"{where}: found only 1 class folder with images ({names[0]}); "
                        "a classifier needs at least 2")
    return Catalog(str(root), tuple(names), tuple(paths), tuple(labels), top_images)


def _holds_images_below(class_dir: Path) -> bool:
    """True if an image lies in a (visible) sub-folder of `class_dir`: a data set, not a class."""
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = [d for d in dirnames if is_visible(d)]
        if dirpath != str(class_dir) and any(is_image_name(name) for name in filenames):
            return True
    return False


def _names(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _no_images_message(root: Path, where: str, label: str, top_images: bool) -> str:
    """Say which of the usual mistakes this is: one class folder, or images with no class folders."""
    if top_images:
        siblings = [d for d in root.resolve().parent.iterdir() if d.is_dir() and is_visible(d.name)
                    and any(f.is_file() and is_image_name(f.name) for f in d.iterdir())]
        if len(siblings) >= 2:
            return (f"{where}: holds images but no class folders, like one class folder; "
                    f"pass its parent: {label} {root.resolve().parent}")
        return (f"{where}: images lie at the top level with no class folders; move each class's images "
                f"into its own folder: {root}/<class>/<image>")
    return f"{where}: no images found; expected {root}/<class>/<image>.jpg|png|..."


def find_unreadable(paths: list[str] | tuple[str, ...], threads: int = 2,
                    check: Callable[[str], str] = check_image) -> dict[str, str]:
    """Map each path that `check` (Pillow by default) cannot decode to its reason, in `threads` threads."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        reasons = list(pool.map(check, paths, chunksize=16))
    return {path: reason for path, reason in zip(paths, reasons) if reason}
