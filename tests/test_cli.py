"""Bad input: one line naming the flag or file, exit code 2, before any training starts."""
from __future__ import annotations

import click
import pytest

from conftest import run_cli
from hvdweather import host
from hvdweather.cli import data_group, run_command, train_command


@pytest.fixture(autouse=True)
def _own_onednn_environment(monkeypatch):
    """Commands parsed in this process apply --onednn to os.environ: give it back after each test."""
    for name in (host.ONEDNN_ENV, host.ONEDNN_MODE_ENV):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def _train(capsys, *args: str) -> tuple[int, str]:
    code = run_command(train_command, "hvdweather-train", list(args))
    return code, capsys.readouterr().err


def _one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("hvdweather-train: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("args,needles", [
    (["--data", "/nonexistent/weather"], ["--data /nonexistent/weather", "not found"]),
    (["--epochs", "0"], ["--epochs", "positive"]),
    (["--batch-size", "-3"], ["--batch-size"]),
    (["--lr", "-1"], ["--lr"]),
    (["--epochs", "three"], ["--epochs", "not a valid integer"]),
    (["--lr", "fast"], ["--lr", "not a valid float"]),
    (["--image-size", "64"], ["--image-size 64", "253"]),
    (["--val-split", "0.6", "--test-split", "0.5"], ["--val-split", "--test-split"]),
    (["--replicas", "2"], ["--replicas 2 needs --strategy mirrored"]),
    (["--resume", "--overwrite"], ["--resume and --overwrite"]),
    ([], ["--data is required"]),
])
def test_bad_flags(capsys, tiny_data, tmp_path, args, needles):
    base = [] if not args or args[0] == "--data" else ["--data", str(tiny_data)]
    code, err = _train(capsys, *base, *args, "--out", str(tmp_path / "run"))
    assert code == 2
    _one_line_error(err, *needles)


def test_bfloat16_is_refused_on_a_cpu_without_native_bf16(capsys, tiny_data, tmp_path, monkeypatch):
    """Before any work, in one line naming the flag and what to do (flags as on an AVX2-only EPYC). Proven to
    fail: without the native-BF16 check in config.validate the run starts."""
    monkeypatch.setattr(host, "cpu_flags", lambda: ["avx2"])
    code, err = _train(capsys, "--data", str(tiny_data), "--precision", "bfloat16", "--out", str(tmp_path / "r"))
    assert code == 2
    _one_line_error(err, "--precision bfloat16", "AVX512_BF16 or AMX", "--precision auto or float32")
    assert not (tmp_path / "r").exists()


def test_empty_and_single_class_data(capsys, tmp_path, tiny_data):
    (tmp_path / "empty").mkdir()
    code, err = _train(capsys, "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r"))
    assert code == 2
    _one_line_error(err, "no images found")
    one = tmp_path / "one"
    (one / "rain").mkdir(parents=True)
    (one / "rain" / "a.png").write_bytes(next((tiny_data / "rainbow").iterdir()).read_bytes())
    code, err = _train(capsys, "--data", str(one), "--out", str(tmp_path / "r"))
    assert code == 2
    _one_line_error(err, "only 1 class", "at least 2")


def test_unwritable_output(capsys, tmp_path, tiny_data):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # a path under a regular file cannot be created, even by root
    code, err = _train(capsys, "--data", str(tiny_data), "--out", str(blocker / "run"))
    assert code == 2
    _one_line_error(err, f"--out {blocker / 'run'}", "not writable")


def test_config_file_errors_are_one_line(capsys, tmp_path, tiny_data):
    (tmp_path / "c.yaml").write_text("epochz: 3\n")
    code, err = _train(capsys, "--config", str(tmp_path / "c.yaml"), "--data", str(tiny_data))
    assert code == 2
    _one_line_error(err, "--config", "epochz")


def test_synth_rejects_zero_images(capsys, tmp_path):
    code = run_command(data_group, "hvdweather-data", ["synth", str(tmp_path / "d"), "--images-per-class", "0"])
    assert code == 2
    assert "--images-per-class" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_errors_found_after_the_scan_still_come_before_training(tmp_path, tiny_data, dirty_data):
    """Batch larger than a rank's shard, and a class too small for the split: exit 2, one line. Batch 20
    fits the 20 training images dirty_data's folders promise (tests/test_checks.py refuses larger ones
    before the scan); the scan drops its 2 broken files, leaving 18."""
    result = run_cli("hvdweather-train", "--data", str(dirty_data), "--out", str(tmp_path / "r1"),
                     "--batch-size", "20", "--verbose", "0")
    assert result.returncode == 2, result.stderr
    assert "--batch-size 20" in result.stderr and "only 18 image(s)" in result.stderr
    assert "lower --batch-size" in result.stderr
    assert not (tmp_path / "r1" / "metrics.jsonl").exists()
    result = run_cli("hvdweather-train", "--data", str(tiny_data), "--out", str(tmp_path / "r2"),
                     "--val-split", "0.45", "--test-split", "0.44", "--batch-size", "1", "--verbose", "0")
    assert result.returncode == 2, result.stderr
    assert "class 'fogsmog' has 8 usable image(s), too few" in result.stderr.splitlines()[-1]


def test_help_says_batch_size_is_per_worker():
    result = run_cli("hvdweather-train", "--help")
    assert result.returncode == 0
    assert "PER WORKER" in result.stdout and "horovodrun" in result.stdout


def _option_helps(command) -> dict[str, str]:
    return {param.opts[0]: param.help or "" for param in command.params if isinstance(param, click.Option)}


def test_help_marks_data_required_and_writes_defaults_one_way():
    helps = _option_helps(train_command)
    assert helps["--data"].startswith("[required]")
    for flag, text in helps.items():
        if "[" in text.replace("[required]", ""):
            assert "[default: " in text, f"{flag}: {text}"
    assert "always print" in helps["--verbose"]  # --verbose 0 is not called silent


def test_synth_options_have_help():
    synth = data_group.commands["synth"]
    assert all(_option_helps(synth).values())


def test_resume_of_nothing_and_a_run_in_the_way(capsys, tmp_path, tiny_data):
    code, err = _train(capsys, "--out", str(tmp_path / "nothing"), "--resume")
    assert code == 2
    _one_line_error(err, "--resume", "no run to resume")
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.json").write_text('{"config": {}}')
    code, err = _train(capsys, "--data", str(tiny_data), "--out", str(run))
    assert code == 2
    _one_line_error(err, f"--out {run} already holds a run", "--resume", "--overwrite")


@pytest.mark.timeout(300)
def test_a_refused_run_leaves_nothing_that_blocks_the_corrected_one(tmp_path, dirty_data):
    """Refused after the scan (a batch larger than the shard once the broken files are dropped, see
    test_errors_found_after_the_scan...): its split.csv and skipped.csv are no run."""
    out = tmp_path / "run"
    args = ("hvdweather-train", "--data", str(dirty_data), "--out", str(out), "--epochs", "1", "--verbose", "0")
    refused = run_cli(*args, "--batch-size", "20", timeout=120)
    assert refused.returncode == 2 and "lower --batch-size" in refused.stderr
    assert (out / "split.csv").exists() and not (out / "config.json").exists()
    resumed = run_cli("hvdweather-train", "--out", str(out), "--resume", timeout=120)
    assert resumed.returncode == 2 and "no run to resume" in resumed.stderr
    fixed = run_cli(*args, "--batch-size", "4", timeout=240)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert (out / "config.json").exists()


# Every console script that imports TensorFlow, and how to reach its command.
TF_COMMANDS = {"hvdweather-train": "cli.train_command", "hvdweather-predict": "cli.predict_command",
               "hvdweather-evaluate": "cli.evaluate_command", "hvdweather-export": "cli.export_command",
               "hvdweather-prepare": "cli.prepare_command",
               **{f"hvdweather-bench {name}": f"cli.bench_group.commands[{name!r}]"
                  for name in ("pipeline", "scaling", "layers", "inference", "eda", "models", "knobs")}}
PARSE_ONLY = """
import json, os, sys
import click
from hvdweather import cli
given = json.loads(sys.argv[1])
found = {}
for prog, command in {COMMANDS}.items():
    for name in ("TF_ENABLE_ONEDNN_OPTS", "HVDWEATHER_ONEDNN"):
        os.environ.pop(name, None)
    if given["env"] is not None:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = given["env"]
    try:  # parsing alone: the eager --onednn applies before the missing arguments are noticed
        command.make_context(prog, list(given["argv"]))  # click consumes the list it parses
    except click.UsageError:
        pass
    found[prog] = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
print(json.dumps({"values": found, "tensorflow": "tensorflow" in sys.modules}))
""".replace("COMMANDS", ", ".join(f"{prog!r}: {command}" for prog, command in TF_COMMANDS.items()))


@pytest.mark.parametrize("flag, env, expected", [(None, None, "1"), (None, "0", "0"), ("off", None, "0"),
                                                 ("on", "0", "1"), ("auto", "1", None)])
def test_every_tensorflow_console_script_applies_onednn_while_parsing(flag, env, expected):
    """--onednn on every script that imports TensorFlow, applied while the flags are parsed (so before the
    import, in every rank: each parses the same argv): default on, the user's variable wins over the
    default, the flag over the variable. Proven to fail: dropping @onednn_option() from one command."""
    import json
    import subprocess
    import sys

    given = {"env": env, "argv": ["--onednn", flag] if flag else []}
    out = subprocess.run([sys.executable, "-c", PARSE_ONLY, json.dumps(given)], capture_output=True, text=True,
                         timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["values"] == {prog: expected for prog in TF_COMMANDS}, out.stderr[-2000:]
    assert not result["tensorflow"]


def test_only_collect_among_the_benchmarks_goes_without_onednn():
    """A new benchmark subcommand that imports TensorFlow must take --onednn too (add it to TF_COMMANDS)."""
    from hvdweather import cli

    without = [name for name, command in cli.bench_group.commands.items()
               if "onednn" not in {param.name for param in command.params}]
    assert without == ["collect"]


RAN_AS = """
import sys
from hvdweather import cli
code = cli.run_command(cli.export_command, "hvdweather-export", sys.argv[1:])
before = "tensorflow" in sys.modules
import tensorflow  # after the command: it refused a missing run before TensorFlow loaded
from hvdweather.host import onednn_state
print(code, before, onednn_state())
"""


@pytest.mark.parametrize("flag", [None, "off", "auto"])
def test_tensorflow_runs_what_onednn_asked(flag, tmp_path):
    """TensorFlow itself (IsMklEnabled, loaded after hvdweather-export parsed its flags and refused a missing
    run, before TensorFlow loads): on by default even on an AVX2-only CPU, off with --onednn off,
    TensorFlow's CPU rule with auto."""
    import os
    import subprocess
    import sys

    from hvdweather import host

    argv = (["--onednn", flag] if flag else []) + [str(tmp_path / "missing"), "--out", str(tmp_path / "out")]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "HVDWEATHER_ONEDNN")}
    out = subprocess.run([sys.executable, "-c", RAN_AS, *argv], capture_output=True, text=True, env=env, timeout=180)
    tf_default = "on" if set(host.cpu_flags()) & set(host.ONEDNN_DEFAULT_ON_FLAGS) else "off"
    expected = {None: "on", "off": "off", "auto": tf_default}[flag]
    assert out.stdout.strip().splitlines()[-1] == f"2 False {expected}", out.stderr[-2000:]


@pytest.mark.multiprocess
@pytest.mark.timeout(180)
@pytest.mark.parametrize("launcher", ["horovodrun", "mpirun"])
def test_an_input_error_under_a_launcher_is_printed_once(tmp_path, launcher):
    """Issue 25: under horovodrun every rank printed the same one-line error. Launched as a user does, output
    to a file: the line once, exit code 2 as before. Proven to fail (two lines) against the code before."""
    import os
    import subprocess

    from conftest import BIN, MPIRUN

    starter = [str(BIN / "horovodrun"), "-np", "2"] if launcher == "horovodrun" else MPIRUN
    log = tmp_path / "log"
    with open(log, "w") as handle:
        code = subprocess.call([*starter, str(BIN / "hvdweather-train"), "--data", str(tmp_path / "missing"),
                                "--out", str(tmp_path / "run")], stdout=handle, stderr=subprocess.STDOUT,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=150)
    text = log.read_text()
    assert code == 2, text
    assert text.count("hvdweather-train: error: --data") == 1, text


def test_synth_over_an_existing_set_is_refused_unless_overwrite(tmp_path):
    """Issue 25: `hvdweather-data synth` into a folder holding a set left the old images beside the new
    ones (40 then 5 per class gave 40). Proven to fail (rc 0, 8 images left) against the code before."""
    out = tmp_path / "d"
    first = run_cli("hvdweather-data", "synth", str(out), "--images-per-class", "4", timeout=60)
    assert first.returncode == 0, first.stderr
    again = run_cli("hvdweather-data", "synth", str(out), "--images-per-class", "2", timeout=60)
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert f"OUT {out} is not empty; pass --overwrite" in again.stderr
    assert len(list((out / "rain").iterdir())) == 4
    replaced = run_cli("hvdweather-data", "synth", str(out), "--images-per-class", "2", "--overwrite", timeout=60)
    assert replaced.returncode == 0, replaced.stderr
    assert sorted(p.name for p in (out / "rain").iterdir())[0].startswith("rain_0000")
    assert len(list(out.glob("*/*"))) == 22
    (out / "rain" / "my_photo.jpg").write_bytes(b"mine")  # not the command's: --overwrite removes nothing
    refused = run_cli("hvdweather-data", "synth", str(out), "--overwrite", timeout=60)
    assert refused.returncode == 2 and "my_photo.jpg is not part of one" in refused.stderr
    assert len(list(out.glob("*/*"))) == 23


IMPORT_ONLY = """
import importlib, json, sys
found = {}
for target in json.loads(sys.argv[1]):
    module, _, name = target.partition(":")
    getattr(importlib.import_module(module), name) if name else importlib.import_module(module)
    found[target] = sorted(m for m in ("tensorflow", "horovod", "torch") if m in sys.modules)
print(json.dumps(found))
"""


def test_every_console_script_and_cli_module_imports_without_tensorflow():
    """--help and flag errors answer in a second only while the commands' modules stay TensorFlow-free
    (issue 23: the defaults now come from the spec dataclasses, whose modules the CLI imports). Each
    console_script's target from setup.cfg, and every hvdweather.cli module, imported alone."""
    import configparser
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[1]
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg")
    scripts = [line.split("=", 1)[1].strip() for line in
               setup["options.entry_points"]["console_scripts"].strip().splitlines()]
    modules = [f"hvdweather.cli.{path.stem}" for path in sorted((root / "hvdweather" / "cli").glob("*.py"))
               if path.stem != "__init__"]
    assert len(scripts) == 10 and len(modules) >= 7
    for target in scripts + modules:  # one process each: an earlier import must not hide a later one's
        out = subprocess.run([sys.executable, "-c", IMPORT_ONLY, json.dumps([target])], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert json.loads(out.stdout.strip().splitlines()[-1]) == {target: []}, target


def test_flag_defaults_are_the_dataclasses():
    """Issue 23: a flag's default lives in its dataclass only. Every option named after a field of its
    command's spec or request shows that field's default. One differs and is left out: bench inference's
    --threads writes all cores as 'all', InferenceSpec as 0."""
    from hvdweather.bench.eda import EdaBenchSpec
    from hvdweather.bench.inference import InferenceSpec
    from hvdweather.bench.knobs import KnobsSpec
    from hvdweather.bench.layers import LayersBenchSpec
    from hvdweather.bench.models import ModelsSpec
    from hvdweather.bench.pipeline import PipelineSpec
    from hvdweather.bench.scaling import ScalingSpec
    from hvdweather.cli import bench_group, predict_command, sweep_command
    from hvdweather.cli.options import field_default
    from hvdweather.evaluate.requests import PredictRequest
    from hvdweather.study.sweep import SweepSpec

    specs = {bench_group.commands["pipeline"]: PipelineSpec, bench_group.commands["scaling"]: ScalingSpec,
             bench_group.commands["layers"]: LayersBenchSpec, bench_group.commands["inference"]: InferenceSpec,
             bench_group.commands["eda"]: EdaBenchSpec, bench_group.commands["models"]: ModelsSpec,
             bench_group.commands["knobs"]: KnobsSpec, predict_command: PredictRequest, sweep_command: SweepSpec}
    checked = 0
    for command, spec in specs.items():
        fields = {field: field for field in spec.__dataclass_fields__} | {"with_torch": "torch"}
        for param in command.params:
            given = isinstance(param.default, (bool, int, float, str))  # not None, not click's UNSET
            if param.name in fields and given and (command.name, param.name) != ("inference", "threads"):
                assert param.default == field_default(spec, fields[param.name]), (command.name, param.name)
                checked += 1
    assert checked >= 50
    assert field_default(ScalingSpec, "workers") == "1,2" and field_default(ScalingSpec, "per_run_timeout_s") == 900
    with pytest.raises(TypeError):
        field_default(ScalingSpec, "data")
