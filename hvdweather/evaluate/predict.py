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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from hvdweather.data.discovery import Catalog
from hvdweather.data.pipeline import eval_pipeline
from hvdweather.data.sharding import shard_of
from hvdweather.data.source import FolderSource, Source
from hvdweather.distributed import TrainingBackend
from hvdweather.evaluate.requests import PredictRequest
from hvdweather.evaluate.runmodel import RunModel, check_out_file, check_top_k, find_images, resolve_model


def load_keras(run_model: RunModel) -> tf.keras.Model:
    """The checkpoint as a Keras model, for inference only (no optimizer state)."""
    import hvdweather.models.weather_cnn  # noqa: F401 - registers the model's own Keras layers before loading
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


def run_predict(request: PredictRequest) -> Predictions:
    """hvdweather-predict: the cheap checks, then every rank predicts its shard; one CSV on the primary."""
    from hvdweather.distributed import make_backend

    run_model = resolve_model(request.model, request.checkpoint)
    check_top_k(request.top_k, run_model.class_names)
    paths = find_images(request.images)
    out_file = check_out_file(request.out)
    grid_file = check_out_file(request.grid, "--grid") if request.grid else None
    # Horovod when launched; else one process
    backend = make_backend("horovod", threads_per_worker=request.threads_per_worker)
    predictions = predict_sharded(load_keras(run_model), loose_files(paths, run_model.class_names), paths,
                                  run_model.image_size, request.batch_size, backend)
    header, rows = prediction_rows(predictions, run_model.class_names, request.top_k)
    writer = backend.runtime.writer(out_file.parent)
    writer.write_csv(out_file.name, header, rows)
    if grid_file:
        backend.runtime.writer(grid_file.parent).save_figure(
            grid_file.name, lambda: plot_grid(predictions, run_model.class_names))
    bad = len(paths) - int(predictions.readable.sum())
    writer.log(f"predicted {len(paths) - bad} of {len(paths)} image(s) with {run_model.checkpoint}; "
               f"{bad} unreadable (in the CSV with the reason, no prediction); wrote {out_file}")
    return predictions
