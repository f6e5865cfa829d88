"""Test-set evaluation and the report: classification report, confusion matrix, training curves."""
from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on clusters or CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support  # noqa: E402

from hvdweather.writers import RunWriter  # noqa: E402


def predict_labels(model: tf.keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """True and predicted labels over one pass of a finite (images, labels) dataset."""
    y_true, y_pred = [], []
    for images, labels in dataset:
        y_pred.append(np.argmax(model(images, training=False).numpy(), axis=1))
        y_true.append(labels.numpy())
    if not y_true:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(y_true).astype(np.int64), np.concatenate(y_pred).astype(np.int64)


def classification_frame(y_true: np.ndarray, y_pred: np.ndarray, class_names: tuple[str, ...]) -> pd.DataFrame:
    """Per-class precision/recall/F1/support, then accuracy, macro and weighted averages."""
    labels = list(range(len(class_names)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    frame = pd.DataFrame({"precision": p, "recall": r, "f1": f, "support": s}, index=list(class_names))
    total = int(s.sum())
    accuracy = float(np.mean(y_true == y_pred)) if total else 0.0
    rows = {"accuracy": (np.nan, np.nan, accuracy, total)}
    for average in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average,
                                                        zero_division=0)
        rows[f"{average} avg"] = (ap, ar, af, total)
    extra = pd.DataFrame.from_dict(rows, orient="index", columns=frame.columns)
    frame = pd.concat([frame, extra])
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
    """Confusion matrix heat map with counts (rows: true class, columns: predicted)."""
    size = 1.0 + 0.55 * len(class_names)
    figure, axis = plt.subplots(figsize=(size + 1.5, size))
    image = axis.imshow(matrix, cmap="Blues")
    axis.set(xticks=range(len(class_names)), yticks=range(len(class_names)), xlabel="predicted",
             ylabel="true", title="Test-set confusion matrix")
    axis.set_xticklabels(class_names, rotation=45, ha="right")
    axis.set_yticklabels(class_names)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        axis.text(j, i, str(count), ha="center", va="center", fontsize=8,
                  color="white" if count > threshold else "black")
    figure.colorbar(image, ax=axis, ticks=MaxNLocator(integer=True))  # counts: whole numbers
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
        axis.set(xlabel="epoch", ylabel=key, title=key)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        axis.grid(alpha=0.3)
        axis.legend()
    return figure


def write_report(writer: RunWriter, y_true: np.ndarray, y_pred: np.ndarray, class_names: tuple[str, ...],
                 metrics_rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Write report/: classification_report.{csv,txt}, confusion_matrix.{csv,png}, curves.png."""
    frame = classification_frame(y_true, y_pred, class_names)
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(class_names))))
    cm = pd.DataFrame(matrix, index=list(class_names), columns=list(class_names))
    cm.index.name = "true\\predicted"
    writer.write_text("report/classification_report.csv", frame.to_csv(float_format="%.4f"))
    writer.write_text("report/classification_report.txt", format_report(frame))
    writer.write_text("report/confusion_matrix.csv", cm.to_csv())
    writer.save_figure("report/confusion_matrix.png", lambda: plot_confusion(matrix, class_names))
    writer.save_figure("report/curves.png", lambda: plot_curves(metrics_rows))
    return frame
