"""hvdweather-evaluate: a run's test split (or another labelled set) predicted by every rank as
hvdweather-predict does, and reported by the primary as training's report does.

    hvdweather-evaluate runs/one                       # RUN_DIR/eval-test-best/
    horovodrun -np 2 hvdweather-evaluate runs/one --data other-photos/ --checkpoint last
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hvdweather.errors import ConfigError, DataError, check_output_dir
from hvdweather.evaluate.predict import Predictions, load_keras, loose_files, predict_sharded, prediction_rows
from hvdweather.evaluate.report import (
    confident_mistakes,
    examples_per_class,
    top_k_accuracies,
    write_report,
)
from hvdweather.evaluate.requests import EvaluateRequest
from hvdweather.evaluate.runmodel import RunModel, check_run_dir
from hvdweather.runfiles import read_json
from hvdweather.sheets import plot_contact_sheet
from hvdweather.writers import RunWriter


@dataclass(frozen=True)
class LabelledSet:
    """Files with true labels indexed by the model's class names, and a name for the eval folder."""

    name: str
    paths: tuple[str, ...]
    labels: tuple[int, ...]


def run_test_split(run_dir: Path, class_names: tuple[str, ...], data_root: str = "") -> LabelledSet:
    """The test subset of the run's own split.csv: the images the training report was computed on, read
    where the data set lies now (`data_root`: --data-root; else see runfiles.locate_data). Every file
    must be there: a one-line error otherwise, before any output folder exists."""
    from hvdweather.data.split import read_split
    from hvdweather.runfiles import data_not_found, locate_data, split_root

    split_file = run_dir / "split.csv"
    if not split_file.is_file():
        raise DataError(f"RUN_DIR {run_dir}: no split.csv; pass --data DIR (a labelled class-folder set)")
    record = read_json(run_dir / "config.json") or {}
    root = data_root or locate_data(record, run_dir)
    split = read_split(split_file, class_names, split_root(record), root)
    if not split.size("test"):
        raise DataError(f"RUN_DIR {run_dir}: the run has no test images (trained with --test-split 0); "
                        "pass --data DIR (a labelled class-folder set)")
    missing = [path for path in split.paths["test"] if not os.path.isfile(path)]
    if missing and not root:
        raise DataError(f"RUN_DIR {run_dir}: {data_not_found(record, '--data-root')}")
    if missing:
        where = f"--data-root {data_root}" if data_root else f"{root}, where the run's data set was found,"
        raise DataError(f"RUN_DIR {run_dir}: {len(missing)} of its {split.size('test')} test image(s) are not "
                        f"in {where} (e.g. {missing[0]}); pass --data-root DIR: the folder of class folders "
                        "the run trained on, where it lies now")
    return LabelledSet("test", split.paths["test"], split.labels["test"])


def labelled_folders(data: str, run_model: RunModel) -> LabelledSet:
    """Another labelled set (class folders or a prepared directory), its classes matched by name."""
    from hvdweather.data.source import open_source

    catalog = open_source(data, run_model.image_size, "--data").catalog
    known = run_model.class_names
    unknown = [name for name in catalog.class_names if name not in known]
    if unknown:
        raise DataError(f"--data {data}: class folder(s) {', '.join(unknown[:4])} not known to the model "
                        f"(it knows {', '.join(known)}); remove or rename them")
    labels = tuple(known.index(catalog.class_names[label]) for label in catalog.labels)
    return LabelledSet(Path(data).resolve().name, catalog.paths, labels)


def evaluation_outputs(writer: RunWriter, labelled: LabelledSet, predictions: Predictions,
                       class_names: tuple[str, ...]) -> tuple[float, dict[int, float]]:
    """report files, predictions.csv, top-k accuracy, misclassified.png, examples.png, skipped.csv."""
    ok = predictions.readable
    paths = [p for p, good in zip(labelled.paths, ok) if good]
    y_true, probs = np.asarray(labelled.labels)[ok], predictions.probabilities[ok]
    frame = write_report(writer, y_true, probs.argmax(axis=1), class_names, None, folder="")
    header, rows = prediction_rows(predictions, class_names, len(class_names))
    truth = [class_names[label] for label in labelled.labels]
    writer.write_csv("predictions.csv", ["true_class", *header], [[t, *row] for t, row in zip(truth, rows)])
    top_k = top_k_accuracies(y_true, probs, list(range(1, min(5, len(class_names)) + 1)))
    writer.write_csv("top_k_accuracy.csv", ["k", "accuracy", "images"], [[k, f"{a:.6f}", len(y_true)]
                                                                         for k, a in top_k.items()])
    writer.write_csv("skipped.csv", ["path", "reason"], [[p, r] for p, r in zip(labelled.paths, predictions.reasons)
                                                         if r])
    writer.save_figure("misclassified.png", lambda: _mistakes_sheet(paths, y_true, probs, class_names))
    writer.save_figure("examples.png", lambda: _examples_sheet(paths, y_true, probs, class_names))
    return float(frame.loc["accuracy", "f1"]), top_k


def _mistakes_sheet(paths: list[str], y_true: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...]):
    tiles = []
    for i in confident_mistakes(y_true, probs):
        predicted = int(probs[i].argmax())
        tiles.append((paths[i], f"true {class_names[y_true[i]]} ({probs[i, y_true[i]]:.2f})\n"
                                f"pred {class_names[predicted]} ({probs[i, predicted]:.2f})", False))
    return plot_contact_sheet(tiles or [(None, "no mistakes", True)], "Most confident mistakes")


def _examples_sheet(paths: list[str], y_true: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...]):
    tiles = []
    for label, picks in enumerate(examples_per_class(y_true, probs, len(class_names))):
        for index, correct in zip(picks, (True, False)):
            if index is None:
                tiles.append((None, f"{class_names[label]}: no {'correct' if correct else 'wrong'} example", None))
            else:
                predicted = int(probs[index].argmax())
                tiles.append((paths[index], f"true {class_names[label]}\npred {class_names[predicted]} "
                                            f"({probs[index, predicted]:.2f})", correct))
    return plot_contact_sheet(tiles, "A correct and a wrong example per class", columns=4)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only an empty folder; another rank may have removed it already
    except OSError:
        pass


def run_evaluate(request: EvaluateRequest) -> float:
    """hvdweather-evaluate: the run's test split (or --data) predicted by every rank, reported by the primary."""
    from hvdweather.distributed import make_backend

    run_path, checkpoint, data, data_root = Path(request.run_dir), request.checkpoint, request.data, request.data_root
    run_model = check_run_dir(run_path, checkpoint)
    if data and data_root:
        raise ConfigError("--data DIR evaluates another labelled set, --data-root DIR the run's own test split "
                          "where its data set lies now; pass one of them")
    labelled = (labelled_folders(data, run_model) if data
                else run_test_split(run_path, run_model.class_names, data_root))
    out_dir = Path(request.out) if request.out else run_path / f"eval-{labelled.name}-{checkpoint}"
    check_output_dir(out_dir)
    # Horovod when launched; else one process
    backend = make_backend("horovod", threads_per_worker=request.threads_per_worker)
    writer = backend.runtime.writer(out_dir)
    # The run's own batch by default: the test split is then batched exactly as the training report did.
    batch = request.batch_size or run_model.per_worker_batch_size
    predictions = predict_sharded(load_keras(run_model), loose_files(labelled.paths, run_model.class_names),
                                  labelled.paths, run_model.image_size, batch, backend)
    if not predictions.readable.any():
        _remove_if_empty(out_dir)
        raise DataError(f"none of the {len(labelled.paths)} image(s) of {labelled.name} could be read (e.g. "
                        f"{labelled.paths[0]}: {predictions.reasons[0]}); nothing to evaluate")
    accuracy, top_k = evaluation_outputs(writer, labelled, predictions, run_model.class_names)
    bad = len(labelled.paths) - int(predictions.readable.sum())
    writer.log(f"accuracy {accuracy:.4f} on {len(labelled.paths) - bad} image(s) of {labelled.name} with "
               f"{run_model.checkpoint.name}; " + ", ".join(f"top-{k} {a:.4f}" for k, a in top_k.items())
               + (f"; {bad} unreadable (skipped.csv)" if bad else "") + f"; report in {out_dir}")
    return accuracy
