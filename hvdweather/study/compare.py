"""hvdweather-compare: one table of runs, the CIFAR-10 lab's comparison table as one command.

    hvdweather-compare runs/a runs/b runs/c --out compare/     # also run by hvdweather-sweep at its end

One row per run: the settings that differ between the runs, best and last checkpoint (epoch, val loss,
val accuracy, test accuracy, macro F1, top-k), epochs to --target-accuracy, training images/s (median
over epochs after the first), wall time (sum of epoch times) and world size. Written as compare.csv and
compare.md, with curves.png (every run's val loss and accuracy, overlaid) and test_accuracy.png (best vs
last). Runs of different classes or test images are refused (study.runs.check_comparable), unless the
runs differ in --seed: then seed_spread.csv/.md also give mean ± std over the --seed values (study.spread).
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

from hvdweather.errors import ConfigError, check_output_dir
from hvdweather.study.runs import RunRecord, check_comparable, read_run, run_row, varied_settings
from hvdweather.study.spread import varies_seed, write_seed_summary
from hvdweather.tables import markdown_table

Row = dict[str, Any]
# Every column but the settings, in table order (top-k is named top<K>_accuracy after --top-k).
METRIC_COLUMNS = ("world_size", "epochs_trained", "best_epoch", "best_val_loss", "best_val_accuracy",
                  "best_test_accuracy", "best_macro_f1", "best_topK_accuracy", "last_epoch", "last_val_loss",
                  "last_val_accuracy", "last_test_accuracy", "last_macro_f1", "last_topK_accuracy",
                  "epochs_to_target", "images_per_s", "wall_s")


def columns(settings: list[str], k: int) -> list[str]:
    return ["run", "status", *settings, *(c.replace("topK", f"top{k}") for c in METRIC_COLUMNS), "error"]


def table_rows(records: list[RunRecord], failed: list[Row], k: int,
               target_accuracy: float) -> tuple[list[Row], list[str]]:
    """Rows for the runs (and for `failed` cells: run, status, error and their settings) and the
    settings columns: the fields that differ between runs, failed cells' settings included."""
    settings = varied_settings([r.config for r in records] + [f.get("settings", {}) for f in failed])
    rows = [run_row(r, settings, k, target_accuracy) for r in records]
    rows += [{"run": f["run"], "status": f["status"], **{s: f.get("settings", {}).get(s) for s in settings},
              "error": f.get("error")} for f in failed]
    return rows, settings


# Decimals of each measured column, the same for every row so a column reads at a glance: speeds and
# times to 0.1; losses, accuracies and F1 to 4 (a loss of 17461.0000 beside 0.5432).
_ONE_DECIMAL = ("images_per_s", "wall_s")


def _text(value: Any, column: str = "", setting: bool = False) -> str:
    """A cell: settings as given (lr 0.01), measured numbers with their column's decimals."""
    if value is None:
        return ""
    if isinstance(value, float) and not setting:
        return f"{value:.1f}" if column in _ONE_DECIMAL else f"{value:.4f}"
    return str(value)


def comparison_table(rows: list[Row], names: list[str], settings: list[str]) -> str:
    """A GitHub markdown table; the error column only when a run failed."""
    names = [n for n in names if n not in ("error", "run_dir") or any(r.get(n) for r in rows)]
    cells = [[_text(r.get(n), n, n in settings).replace("|", "/") for n in names] for r in rows]
    return markdown_table(names, cells) + "\n"


def write_csv(rows: list[Row], names: list[str], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*names, "run_dir"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{n: r.get(n) for n in [*names, "run_dir"]} for r in rows])


def plot_curves(records: list[RunRecord]) -> Any:
    """Every run's val loss and val accuracy per epoch, overlaid, one colour per run."""
    import matplotlib.pyplot as plt

    from hvdweather.axes import loss_scale, whole_number_ticks

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = plt.get_cmap("tab10" if len(records) <= 10 else "tab20")
    plotted: dict[str, list] = {"val_loss": [], "val_accuracy": []}
    for index, record in enumerate(records):
        epochs = [r["epoch"] for r in record.metrics]
        for axis, key in zip(axes, ("val_loss", "val_accuracy")):
            values = [r.get(key, r.get(key.removeprefix("val_"))) for r in record.metrics]
            plotted[key] += values
            axis.plot(epochs, values, "-o", markersize=3, color=colours(index % colours.N), label=record.name)
    for axis, key in zip(axes, ("val_loss", "val_accuracy")):
        log = key == "val_loss" and loss_scale(axis, plotted[key])
        axis.set(xlabel="epoch", ylabel=key, title=key.replace("_", " ") + (" (log scale)" if log else ""))
        whole_number_ticks(axis.xaxis)
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    figure.tight_layout()
    return figure


def plot_test_accuracy(rows: list[Row]) -> Any:
    """Test accuracy per run, best and last checkpoint side by side."""
    import matplotlib.pyplot as plt
    import numpy as np

    ok = [r for r in rows if r["status"] == "ok"]
    figure, axis = plt.subplots(figsize=(max(5.0, 0.9 * len(ok) + 2), 4))
    x = np.arange(len(ok))
    for offset, key in ((-0.2, "best"), (0.2, "last")):
        values = [r.get(f"{key}_test_accuracy") or 0.0 for r in ok]
        axis.bar(x + offset, values, 0.4, label=f"{key} checkpoint")
    axis.set_xticks(x)
    axis.set_xticklabels([r["run"] for r in ok], rotation=30, ha="right", fontsize=8)
    axis.set(ylabel="test accuracy", ylim=(0, 1), title="Test accuracy per run")
    axis.legend()
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def compare_runs(run_dirs: list[str | Path], out: str | Path, target_accuracy: float = 0.5, top_k: int = 3,
                 failed: list[Row] | None = None) -> list[Row]:
    """Read, check and tabulate runs; write compare.csv, compare.md, curves.png, test_accuracy.png into
    `out`; print the table. `failed`: rows for sweep cells that left no usable run."""
    import matplotlib

    matplotlib.use("Agg")
    failed = failed or []
    if not run_dirs and not failed:
        raise ConfigError("give at least one RUN_DIR")
    records = [read_run(d) for d in run_dirs]
    names = [r.name for r in records]
    if len(set(names)) < len(names):  # e.g. the same cell of two studies: name each by its study too
        records = [dataclasses.replace(r, name=f"{r.run_dir.parent.name}/{r.name}") for r in records]
    k = max(1, min(top_k, len(records[0].class_names) if records else top_k))
    rows, settings = table_rows(records, failed, k, target_accuracy)
    if records:
        check_comparable(records, other_tests_ok=varies_seed(settings))
    out = check_output_dir(out)
    names = columns(settings, k)
    write_csv(rows, names, out / "compare.csv")
    table = comparison_table(rows, names, settings)
    (out / "compare.md").write_text(f"{len(rows)} run(s). epochs_to_target: first epoch with validation accuracy "
                                    f">= {target_accuracy:g}; images_per_s: training, median over epochs after the "
                                    "first; wall_s: sum of epoch times (training + validation).\n\n" + table)
    if records:
        save(plot_curves(records), out / "curves.png")
        save(plot_test_accuracy(rows), out / "test_accuracy.png")
    print(table, flush=True)
    if varies_seed(settings):
        print(write_seed_summary(rows, settings, out), flush=True)
    print(f"compared {len(records)} run(s)" + (f", {len(failed)} failed" if failed else "")
          + "; wrote compare.csv, compare.md, " + ("seed_spread.csv, seed_spread.md, " if varies_seed(settings) else "")
          + f"curves.png, test_accuracy.png in {out}", flush=True)
    return rows
