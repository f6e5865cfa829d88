"""The test-set report: per-class numbers against hand counts, averages, the text table."""
from __future__ import annotations

import numpy as np
import pytest

from hvdweather.evaluate import classification_frame, format_report

NAMES = ("dew", "hail", "snow")


@pytest.fixture
def frame():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 2])
    return classification_frame(y_true, y_pred, NAMES)


def test_per_class_precision_recall_support(frame):
    # dew: predicted 0 three times, two right; true dew 3, two found
    assert frame.loc["dew", "precision"] == pytest.approx(2 / 3)
    assert frame.loc["dew", "recall"] == pytest.approx(2 / 3)
    # hail: predicted twice, one right; true hail 2, one found
    assert frame.loc["hail", "precision"] == pytest.approx(1 / 2)
    # snow: predicted 5 times, 4 right; true 5, 4 found
    assert frame.loc["snow", "f1"] == pytest.approx(0.8)
    assert list(frame["support"][:3]) == [3, 2, 5]


def test_accuracy_and_averages(frame):
    assert frame.loc["accuracy", "f1"] == pytest.approx(7 / 10)
    assert frame.loc["accuracy", "support"] == 10
    macro = frame.loc[list(NAMES), "recall"].mean()
    assert frame.loc["macro avg", "recall"] == pytest.approx(macro)
    weighted = (frame.loc[list(NAMES), "recall"] * [3, 2, 5]).sum() / 10
    assert frame.loc["weighted avg", "recall"] == pytest.approx(weighted)


def test_text_table_has_a_line_per_row(frame):
    lines = format_report(frame).splitlines()
    assert len(lines) == 1 + len(NAMES) + 3
    assert lines[-1].split()[:2] == ["weighted", "avg"]
    assert "0.7000" in next(line for line in lines if line.strip().startswith("accuracy"))


def test_a_class_never_predicted_scores_zero_without_warning():
    frame = classification_frame(np.array([0, 1]), np.array([0, 0]), ("a", "b"))
    assert frame.loc["b", "precision"] == 0 and frame.loc["b", "recall"] == 0
