"""Command-line entry points, one click module per console script or group (train, data, bench, eda,
models, study); run.py runs them, options.py holds what they share. Heavy imports (TensorFlow, Horovod)
happen inside the commands, so `--help` and flag errors answer at once.

    hvdweather-data synth OUT --images-per-class 40 --seed 0
    horovodrun -np 2 hvdweather-train --data OUT --out runs/demo
    hvdweather-bench pipeline --data OUT

The console_scripts in setup.cfg name the *_main functions below (hvdweather.cli:train_main, ...).
"""
from __future__ import annotations

from hvdweather.cli.bench import bench_group
from hvdweather.cli.data import data_group
from hvdweather.cli.eda import eda_command, prepare_command
from hvdweather.cli.models import evaluate_command, export_command, predict_command
from hvdweather.cli.options import onednn_option
from hvdweather.cli.run import Interrupted, console_script, run_command
from hvdweather.cli.study import compare_command, sweep_command
from hvdweather.cli.train import SavedEpochs, say_on_sigterm, train_command, train_config

__all__ = ["Interrupted", "SavedEpochs", "bench_group", "compare_command", "data_group", "eda_command",
           "evaluate_command", "export_command", "onednn_option", "predict_command", "prepare_command",
           "run_command", "say_on_sigterm", "sweep_command", "train_command", "train_config"]

train_main = console_script(train_command, "hvdweather-train")
data_main = console_script(data_group, "hvdweather-data")
bench_main = console_script(bench_group, "hvdweather-bench")
eda_main = console_script(eda_command, "hvdweather-eda")
prepare_main = console_script(prepare_command, "hvdweather-prepare")
predict_main = console_script(predict_command, "hvdweather-predict")
evaluate_main = console_script(evaluate_command, "hvdweather-evaluate")
export_main = console_script(export_command, "hvdweather-export")
compare_main = console_script(compare_command, "hvdweather-compare")
sweep_main = console_script(sweep_command, "hvdweather-sweep")
