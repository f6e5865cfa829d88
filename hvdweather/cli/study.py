"""hvdweather-compare and hvdweather-sweep: many training runs side by side, and a grid of them run in turn.

    hvdweather-compare runs/a runs/b --out study/ab
    hvdweather-sweep grid.yaml --out study/lr --launcher horovodrun --np 2
"""
from __future__ import annotations

import sys

import click

from hvdweather.cli.options import CONTEXT, field_default
from hvdweather.study import sweep
from hvdweather.study.sweep import LAUNCHERS, SweepSpec


@click.command(context_settings=CONTEXT)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for compare.csv, compare.md, curves.png and test_accuracy.png.")
@click.option("--target-accuracy", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="The epochs_to_target column: first epoch whose validation accuracy reaches this.")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True,
              help="The top-k accuracy column (at most the number of classes).")
def compare_command(run_dirs: tuple[str, ...], out: str, target_accuracy: float, top_k: int) -> None:
    """One table of training runs: the settings that differ, best and last checkpoint metrics, epochs to a
    target accuracy, images/s, wall time, world size; plus overlaid curves and a test-accuracy chart."""
    from hvdweather.study.compare import compare_runs  # deferred: pandas and matplotlib; --help stays fast

    compare_runs(list(run_dirs), out, target_accuracy, top_k)


@click.command(context_settings=CONTEXT)
@click.argument("grid", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="STUDY_DIR: a run directory per cell, cells/, logs/, study.json and the comparison.")
@click.option("--launcher", type=click.Choice(LAUNCHERS), default=field_default(SweepSpec, "launcher"),
              show_default=True, help="How each cell's hvdweather-train starts: one process, or --np ranks.")
@click.option("--np", "np", type=click.IntRange(min=1), default=field_default(SweepSpec, "np"), show_default=True,
              help="Horovod ranks per cell (with --launcher horovodrun or mpirun).")
@click.option("--dry-run", is_flag=True, help="List the cells, what a run would do with each, and the commands.")
@click.option("--cell-timeout", "cell_timeout_s", type=click.FloatRange(min=0),
              default=field_default(SweepSpec, "cell_timeout_s"), show_default=True,
              help="Seconds before a cell is killed and recorded as failed; 0 = no limit.")
@click.option("--target-accuracy", type=click.FloatRange(0, 1), default=field_default(SweepSpec, "target_accuracy"),
              show_default=True, help="The comparison's epochs_to_target column.")
@click.option("--top-k", type=click.IntRange(min=1), default=field_default(SweepSpec, "top_k"), show_default=True,
              help="The comparison's top-k accuracy column.")
@click.option("--prepare-cell", type=int, default=None, help="For job arrays: write cell N's config and print "
              "'RUN_DIR CONFIG [--resume|--overwrite]' (or 'done RUN_DIR'); train nothing.")
@click.option("--collect", is_flag=True, help="For job arrays: build the comparison from the cells' run "
              "directories; train nothing.")
def sweep_command(dry_run: bool, prepare_cell: int | None, collect: bool, **spec_flags) -> None:
    """Run a grid of trainings (GRID: base:, axes:, variants:) one after another into STUDY_DIR, then
    compare them in one table. Re-running skips finished cells and resumes unfinished ones."""
    spec = SweepSpec(**spec_flags)  # the remaining flags are SweepSpec's fields, one to one
    if prepare_cell is not None:
        print(sweep.prepare_cell(spec, prepare_cell), flush=True)
        return
    records = sweep.collect_study(spec) if collect else sweep.run_sweep(spec, dry_run)
    if any(r["status"] != "ok" for r in records):
        sys.exit(1)  # after every cell ran and the table is written (click's Exit would be 0 here)
