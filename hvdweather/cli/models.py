"""hvdweather-predict, hvdweather-evaluate and hvdweather-export: a trained run used. Each checks its inputs
with the TensorFlow-free hvdweather.evaluate.runmodel first, so a wrong MODEL, RUN_DIR or --out is a
one-line error in about a second; the modules that load TensorFlow are imported after those checks.

    hvdweather-predict runs/one photos/ --out predictions.csv
    horovodrun -np 2 hvdweather-evaluate runs/one
    hvdweather-export runs/one --out exports/weather
"""
from __future__ import annotations

import click

from hvdweather.cli.options import CONTEXT, field_default, onednn_option
from hvdweather.evaluate.requests import EvaluateRequest, PredictRequest
from hvdweather.evaluate.runmodel import CHECKPOINTS

_CHECKPOINT = click.option("--checkpoint", type=click.Choice(CHECKPOINTS),
                           default=field_default(PredictRequest, "checkpoint"), show_default=True,
                           help="Which of the run's checkpoints: best (lowest val loss) or last.")
_THREADS = click.option("--threads-per-worker", type=click.IntRange(min=0),
                        default=field_default(PredictRequest, "threads_per_worker"), show_default=True,
                        help="TensorFlow threads per process; 0 = cores on the node / its processes. "
                             "Equal counts give bit-equal probabilities across launches.")


@click.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--out", default=field_default(PredictRequest, "out"), show_default=True, type=click.Path(),
              help="CSV: path, predicted_class, probability, topK_class/topK_probability..., error.")
@click.option("--top-k", type=click.IntRange(min=1), default=field_default(PredictRequest, "top_k"),
              show_default=True, help="Most probable classes listed per image (at most the model's classes).")
@click.option("--batch-size", type=click.IntRange(min=1), default=field_default(PredictRequest, "batch_size"),
              show_default=True, help="Images per forward pass, per process.")
@_CHECKPOINT
@click.option("--grid", default=field_default(PredictRequest, "grid"), type=click.Path(),
              help="Also write a contact sheet (PNG) of up to 64 images with their predicted class and probability.")
@_THREADS
@onednn_option()
def predict_command(**flags) -> None:
    """Class probabilities for IMAGES (files and/or folders, searched recursively) with MODEL (a run
    directory, or a .keras file in one). Run alone, or as `horovodrun -np N hvdweather-predict ...`."""
    from hvdweather.evaluate.runmodel import check_out_file, check_top_k, find_images, resolve_model

    request = PredictRequest(**flags)
    check_top_k(request.top_k, resolve_model(request.model, request.checkpoint).class_names)  # errors in ~1 s
    files = find_images(request.images)  # walked once: predict gets the files, not the folders again
    check_out_file(request.out)
    if request.grid:
        check_out_file(request.grid, "--grid")
    from hvdweather.evaluate.predict import run_predict  # deferred: it imports TensorFlow (after the checks)

    run_predict(PredictRequest(**{**flags, "images": tuple(files)}))


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@_CHECKPOINT
@click.option("--data", default=field_default(EvaluateRequest, "data"), type=click.Path(),
              help="A labelled class-folder set (class names matched by name) instead of the run's own test "
                   "split (split.csv).")
@click.option("--data-root", default=field_default(EvaluateRequest, "data_root"), type=click.Path(),
              help="Where the run's data set lies now (moved, or copied with the run to another machine): its "
                   "test split is read under this folder. [default: where config.json says, else the same "
                   "place relative to RUN_DIR]")
@click.option("--out", default=field_default(EvaluateRequest, "out"), type=click.Path(file_okay=False),
              help="Report folder. [default: RUN_DIR/eval-<test|data name>-<checkpoint>]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per forward pass, per process. [default: the run's --batch-size]")
@_THREADS
@onednn_option()
def evaluate_command(**flags) -> None:
    """Re-evaluate a run: classification report, confusion matrix, top-k accuracy, misclassified.png,
    examples.png and predictions.csv. Run alone, or under horovodrun / mpirun."""
    from hvdweather.evaluate.runmodel import check_run_dir

    request = EvaluateRequest(**{**flags, "batch_size": flags["batch_size"] or 0})
    check_run_dir(request.run_dir, request.checkpoint)  # before TensorFlow loads: a wrong RUN_DIR errs in ~1 s
    from hvdweather.evaluate.evaluation import run_evaluate  # deferred: it imports TensorFlow

    run_evaluate(request)


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Export folder; the SavedModel goes to OUT/<version>/ (1, or the next free number).")
@_CHECKPOINT
@onednn_option()
def export_command(run_dir: str, out: str, checkpoint: str) -> None:
    """A TF SavedModel for TF Serving: encoded JPEG/PNG bytes in, class probabilities and names out."""
    from hvdweather.errors import check_output_dir
    from hvdweather.evaluate.runmodel import check_run_dir

    check_run_dir(run_dir, checkpoint)  # before TensorFlow loads: errors in ~1 s
    check_output_dir(out)
    from hvdweather.evaluate.export import run_export  # deferred: it imports TensorFlow (after the checks)

    run_export(run_dir, out, checkpoint)
