"""Models through every path a user takes, through the console scripts' own commands, in one process:
hvdweather-train (one step, validation, the test report), -evaluate and -predict (each loads a checkpoint
afresh, so TensorFlow's graph optimiser rewrites new graphs) and -export. Run by tests/test_onednn_paths.py
with TF_ENABLE_ONEDNN_OPTS=1: TF 2.15's oneDNN fusions fail at run time, not at build time ("Fusion is not
implemented: [FusedBatchNorm,Tanh]"). Prints one JSON line per model: each command's exit code (a model's
later commands are skipped once one fails); tracebacks go to stderr.

    python tests/scripts/onednn_paths.py DATA OUT MODEL=IMAGE_SIZE [MODEL=IMAGE_SIZE ...]
"""
import json
import sys

from hvdweather import cli


def commands(model: str, size: str, data: str, out: str) -> list:
    run = f"{out}/run"
    return [
        (cli.train_command, "hvdweather-train",
         ["--data", data, "--out", run, "--model", model, "--image-size", size, "--epochs", "1",
          "--batch-size", "16", "--threads-per-worker", "1", "--verbose", "0", "--no-tensorboard"]),
        (cli.evaluate_command, "hvdweather-evaluate", [run, "--threads-per-worker", "1"]),
        (cli.predict_command, "hvdweather-predict", [run, data, "--out", f"{out}/predictions.csv",
                                                     "--threads-per-worker", "1"]),
        (cli.export_command, "hvdweather-export", [run, "--out", f"{out}/export"]),
    ]


data, root = sys.argv[1:3]
for item in sys.argv[3:]:
    model, size = item.split("=")
    codes = {}
    for command, prog, argv in commands(model, size, data, f"{root}/{model}"):
        codes[prog] = cli.run_command(command, prog, argv)
        if codes[prog]:
            break  # the later commands need what this one writes
    print(json.dumps({"model": model, "codes": codes}), flush=True)
