"""Host facts and run-directory reading: TensorFlow-free, one definition each."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import BIN
from hvdweather import host, runfiles


def test_host_facts_are_read_without_tensorflow():
    code = ("import sys; from hvdweather import host, runfiles, geometry, config; "
            "host.versions(); host.cpu_flags(); host.load_average(); "
            "assert 'tensorflow' not in sys.modules, 'TF imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_versions_and_cores():
    found = host.versions()
    assert found["python"].count(".") == 2 and "numpy" in found and "tensorflow-cpu" in found
    assert 1 <= host.available_cores()
    assert set(host.cpu_flags()) <= set(host.SPEED_FLAGS)


def test_load_average_is_three_numbers_or_empty(monkeypatch):
    values = host.load_average().split()
    assert len(values) == 3 and all(float(v) >= 0 for v in values)

    def unavailable():
        raise OSError("no load average here")

    monkeypatch.setattr(host.os, "getloadavg", unavailable)
    assert host.load_average() == ""


def test_run_files_are_found_and_cleared_without_touching_others(tmp_path):
    assert runfiles.run_files_in(tmp_path) == []
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n\n{"epoch": 2}\n')
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "curves.png").write_bytes(b"x")
    (tmp_path / "mine.txt").write_text("keep")
    assert runfiles.run_files_in(tmp_path) == ["metrics.jsonl", "report"]
    assert [r["epoch"] for r in runfiles.read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    runfiles.clear_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
    assert runfiles.read_json(tmp_path / "config.json") is None


def test_launched_rank_from_each_launchers_variables(monkeypatch):
    for name in ("OMPI_COMM_WORLD_RANK", "HOROVOD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_STEP_ID", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert host.launched_rank() == 0
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert host.launched_rank() == 0  # a batch script's SLURM_PROCID is not a step's rank
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    assert host.launched_rank() == 3
    monkeypatch.setenv("HOROVOD_RANK", "1")
    assert host.launched_rank() == 1


def test_only_the_xla_start_lines_are_dropped():
    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1796396012.141306    7123 device_compiler.h:186] Compiled cluster using XLA!  This line is "
            "logged at most once for the lifetime of the process.\n"
            "2026-12-04 14:53:32.142721: E external/local_xla/xla/stream_executor/stream_executor_internal.h:177] "
            "SetPriority unimplemented for this stream.\n"
            "2026-12-04 14:53:32.142721: E tensorflow/core/something.cc:1] a real error\n"
            "Compiled cluster using XLA! said by someone else\n")
    assert host.drop_xla_start_lines(text) == ("2026-12-04 14:53:32.142721: E tensorflow/core/something.cc:1] a real "
                                               "error\nCompiled cluster using XLA! said by someone else\n")


@pytest.mark.multiprocess
@pytest.mark.timeout(300)
def test_a_horovodrun_log_has_no_xla_start_lines(tiny_data, tmp_path):
    """`horovodrun -np 2 hvdweather-train ... > log 2>&1` as a user runs it: before the fix every rank printed
    the three lines of host.XLA_START_LINES (proven against the code before the fix); now none."""
    log = tmp_path / "log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log, "w") as handle:
        code = subprocess.call([str(BIN / "horovodrun"), "-np", "2", str(BIN / "hvdweather-train"), "--data",
                                str(tiny_data), "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "4",
                                "--verbose", "2"], stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=280)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "hvdweather: horovod, 2 worker(s)" in text and "test accuracy" in text
    for line in ("All log messages before absl::InitializeLog()", "Compiled cluster using XLA!",
                 "SetPriority unimplemented"):
        assert line not in text, text[-3000:]


@pytest.fixture
def clean_onednn_env(monkeypatch):
    """No oneDNN variable set; monkeypatch restores the test process's own afterwards."""
    for name in (host.ONEDNN_ENV, host.ONEDNN_MODE_ENV, host.ONEDNN_ISA_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(host, "_onednn_request", {})
    return monkeypatch


@pytest.mark.parametrize("mode, value", [("on", "1"), ("off", "0"), ("auto", None)])
def test_an_explicit_onednn_mode_wins_over_the_environment(clean_onednn_env, mode, value):
    """Proven to fail: applying the flag with os.environ.setdefault leaves the user's 0 in place for 'on'."""
    clean_onednn_env.setenv(host.ONEDNN_ENV, "0" if mode == "on" else "1")
    assert host.apply_onednn(mode) == {"mode": mode, "source": "flag"}
    assert host.os.environ.get(host.ONEDNN_ENV) == value
    assert host.os.environ[host.ONEDNN_MODE_ENV] == mode  # what a child console script inherits
    assert host.onednn_request()["mode"] == mode


@pytest.mark.parametrize("given, mode", [("0", "off"), ("1", "on"), ("false", "off"), ("TRUE", "on")])
def test_without_the_flag_the_users_variable_wins(clean_onednn_env, given, mode):
    clean_onednn_env.setenv(host.ONEDNN_ENV, given)
    assert host.apply_onednn(None) == {"mode": mode, "source": "environment"}
    assert host.os.environ[host.ONEDNN_ENV] == given  # untouched


def test_default_is_on_and_a_parents_auto_is_inherited(clean_onednn_env):
    assert host.apply_onednn(None) == {"mode": "on", "source": "default"}
    assert host.os.environ[host.ONEDNN_ENV] == "1"
    clean_onednn_env.delenv(host.ONEDNN_ENV)
    clean_onednn_env.setenv(host.ONEDNN_MODE_ENV, "auto")  # a parent ran with --onednn auto
    assert host.apply_onednn(None) == {"mode": "auto", "source": "environment"}
    assert host.ONEDNN_ENV not in host.os.environ
    with pytest.raises(ValueError, match="--onednn"):
        host.apply_onednn("default")


def test_onednn_state_follows_tensorflows_default_policy_before_import(clean_onednn_env):
    """Without TensorFlow loaded: the variable, else TF 2.15's rule (on only with VNNI/BF16/AMX flags)."""
    clean_onednn_env.delitem(host.sys.modules, "tensorflow", raising=False)  # as before any import of it
    clean_onednn_env.setattr(host, "cpu_flags", lambda: ["avx2"])
    assert host.onednn_state() == "off"  # an AVX2-only CPU: what this package turns on by default
    clean_onednn_env.setattr(host, "cpu_flags", lambda: ["avx2", "avx512f", "avx512_vnni"])
    assert host.onednn_state() == "on"
    clean_onednn_env.setenv(host.ONEDNN_ENV, "0")
    assert host.onednn_state() == "off"
    clean_onednn_env.setenv(host.ONEDNN_ISA_ENV, "AVX2")
    assert host.onednn_request()["max_cpu_isa"] == "AVX2"


def test_native_bf16_needs_avx512_bf16_or_amx(monkeypatch):
    monkeypatch.setattr(host, "cpu_flags", lambda: ["avx2", "avx512f"])
    assert not host.native_bf16()
    monkeypatch.setattr(host, "cpu_flags", lambda: ["avx2", "amx_tile", "amx_bf16"])
    assert host.native_bf16()
