"""Axis conventions the package's plots share (the run's curves, hvdweather-compare, the EDA), TensorFlow-free.

Epochs and counts are whole numbers: their ticks are too, even for one epoch (matplotlib's integer
locator falls back to 0.945 ... 1.050 when fewer than two whole numbers are in view). Losses that span
more than a decade go on a log scale, so one diverged run (a val_loss of 17,461) does not flatten the rest.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

LOG_SCALE_SPAN = 10.0  # max/min of the plotted losses above which their axis is logarithmic


def whole_number_ticks(axis: Any) -> None:
    """Integer ticks on a matplotlib x or y axis, at least one of them (a one-epoch curve gets '1')."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def loss_scale(axes: Any, values: Iterable[float | None]) -> bool:
    """A log y scale on `axes` when the positive `values` span more than LOG_SCALE_SPAN; True if set."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite or min(finite) <= 0 or max(finite) / min(finite) <= LOG_SCALE_SPAN:
        return False
    axes.set_yscale("log")
    return True
