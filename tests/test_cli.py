"""Bad input: one line naming the flag or file, exit code 2, before any training starts."""
from __future__ import annotations

import click
import pytest

from conftest import run_cli
from hvdweather.cli import data_group, run_command, train_command


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


@pytest.mark.parametrize("given,expected", [(None, "1"), ("0", "0"), ("1", "1")])
def test_every_console_script_turns_onednn_on_unless_the_user_set_it(given, expected):
    """Set before TensorFlow is imported, so ranks started by horovodrun/mpirun/srun inherit it."""
    import os
    import subprocess
    import sys

    code = ("import os, sys\nfrom hvdweather import cli\nsys.argv = ['hvdweather-data', '--help']\n"
            "try:\n    cli.data_main()\nexcept SystemExit:\n    pass\n"
            "print('tf loaded' if 'tensorflow' in sys.modules else 'tf not loaded',\n"
            "      os.environ['TF_ENABLE_ONEDNN_OPTS'])")
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if given is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = given
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == f"tf not loaded {expected}", out.stderr[-2000:]


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
