"""Test-set evaluation and the report: classification report, confusion matrix, training curves. The
numbers are scikit-learn's (classification_report, confusion_matrix) and so is the confusion-matrix plot
(ConfusionMatrixDisplay); this module lays them out in the report files and draws the curves."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on clusters or CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, classification_report, confusion_matrix  # noqa: E402

from hvdweather.axes import loss_scale, whole_number_ticks  # noqa: E402
from hvdweather.writers import RunWriter  # noqa: E402


@dataclass(frozen=True)
class TestPredictions:
    """One checkpoint's predictions on a labelled set: true labels, softmax probabilities, class names."""

    y_true: np.ndarray  # [images] int class indices
    probabilities: np.ndarray  # [images, classes] float32
    class_names: tuple[str, ...]


def predict_probabilities(model: tf.keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """True labels and softmax probabilities over one pass of a finite (images, labels) dataset: top-k
    accuracy needs the whole distribution, not only the argmax."""
    y_true, probabilities = [], []
    for images, labels in dataset:
        probabilities.append(tf.nn.softmax(model(images, training=False)).numpy())
        y_true.append(labels.numpy())
    if not y_true:
        return np.zeros(0, np.int64), np.zeros((0, model.output_shape[-1]), np.float32)
    return np.concatenate(y_true).astype(np.int64), np.concatenate(probabilities).astype(np.float32)


def classification_frame(y_true: np.ndarray, y_pred: np.ndarray, class_names: tuple[str, ...]) -> pd.DataFrame:
    """Per-class precision/recall/F1/support, then accuracy, macro and weighted averages: scikit-learn's
    classification_report over every class (one absent from the set gets zeros), as a frame."""
    report = classification_report(y_true, y_pred, labels=list(range(len(class_names))),
                                   target_names=list(class_names), output_dict=True, zero_division=0)
    total = len(y_true)
    columns = ("precision", "recall", "f1-score")
    rows = {name: (*(report[name][c] for c in columns), report[name]["support"]) for name in class_names}
    # Every class is in `labels`, so the report's micro average is the accuracy and it says so.
    rows["accuracy"] = (np.nan, np.nan, report["accuracy"], total)
    for average in ("macro avg", "weighted avg"):
        rows[average] = (*(report[average][c] for c in columns), total)
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["precision", "recall", "f1", "support"])
    frame.index.name = "class"
    frame["support"] = frame["support"].astype(int)
    return frame


def format_report(frame: pd.DataFrame) -> str:
    """The report as an aligned text table (sklearn's layout)."""
    lines = [f"{'':>14} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"]
    for name, row in frame.iterrows():
        cells = ["" if pd.isna(row[c]) else f"{row[c]:.4f}" for c in ("precision", "recall", "f1")]
        lines.append(f"{name:>14} {cells[0]:>9} {cells[1]:>9} {cells[2]:>9} {int(row['support']):>9}")
    return "\n".join(lines) + "\n"


def plot_confusion(matrix: np.ndarray, class_names: tuple[str, ...]):
    """Confusion matrix heat map with counts (rows: true class, columns: predicted): scikit-learn's
    ConfusionMatrixDisplay, with our labels, white counts on dark cells and a whole-number colour bar."""
    size = 1.0 + 0.55 * len(class_names)
    figure, axis = plt.subplots(figsize=(size + 1.5, size))
    display = ConfusionMatrixDisplay(matrix, display_labels=list(class_names))
    display.plot(ax=axis, cmap="Blues", colorbar=False, xticks_rotation=45, values_format="d",
                 im_kw={"interpolation": "antialiased"}, text_kw={"fontsize": 8})
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):  # black or white, not the colour map's ends: read in print
        display.text_[i, j].set_color("white" if count > threshold else "black")
    axis.set(xlabel="predicted", ylabel="true", title="Test-set confusion matrix")
    plt.setp(axis.get_xticklabels(), ha="right")  # rotated names end under their column
    figure.colorbar(display.im_, ax=axis, ticks=MaxNLocator(integer=True))  # counts: whole numbers
    return figure


def plot_curves(rows: list[dict[str, Any]]):
    """Loss and accuracy per epoch, training and validation."""
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [row["epoch"] for row in rows]
    for axis, key in ((loss_axis, "loss"), (acc_axis, "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            values = [row.get(prefix + key) for row in rows]
            if any(v is not None for v in values):
                axis.plot(epochs, values, style, label=(prefix or "train_") + key)
        log = key == "loss" and loss_scale(axis, [row.get(p + key) for row in rows for p in ("", "val_")])
        axis.set(xlabel="epoch", ylabel=key, title=f"{key} (log scale)" if log else key)
        whole_number_ticks(axis.xaxis)  # epochs are whole numbers
        axis.grid(alpha=0.3)
        axis.legend()
    return figure


def write_report(writer: RunWriter, y_true: np.ndarray, y_pred: np.ndarray, class_names: tuple[str, ...],
                 metrics_rows: list[dict[str, Any]] | None, folder: str = "report") -> pd.DataFrame:
    """Write classification_report.{csv,txt}, confusion_matrix.{csv,png} and, unless `metrics_rows` is
    None (re-evaluation has no training curves), curves.png into `folder` ("" = the writer's directory)."""
    frame = classification_frame(y_true, y_pred, class_names)
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(class_names))))
    cm = pd.DataFrame(matrix, index=list(class_names), columns=list(class_names))
    cm.index.name = "true\\predicted"
    prefix = f"{folder}/" if folder else ""
    writer.write_text(f"{prefix}classification_report.csv", frame.to_csv(float_format="%.4f"))
    writer.write_text(f"{prefix}classification_report.txt", format_report(frame))
    writer.write_text(f"{prefix}confusion_matrix.csv", cm.to_csv())
    writer.save_figure(f"{prefix}confusion_matrix.png", lambda: plot_confusion(matrix, class_names))
    if metrics_rows is not None:
        writer.save_figure(f"{prefix}curves.png", lambda: plot_curves(metrics_rows))
    return frame


def write_checkpoint_report(writer: RunWriter, test: TestPredictions, metrics_rows: list[dict[str, Any]] | None,
                            folder: str, epoch: int | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """write_report plus top_k_accuracy.csv for one checkpoint's test predictions; returns the frame and
    the checkpoint's section of report/test_metrics.json (what hvdweather-compare tabulates)."""
    y_true, class_names = test.y_true, test.class_names
    frame = write_report(writer, y_true, test.probabilities.argmax(axis=1), class_names, metrics_rows, folder)
    top_k = top_k_accuracies(y_true, test.probabilities, list(range(1, min(5, len(class_names)) + 1)))
    writer.write_csv(f"{folder}/top_k_accuracy.csv", ["k", "accuracy", "images"],
                     [[k, f"{a:.6f}", len(y_true)] for k, a in top_k.items()])
    section = {"epoch": epoch, "test_images": int(len(y_true)), "test_accuracy": float(frame.loc["accuracy", "f1"]),
               "macro_f1": float(frame.loc["macro avg", "f1"]), "weighted_f1": float(frame.loc["weighted avg", "f1"]),
               "top_k_accuracy": {str(k): a for k, a in top_k.items()}}
    return frame, section


def write_test_summaries(writer: RunWriter, checkpoint: str, section: dict[str, Any], test: TestPredictions) -> None:
    """TensorBoard: a checkpoint's test accuracy, macro F1 and top-k as scalars and its confusion matrix as
    an image, at the checkpoint's epoch, under tensorboard/ (the writer writes on the primary only)."""
    step = section["epoch"] or 0
    writer.write_scalars("tensorboard", step, {f"test_{checkpoint}/accuracy": section["test_accuracy"],
                                               f"test_{checkpoint}/macro_f1": section["macro_f1"],
                                               **{f"test_{checkpoint}/top{k}_accuracy": a
                                                  for k, a in section["top_k_accuracy"].items()}})
    labels = list(range(len(test.class_names)))
    matrix = confusion_matrix(test.y_true, test.probabilities.argmax(axis=1), labels=labels)
    writer.write_figure_summary("tensorboard", f"test_{checkpoint}/confusion_matrix", step,
                                lambda: plot_confusion(matrix, test.class_names))


def top_k_accuracies(y_true: np.ndarray, probabilities: np.ndarray, ks: list[int]) -> dict[int, float]:
    """Fraction of images whose true class is among the k most probable, for each k (ImageNet's top-5).
    Not sklearn's top_k_accuracy_score: on tied probabilities it ranks the higher class index first, while
    predictions.csv's top-k columns (and this) rank the lower first, so the two files would disagree."""
    ranked = np.argsort(-probabilities, axis=1, kind="stable")
    hits = ranked == np.asarray(y_true)[:, None]
    return {k: float(hits[:, :k].any(axis=1).mean()) if len(y_true) else 0.0 for k in ks}


def confident_mistakes(y_true: np.ndarray, probabilities: np.ndarray, limit: int = 32) -> list[int]:
    """Indices of wrong predictions, the most confident first: the errors most worth looking at."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    order = np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")
    return [int(i) for i in wrong[order][:limit]]


def examples_per_class(y_true: np.ndarray, probabilities: np.ndarray,
                       num_classes: int) -> list[tuple[int | None, int | None]]:
    """Per true class: (most confident correct index, most confident wrong index); None where there is none."""
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    pairs = []
    for label in range(num_classes):
        picks = []
        for correct in (True, False):
            members = np.flatnonzero((y_true == label) & ((predicted == label) == correct))
            picks.append(int(members[np.argmax(confidence[members])]) if len(members) else None)
        pairs.append((picks[0], picks[1]))
    return pairs


