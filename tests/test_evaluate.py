"""The test-set report: per-class numbers against hand counts, averages, the text table."""
from __future__ import annotations

import numpy as np
import pytest

from hvdweather.evaluate.report import classification_frame, format_report

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


def test_top_k_accuracy_against_hand_counts():
    from hvdweather.evaluate.report import top_k_accuracies

    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    y_true = np.array([0, 2, 0, 1])
    # ranks of the true class: 1st, 2nd, 3rd, 3rd
    assert top_k_accuracies(y_true, probs, [1, 2, 3]) == {1: 0.25, 2: 0.5, 3: 1.0}


def test_mistakes_and_examples_pick_the_most_confident():
    from hvdweather.evaluate.report import confident_mistakes, examples_per_class

    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3], [0.55, 0.45]])
    y_true = np.array([0, 0, 0, 1, 1])
    assert confident_mistakes(y_true, probs) == [2, 3, 1, 4]  # wrong ones by predicted probability
    assert examples_per_class(y_true, probs, 2) == [(0, 2), (None, 3)]
