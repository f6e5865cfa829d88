"""The EDA stage: per-class RGB histograms, image counts, sizes, formats and channel statistics.

    hvdweather-eda DATA --out DIR [--executor sequential|multiprocessing|mpi] [--processes N]
    mpirun -np 4 hvdweather-eda DATA --out DIR --executor mpi

Order of work: the primary lists the images and checks --out (errors reach every rank) -> chunks of
images are analysed by the executor's processes -> integer sums are combined on the primary -> the
primary derives the statistics and writes the outputs (see `hvdweather.eda.outputs`).
"""
from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hvdweather.data import records
from hvdweather.data.discovery import Catalog, discover
from hvdweather.eda.executor import Progress, SequentialExecutor, balanced_chunks, chunk_count
from hvdweather.eda.kernel import CHANNELS, ChunkTask, analyse_chunk, dense_sizes, merge
from hvdweather.errors import DataError, check_output_dir
from hvdweather.host import available_cores


@dataclass(frozen=True)
class EdaTotals:
    """Everything the outputs are made from; integer sums only, combined on the primary."""

    catalog: Catalog
    histograms: np.ndarray  # (classes, 3, 256) int64
    sizes: np.ndarray  # (images, 2) int64 width, height in catalog order; 0 for skipped files
    formats: Counter  # (label, format) -> images
    skipped: dict[int, str]  # catalog index -> reason
    fingerprints: dict[int, tuple[str, int]]  # catalog index -> (sha256, phash); {} without --duplicates

    def decoded(self) -> np.ndarray:
        """Boolean mask of the catalog images that decoded."""
        mask = np.ones(len(self.catalog.paths), bool)
        mask[list(self.skipped)] = False
        return mask


def refuse_prepared(data: str) -> None:
    """A directory written by hvdweather-prepare holds resized copies, not the images: name the source to pass."""
    if not records.is_prepared(data):
        return
    source = "the class-folder data set it was made from"
    try:
        source = json.loads((Path(data) / records.MARKER).read_text()).get("source") or source
    except (OSError, ValueError):
        pass
    raise DataError(f"DATA {data}: a directory written by hvdweather-prepare (resized TFRecord shards); "
                    f"pass the original class-folder data set instead: {source}")


def list_images(data: str, out: str) -> Catalog:
    """The primary's listing: every candidate image (corrupt ones included) after checking --out.

    DATA is the commands' positional argument, so errors name it DATA, not --data.
    """
    refuse_prepared(data)
    catalog = discover(data, label="DATA")
    check_output_dir(out)
    return catalog


def run_facts(executor: SequentialExecutor) -> dict[str, Any]:
    """How a stage ran: the executor, its workers, and the cores, each count meaning one thing.

    Under mpirun each rank is bound to its own core(s), so the primary's CPU mask says 1 on a machine
    with many: `cores_on_node` is the machine's count, `cores_per_rank` the primary process's mask.
    """
    return {"executor": executor.name, "workers": executor.workers, "cores_on_node": os.cpu_count() or 1,
            "cores_per_rank": available_cores()}


def chunk_tasks(catalog: Catalog, chunks: list[np.ndarray], fingerprints: bool = False) -> list[ChunkTask]:
    """Picklable tasks, one per chunk of catalog indices."""
    return [ChunkTask(tuple(catalog.paths[i] for i in chunk), tuple(catalog.labels[i] for i in chunk),
                      tuple(int(i) for i in chunk), len(catalog.class_names), fingerprints) for chunk in chunks]


def compute_totals(catalog: Catalog, executor: SequentialExecutor, progress: Progress,
                   fingerprints: bool = False) -> EdaTotals | None:
    """Analyse every image once across the executor; the totals on the primary, None elsewhere."""
    num_classes, num_images = len(catalog.class_names), len(catalog.paths)
    chunks = balanced_chunks(num_images, chunk_count(num_images, executor.workers))
    partial = merge(executor.map(analyse_chunk, chunk_tasks(catalog, chunks, fingerprints), progress), num_classes)
    progress.close()
    arrays = executor.sum_arrays([partial.histograms, dense_sizes(partial, num_images)])
    objects = executor.gather((partial.formats, partial.skipped, partial.fingerprints))
    if arrays is None or objects is None:
        return None
    formats: Counter = Counter()
    skipped: dict[int, str] = {}
    hashes: dict[int, tuple[str, int]] = {}
    for part_formats, part_skipped, part_hashes in objects:
        formats.update(part_formats)
        skipped.update(part_skipped)
        hashes.update(part_hashes)
    return EdaTotals(catalog, arrays[0], arrays[1], formats, dict(sorted(skipped.items())),
                     dict(sorted(hashes.items())))


def channel_moments(histograms: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """Exact mean and population std per channel (0-255 scale) from (3, 256) counts.

    The sums are integers and the variance is formed in Python integers (no overflow, no
    cancellation), so every executor, in any reduction order, gets the very same floats.
    """
    values = np.arange(histograms.shape[-1], dtype=np.int64)
    means: list[float | None] = []
    stds: list[float | None] = []
    for counts in histograms:
        n, s1, s2 = int(counts.sum()), int((counts * values).sum()), int((counts * values * values).sum())
        means.append(s1 / n if n else None)
        stds.append(math.sqrt((n * s2 - s1 * s1) / (n * n)) if n else None)
    return means, stds


def size_stats(values: np.ndarray) -> dict[str, float | int | None]:
    """min / median / mean / max of image widths or heights (pixels)."""
    if values.size == 0:
        return {"min": None, "median": None, "mean": None, "max": None}
    return {"min": int(values.min()), "median": float(np.median(values)), "mean": float(values.mean()),
            "max": int(values.max())}


def group_summary(histograms: np.ndarray, sizes: np.ndarray, formats: Counter, skipped: int) -> dict[str, Any]:
    """The statistics of one class (or of all classes together)."""
    means, stds = channel_moments(histograms)
    return {"images": int(len(sizes)), "skipped": skipped, "pixels": int(histograms[0].sum()),
            "formats": dict(sorted(formats.items())),
            "width": size_stats(sizes[:, 0]), "height": size_stats(sizes[:, 1]),
            "mean": means, "std": stds,
            "mean_unit": [None if m is None else m / 255 for m in means],
            "std_unit": [None if s is None else s / 255 for s in stds]}


def summarise(totals: EdaTotals) -> dict[str, Any]:
    """summary.json: per class and overall statistics; the normalisation constants are in `all`."""
    catalog = totals.catalog
    labels, decoded = np.asarray(catalog.labels), totals.decoded()
    skipped_labels = Counter(catalog.labels[i] for i in totals.skipped)
    classes = {}
    for label, name in enumerate(catalog.class_names):
        mine = (labels == label) & decoded
        formats = Counter({fmt: n for (lab, fmt), n in totals.formats.items() if lab == label})
        classes[name] = group_summary(totals.histograms[label], totals.sizes[mine], formats,
                                      skipped_labels[label])
    all_formats: Counter = Counter()
    for (_, fmt), n in totals.formats.items():
        all_formats[fmt] += n
    overall = group_summary(totals.histograms.sum(axis=0), totals.sizes[decoded], all_formats,
                            len(totals.skipped))
    return {"data": catalog.root, "channels": list(CHANNELS), "class_names": list(catalog.class_names),
            "images_found": len(catalog.paths), "classes": classes, "all": overall}


def run_eda(data: str, out: str, executor: SequentialExecutor, plots: bool = True,
            progress: bool = True, duplicates: bool = True) -> dict[str, Any] | None:
    """The whole EDA stage; returns summary.json's content on the primary, None on other ranks.
    `duplicates`: also hash every file and report exact and near duplicates (hvdweather.eda.duplicates)."""
    executor.barrier()  # MPI: start the clock when every rank is up
    start = time.perf_counter()
    catalog = executor.share(lambda: list_images(data, out))
    bar = executor.progress(len(catalog.paths), "eda", progress)
    totals = compute_totals(catalog, executor, bar, duplicates)
    elapsed_s = time.perf_counter() - start
    if totals is None:
        return None
    summary = summarise(totals)
    report = None
    if duplicates:
        from hvdweather.eda.duplicates import find_report

        report = find_report(totals)
        summary["duplicates"] = report.summary()
    summary["run"] = {**run_facts(executor), "elapsed_s": elapsed_s,
                      "kernel": "open_rgb + one Image.histogram() per image"}
    from hvdweather.eda.outputs import print_summary, write_outputs

    write_outputs(out, totals, summary)
    if report is not None:
        report.write(Path(out), plots)
    if plots:
        from hvdweather.eda.plots import write_plots

        write_plots(out, totals)
    print_summary(summary, out, plots)
    if report is not None:
        print(report.line(), flush=True)
    return summary
