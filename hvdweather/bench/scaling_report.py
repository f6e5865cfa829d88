"""Scaling benchmark, reporting part: derived numbers, scaling.csv, scaling.md and the two plots, all from
results.jsonl lines alone, so `hvdweather-bench scaling` and `hvdweather-bench collect` (a SLURM array's
runs) build the same tables from the same functions.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Protocol

from hvdweather.bench.machine import machine_line
from hvdweather.tables import markdown_table

BASELINE = "single"  # the plain one-process run on all cores
# The --strategies names in table order (hvdweather.bench.scaling_spec.STRATEGIES runs them; a test holds the two
# to the same names), and how each is named in titles.
STRATEGIES = ("horovod", "mirrored", "torch-ddp")
TITLES = {"horovod": "Horovod", "mirrored": "MirroredStrategy", "torch-ddp": "PyTorch DDP"}
REFERENCE = "torch-ddp"  # the reference the other strategies are compared with when it ran

# scaling.csv columns: the measurements of results.jsonl, then what add_derived() computes from them.
CSV_COLUMNS = (
    "run", "strategy", "workers", "processes", "threads_per_worker", "total_threads", "cores",
    "per_worker_batch_size", "global_batch_size", "epochs", "timed_epochs", "status", "returncode",
    "epoch_time_s", "train_time_s", "full_epoch_s", "images_per_s", "final_val_accuracy", "epochs_to_target",
    "wall_s", "speedup", "efficiency", "horovod_to_mirrored_time", "vs_baseline", "vs_torch_ddp",
    "achieved_gflops", "matmul_gflops", "of_matmul", "log", "error")

Row = dict[str, Any]


class ReportSpec(Protocol):
    """What the report reads of the benchmark's spec (hvdweather.bench.scaling_spec.ScalingSpec)."""

    data: str
    epochs: int
    image_size: int
    target_accuracy: float
    out: str


def _ratio(num: Row | None, den: Row | None, key: str) -> float | None:
    if num is None or den is None or not den.get(key):
        return None
    return num[key] / den[key]


def compute_columns(row: Row, machine: dict[str, Any] | None) -> Row:
    """achieved_gflops: the model's training FLOPs per image (machine.json's model_flops, counted once)
    x the row's images/s; matmul_gflops: the machine's float32 matmul rate on the row's total threads;
    of_matmul: their ratio. None where either is missing (a failed run, --no-compute, an old record)."""
    flops = ((machine or {}).get("model_flops") or {}).get("train_flops_per_image")
    rate = ((machine or {}).get("matmul_gflops") or {}).get(str(row.get("total_threads")))
    achieved = flops * row["images_per_s"] / 1e9 if flops and row.get("images_per_s") else None
    return {"achieved_gflops": achieved, "matmul_gflops": rate,
            "of_matmul": achieved / rate if achieved is not None and rate else None}


def add_derived(results: list[Row], machine: dict[str, Any] | None = None) -> list[Row]:
    """Speed-up, efficiency and ratios, from the results lines alone (failed runs get None).

    speedup: images/s over 1 worker of the same strategy at the same per-worker batch (images/s, not
    epoch time, because drop_remainder can give runs slightly different images per epoch);
    efficiency: speedup / workers; horovod_to_mirrored_time: Horovod's median train time over
    mirrored's at equal workers and batch (< 1: Horovod faster); vs_baseline: images/s over the
    all-cores single process at the same per-worker batch; vs_torch_ddp: images/s over PyTorch DDP's at
    equal workers and per-worker batch (> 1: faster than the PyTorch reference); achieved_gflops,
    matmul_gflops, of_matmul: see compute_columns.
    """
    ok = {(r["strategy"], r["workers"], r["per_worker_batch_size"]): r for r in results if r["status"] == "ok"}
    derived = []
    for r in results:
        batch, workers = r["per_worker_batch_size"], r["workers"]
        mine = ok.get((r["strategy"], workers, batch))
        scaled = r["strategy"] in STRATEGIES  # the baseline has no worker axis and no pair
        speedup = _ratio(mine, ok.get((r["strategy"], 1, batch)), "images_per_s")
        pair = {s: ok.get((s, workers, batch)) for s in STRATEGIES}
        derived.append({**r, "speedup": speedup,
                        "efficiency": None if speedup is None else speedup / workers,
                        "horovod_to_mirrored_time": _ratio(pair["horovod"], pair["mirrored"], "train_time_s")
                        if scaled and mine else None,
                        "vs_baseline": _ratio(mine, ok.get((BASELINE, 1, batch)), "images_per_s"),
                        "vs_torch_ddp": _ratio(mine, pair[REFERENCE], "images_per_s") if scaled else None,
                        **compute_columns(r, machine)})
    return derived


def present_strategies(rows: list[Row]) -> tuple[str, ...]:
    """The --strategies names that have rows, in STRATEGIES order (the baseline is not one)."""
    return tuple(s for s in STRATEGIES if any(r["strategy"] == s for r in rows))


def row_label(row: Row) -> str:
    if row["strategy"] == BASELINE:
        return f"single process, {row['threads_per_worker']} threads"
    return f"{row['strategy']} x {row['workers']}"


def pivot_table(rows: list[Row], key: str, fmt: str, strategies: tuple[str, ...] | None = None) -> str:
    """A markdown table shaped like the reference PyTorch project's: one row per strategy x workers, one
    column per per-worker batch size. A cell shows `key` formatted with `fmt`, "failed"/"timeout" for a
    failed run, "-" when undefined."""
    batches = sorted({r["per_worker_batch_size"] for r in rows})
    chosen = [r for r in rows if strategies is None or r["strategy"] in strategies]
    order = sorted({(r["strategy"] == BASELINE, r["strategy"], r["workers"]) for r in chosen})
    lines = []
    for _, strategy, workers in order:
        cells, label = [], ""
        for batch in batches:
            match = [r for r in chosen if (r["strategy"], r["workers"], r["per_worker_batch_size"])
                     == (strategy, workers, batch)]
            label = label or (row_label(match[0]) if match else "")
            cells.append(_cell(match[0], key, fmt) if match else "-")
        lines.append([label, *cells])
    return markdown_table(["strategy x workers", *(f"bs {b}" for b in batches)], lines)


def _cell(row: Row, key: str, fmt: str) -> str:
    if row["status"] != "ok":
        return row["status"]
    value = row.get(key)
    return "-" if value is None else fmt.format(value)


def comparison_tables(rows: list[Row], strategies: tuple[str, ...]) -> list[str]:
    """Headings and tables that compare strategies, for the pairs that ran."""
    parts = []
    if {"horovod", "mirrored"} <= set(strategies):
        parts += ["## Horovod / mirrored epoch time at equal workers and global batch (< 1: Horovod faster)",
                  pivot_table(rows, "horovod_to_mirrored_time", "{:.2f}", ("horovod",))]
    if REFERENCE in strategies and len(strategies) > 1:
        parts += ["## Images/s vs torch-ddp at equal workers and per-worker batch (> 1: faster than "
                  "PyTorch DDP)", pivot_table(rows, "vs_torch_ddp", "{:.2f}", strategies)]
    return parts


def markdown_report(rows: list[Row], machine: dict[str, Any], spec: ReportSpec) -> str:
    """scaling.md: machine, method, then the tables (rows must already carry add_derived's keys)."""
    strategies = present_strategies(rows)
    threads = sorted({r["threads_per_worker"] for r in rows if r["strategy"] != BASELINE})
    parts = [
        "# Scaling benchmark: " + " vs ".join(TITLES[s] for s in strategies),
        machine_line(machine),
        (f"Data {spec.data}, image size {spec.image_size}, {spec.epochs} epochs per run; "
         f"threads per worker {threads}. Epoch 1 (cache fill, graph build) is excluded; values are "
         "medians over the other epochs. Batch sizes (bs) are per worker; global batch = bs x workers."),
        "## Median epoch time (s, training steps only)", pivot_table(rows, "train_time_s", "{:.2f}"),
        "## Median epoch time including validation (s)", pivot_table(rows, "epoch_time_s", "{:.2f}"),
        *([] if not any(r.get("full_epoch_s") for r in rows) else [
            "## Median whole epoch (s: also the averaging, checkpoint writes and every callback; rank 0's clock)",
            pivot_table(rows, "full_epoch_s", "{:.2f}")]),
        "## Images/s (training)", pivot_table(rows, "images_per_s", "{:.1f}"),
        *ratio_tables(rows, strategies),
        f"## Epochs to val accuracy >= {spec.target_accuracy:g} (- = not reached)",
        pivot_table(rows, "epochs_to_target", "{}"),
        *compute_tables(rows, machine),
    ]
    if any(r["status"] == "ok" and r.get("epochs", 2) < 2 for r in rows):  # 2 epochs: epoch 2 is timed
        parts.append("Note: runs of 1 epoch have no epoch after warm-up; their times include epoch 1.")
    return "\n\n".join(parts + failed_runs(rows)) + "\n"


def ratio_tables(rows: list[Row], strategies: tuple[str, ...]) -> list[str]:
    """The speed-up, efficiency and comparison tables that have a number to show; one line naming those
    that have none (no 1-worker run, --no-baseline), instead of tables of '-'."""
    one_worker = "no 1-worker run of a strategy"
    tables = [("speedup", "Speed-up vs 1 worker of the same strategy (images/s ratio)", strategies, one_worker),
              ("efficiency", "Efficiency (speed-up / workers)", strategies, one_worker), None,
              ("vs_baseline", "Speed-up vs the single process on all cores (images/s ratio, same per-worker "
               "batch)", None, "no single-process run (--no-baseline)")]
    parts, left_out = [], []
    for table in tables:
        if table is None:
            parts += comparison_tables(rows, strategies)
            continue
        key, title, chosen, why = table
        if any(r.get(key) is not None for r in rows):
            parts += [f"## {title}", pivot_table(rows, key, "{:.2f}", chosen)]
        else:
            left_out.append(f"{title.split(' (')[0]}: {why}")
    if left_out:
        parts.append("Not shown, nothing to compare with: " + "; ".join(left_out) + ".")
    return parts


def compute_tables(rows: list[Row], machine: dict[str, Any]) -> list[str]:
    """How close each row is to the hardware: achieved GFLOP/s and its share of the measured float32
    matmul rate on the same number of threads; nothing when the compute limit was not measured."""
    flops, rates = machine.get("model_flops"), machine.get("matmul_gflops")
    if not flops or not rates:
        return []
    rate_text = ", ".join(f"{rate:g} on {threads} thread(s)" for threads, rate in rates.items())
    return ["## Compute: achieved GFLOP/s (training FLOPs per image x images/s)",
            f"{flops['train_flops_per_image'] / 1e9:.3f} GFLOP per training image ({flops['model']}, "
            f"{flops['image_size']} px, {flops['classes']} classes; {flops['method']}). Measured float32 "
            f"matmul: {rate_text} GFLOP/s ({machine.get('matmul_method', '')}).",
            pivot_table(rows, "achieved_gflops", "{:.1f}"),
            "## Share of the measured float32 matmul rate on the row's total threads",
            pivot_table(rows, "of_matmul", "{:.2f}")]


def failed_runs(rows: list[Row]) -> list[str]:
    """A table of the runs that failed, with the log to read; none when all ran."""
    failed = [r for r in rows if r["status"] != "ok"]
    if not failed:
        return []
    cells = [[r["run"], r["status"], str(r["log"]), (r["error"] or "").replace("|", "/")] for r in failed]
    return ["## Failed runs", markdown_table(["run", "status", "log", "error"], cells)]


def write_csv(rows: list[Row], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _series(rows: list[Row], strategy: str, batch: int, key: str) -> tuple[list, list]:
    points = sorted((r["workers"], r[key]) for r in rows if r["strategy"] == strategy
                    and r["per_worker_batch_size"] == batch and r["status"] == "ok" and r.get(key) is not None)
    return [p[0] for p in points], [p[1] for p in points]


def _worker_axis(ax: Any, rows: list[Row]) -> None:
    """Workers are whole numbers: ticks at the measured counts only, never 1.5."""
    ax.set_xticks(sorted({r["workers"] for r in rows}))
    ax.set_xlabel("workers")


def plot_epoch_time(rows: list[Row]) -> Any:
    """One panel per batch size: median epoch time vs workers for each strategy, baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["per_worker_batch_size"] for r in rows})
    figure, axes = plt.subplots(1, len(batches), figsize=(4.2 * len(batches), 3.6), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        for strategy in present_strategies(rows):
            x, y = _series(rows, strategy, batch, "train_time_s")
            if x:
                ax.plot(x, y, marker="o", label=strategy)
        base = _series(rows, BASELINE, batch, "train_time_s")[1]
        if base:
            ax.axhline(base[0], linestyle="--", color="grey", label="single process, all cores")
        ax.set(title=f"per-worker batch {batch}", ylabel="median epoch time (s)")
        _worker_axis(ax, rows)
        ax.set_ylim(bottom=0)
        if ax.get_legend_handles_labels()[0]:  # a batch size whose runs all failed has nothing to label
            ax.legend(fontsize="small")
    figure.tight_layout()
    return figure


def plot_speedup(rows: list[Row]) -> Any:
    """Speed-up vs workers for every strategy and batch size, against the ideal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5.5, 4.2))
    workers = sorted({r["workers"] for r in rows})
    ax.plot(workers, workers, linestyle="--", color="grey", label="ideal")
    for strategy in present_strategies(rows):
        for batch in sorted({r["per_worker_batch_size"] for r in rows}):
            x, y = _series(rows, strategy, batch, "speedup")
            if x:
                ax.plot(x, y, marker="o", label=f"{strategy}, bs {batch}")
    ax.set(ylabel="speed-up (images/s vs 1 worker)", title="Speed-up vs ideal")
    _worker_axis(ax, rows)
    ax.legend(fontsize="small")
    figure.tight_layout()
    return figure


def write_outputs(results: list[Row], machine: dict[str, Any], spec: ReportSpec) -> str:
    """scaling.csv, scaling.md and the plots, all from the results lines; returns the markdown."""
    import matplotlib.pyplot as plt

    out = Path(spec.out)
    rows = add_derived(results, machine)
    write_csv(rows, out / "scaling.csv")
    text = markdown_report(rows, machine, spec)
    (out / "scaling.md").write_text(text)
    for name, make in (("epoch_time.png", plot_epoch_time), ("speedup.png", plot_speedup)):
        figure = make(rows)
        figure.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
    return text
