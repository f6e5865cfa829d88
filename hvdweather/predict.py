"""Use a trained run: class probabilities for image files, alone or under Horovod.

    hvdweather-predict runs/one photos/ extra.jpg --out predictions.csv --top-k 3
    horovodrun -np 2 hvdweather-predict runs/one photos/ --out predictions.csv   # same CSV, same order

MODEL is a run directory (its best.keras, or --checkpoint last) or one of its .keras files; class names
and image size come from the run's config.json, nothing else, so a run directory copied to another
machine works. Files are decoded, resized and normalised by the training pipeline's own functions
(`decode_tf.decode_image`, `pipeline.normalize`), so training and prediction cannot drift apart.
Files are cut into batches in input order; rank r decode-checks and predicts batches r, r + N, ...; the
primary writes one CSV in input order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from hvdweather.data.discovery import Catalog
from hvdweather.data.pipeline import eval_pipeline
from hvdweather.data.sharding import shard_of
from hvdweather.data.source import FolderSource, Source
from hvdweather.distributed import TrainingBackend
from hvdweather.errors import ConfigError, DataError, check_output_dir
from hvdweather.runfiles import read_json
from hvdweather.runmodel import RunModel, check_out_file, check_run_dir, check_top_k, find_images, resolve_model
from hvdweather.writers import RunWriter


def load_keras(run_model: RunModel) -> tf.keras.Model:
    """The checkpoint as a Keras model, for inference only (no optimizer state)."""
    import hvdweather.model  # noqa: F401 - registers the model's own Keras layers before loading
    from hvdweather.host import start_xla_quietly

    start_xla_quietly()
    return tf.keras.models.load_model(run_model.checkpoint, compile=False)


@dataclass(frozen=True)
class Predictions:
    """Per input file, in input order: class probabilities (NaN row when unreadable) and the reason."""

    paths: tuple[str, ...]
    probabilities: np.ndarray  # [files, classes] float32 softmax of the logits
    reasons: tuple[str, ...]  # '' for a predicted file, else why it could not be read

    @property
    def readable(self) -> np.ndarray:
        return np.array([not r for r in self.reasons], bool)


def loose_files(paths: list[str] | tuple[str, ...], class_names: tuple[str, ...]) -> Source:
    """A data source over files with no labels: the same check and decoder as training's class folders."""
    return FolderSource(Catalog("", class_names, tuple(paths), (0,) * len(paths)))


def _predict_local(model: tf.keras.Model, source: Source, batches: list[list[str]], image_size: int,
                   threads: int) -> np.ndarray:
    """Softmax probabilities of each given batch of readable files, each batch one forward pass."""
    paths = [path for batch in batches for path in batch]
    if not paths:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    # Decoded and normalised one by one by the training pipeline, then stacked into exactly the batches
    # given: a batch's numbers depend on its members, so the same batches give the same bits.
    images = iter(eval_pipeline(source.decoded(tuple(paths), (0,) * len(paths), image_size), 1, threads=threads))
    parts = []
    for batch in batches:
        if batch:
            pixels = tf.concat([next(images)[0] for _ in batch], axis=0)
            parts.append(tf.nn.softmax(model(pixels, training=False)).numpy())
    return np.concatenate(parts).astype(np.float32)


def predict_sharded(model: tf.keras.Model, source: Source, paths: list[str] | tuple[str, ...],
                    image_size: int, batch_size: int, backend: TrainingBackend) -> Predictions:
    """Files are cut into batches in input order and rank r predicts batches r, r + N, ...; all ranks get
    the whole result back in input order. Every batch holds the same files (less unreadable ones) as in a
    one-process run, so N ranks write the same probabilities as one process."""
    threads = backend.runtime.threads
    blocks = [list(range(s, min(s + batch_size, len(paths)))) for s in range(0, len(paths), batch_size)]
    my_blocks = shard_of(blocks, backend.shard_count, backend.shard_index)
    mine = [i for block in my_blocks for i in block]
    bad = source.unreadable(tuple(paths[i] for i in mine), threads)
    good_blocks = [[i for i in block if paths[i] not in bad] for block in my_blocks]
    probs = _predict_local(model, source, [[paths[i] for i in block] for block in good_blocks], image_size, threads)
    good = [i for block in good_blocks for i in block]
    parts = backend.allgather_object((good, probs, {i: bad[paths[i]] for i in mine if paths[i] in bad}))
    result = np.full((len(paths), model.output_shape[-1]), np.nan, np.float32)
    reasons = [""] * len(paths)
    for indices, part_probs, part_bad in parts:
        result[indices] = part_probs
        for index, reason in part_bad.items():
            reasons[index] = reason
    return Predictions(tuple(paths), result, tuple(reasons))


def prediction_rows(predictions: Predictions, class_names: tuple[str, ...], top_k: int) -> tuple[list, list]:
    """CSV header and rows: path, predicted class, its probability, the top-k pairs, and the error."""
    header = ["path", "predicted_class", "probability"]
    for k in range(1, top_k + 1):
        header += [f"top{k}_class", f"top{k}_probability"]
    rows = []
    for path, probs, reason in zip(predictions.paths, predictions.probabilities, predictions.reasons):
        if reason:
            rows.append([path, "", ""] + ["", ""] * top_k + [reason])
            continue
        order = np.argsort(-probs, kind="stable")[:top_k]
        pairs = [cell for i in order for cell in (class_names[i], f"{probs[i]:.8f}")]
        rows.append([path, class_names[order[0]], f"{probs[order[0]]:.8f}", *pairs, ""])
    return header + ["error"], rows


def _caption(path: str, name: str, probability: float) -> str:
    return f"{Path(path).name[:22]}\n{name} {probability:.2f}"


def plot_grid(predictions: Predictions, class_names: tuple[str, ...], limit: int = 64):
    """The --grid contact sheet: up to `limit` predicted images with their class and probability."""
    from hvdweather.sheets import plot_contact_sheet

    tiles = []
    for path, probs, reason in list(zip(predictions.paths, predictions.probabilities, predictions.reasons))[:limit]:
        best = int(np.argmax(probs)) if not reason else 0
        tiles.append((path, f"{Path(path).name[:22]}\nunreadable" if reason
                      else _caption(path, class_names[best], float(probs[best])), None))
    return plot_contact_sheet(tiles, f"Predictions ({len(tiles)} of {len(predictions.paths)} images)")


def run_predict(model: str, images: list[str], out: str, top_k: int, batch_size: int, checkpoint: str = "best",
                grid: str = "", threads_per_worker: int = 0) -> Predictions:
    """hvdweather-predict: the cheap checks, then every rank predicts its shard; one CSV on the primary."""
    from hvdweather.distributed import make_backend

    run_model = resolve_model(model, checkpoint)
    check_top_k(top_k, run_model.class_names)
    paths = find_images(images)
    out_file = check_out_file(out)
    grid_file = check_out_file(grid, "--grid") if grid else None
    backend = make_backend("horovod", threads_per_worker=threads_per_worker)  # Horovod when launched; else one
    predictions = predict_sharded(load_keras(run_model), loose_files(paths, run_model.class_names), paths,
                                  run_model.image_size, batch_size, backend)
    header, rows = prediction_rows(predictions, run_model.class_names, top_k)
    writer = backend.runtime.writer(out_file.parent)
    writer.write_csv(out_file.name, header, rows)
    if grid_file:
        backend.runtime.writer(grid_file.parent).save_figure(
            grid_file.name, lambda: plot_grid(predictions, run_model.class_names))
    bad = len(paths) - int(predictions.readable.sum())
    writer.log(f"predicted {len(paths) - bad} of {len(paths)} image(s) with {run_model.checkpoint}; "
               f"{bad} unreadable (in the CSV with the reason, no prediction); wrote {out_file}")
    return predictions


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
    from hvdweather.evaluate import top_k_accuracies, write_report

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
    from hvdweather.evaluate import confident_mistakes
    from hvdweather.sheets import plot_contact_sheet

    tiles = []
    for i in confident_mistakes(y_true, probs):
        predicted = int(probs[i].argmax())
        tiles.append((paths[i], f"true {class_names[y_true[i]]} ({probs[i, y_true[i]]:.2f})\n"
                                f"pred {class_names[predicted]} ({probs[i, predicted]:.2f})", False))
    return plot_contact_sheet(tiles or [(None, "no mistakes", True)], "Most confident mistakes")


def _examples_sheet(paths: list[str], y_true: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...]):
    from hvdweather.evaluate import examples_per_class
    from hvdweather.sheets import plot_contact_sheet

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


def run_evaluate(run_dir: str, checkpoint: str = "best", data: str = "", out: str = "",
                 batch_size: int = 0, threads_per_worker: int = 0, data_root: str = "") -> float:
    """hvdweather-evaluate: the run's test split (or --data) predicted by every rank, reported by the primary."""
    from hvdweather.distributed import make_backend

    run_path = Path(run_dir)
    run_model = check_run_dir(run_path, checkpoint)
    if data and data_root:
        raise ConfigError("--data DIR evaluates another labelled set, --data-root DIR the run's own test split "
                          "where its data set lies now; pass one of them")
    labelled = (labelled_folders(data, run_model) if data
                else run_test_split(run_path, run_model.class_names, data_root))
    out_dir = Path(out) if out else run_path / f"eval-{labelled.name}-{checkpoint}"
    check_output_dir(out_dir)
    backend = make_backend("horovod", threads_per_worker=threads_per_worker)  # Horovod when launched; else one
    writer = backend.runtime.writer(out_dir)
    # The run's own batch by default: the test split is then batched exactly as the training report did.
    batch = batch_size or run_model.per_worker_batch_size
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
