"""Shared axis conventions (issue 25): a one-epoch curve gets whole-number ticks, and a loss that spans
decades goes on a log scale, in the run's curves.png and in hvdweather-compare's curves.png."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from hvdweather.axes import loss_scale, whole_number_ticks  # noqa: E402


def _ticks_in_view(axis) -> list[float]:
    axis.figure.canvas.draw()
    low, high = axis.get_xlim()
    return [t for t in axis.get_xticks() if low <= t <= high]


def test_one_epoch_gets_one_whole_number_tick():
    """Before the fix (MaxNLocator(integer=True)) the ticks were 0.945 ... 1.050: proven to fail so."""
    figure, axis = plt.subplots()
    axis.plot([1], [0.5], "-o")
    whole_number_ticks(axis.xaxis)
    assert _ticks_in_view(axis) == [1.0]
    plt.close(figure)


def test_losses_spanning_decades_go_on_a_log_scale():
    figure, axis = plt.subplots()
    assert loss_scale(axis, [0.6, 0.5, 17461.0, None]) and axis.get_yscale() == "log"
    figure, axis = plt.subplots()
    assert not loss_scale(axis, [0.6, 0.5, 2.0]) and axis.get_yscale() == "linear"
    assert not loss_scale(axis, [0.0, 5.0]) and not loss_scale(axis, [])  # no log of zero
    plt.close("all")


def test_the_run_curves_use_both():
    from hvdweather.evaluate.report import plot_curves

    figure = plot_curves([{"epoch": 1, "loss": 2.3, "val_loss": 17461.0, "accuracy": 0.1, "val_accuracy": 0.09}])
    loss_axis, accuracy_axis = figure.axes
    assert loss_axis.get_yscale() == "log" and loss_axis.get_title() == "loss (log scale)"
    assert _ticks_in_view(loss_axis) == [1.0] and _ticks_in_view(accuracy_axis) == [1.0]
    plt.close(figure)
