"""hvdweather.launch: finding a command and running it in its own process group with a log and a
timeout (every benchmark's measured process, every sweep cell). Fast: small shell commands only."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from hvdweather.config import ConfigError
from hvdweather.launch import executable, last_log_line, launch


def test_executable_prefers_a_given_path_then_this_python_then_path(tmp_path):
    assert executable("anything", "/bin/true") == "/bin/true"
    here = Path(sys.executable).name
    assert executable(here) == str(Path(sys.executable).parent / here)
    assert not (Path(sys.executable).parent / "sh").exists() and executable("sh") == shutil.which("sh")
    with pytest.raises(ConfigError, match="^--launcher /no/such/horovodrun: not found"):
        executable("horovodrun", "/no/such/horovodrun", "--launcher")
    with pytest.raises(ConfigError, match="no-such-tool-xyz not found next to .* or on PATH \\(install it\\)"):
        executable("no-such-tool-xyz", hint=" (install it)")


def test_launch_logs_the_command_and_its_output_and_returns_its_status(tmp_path):
    log = tmp_path / "run.log"
    code, wall_s = launch(["sh", "-c", "echo first; echo 'the last line' >&2; exit 3"], log, timeout_s=30)
    assert code == 3 and wall_s >= 0
    assert log.read_text().splitlines() == ["$ sh -c 'echo first; echo '\"'\"'the last line'\"'\"' >&2; exit 3'",
                                            "first", "the last line"]
    assert last_log_line(log) == "the last line"


def test_a_timeout_ends_the_whole_process_group_and_says_so(tmp_path):
    """The grandchild (as horovodrun's ranks are) ends too: the group is killed, not just the child.
    Proven by making _end_group a no-op once: the grandchild was then still alive."""
    log, pid_file = tmp_path / "run.log", tmp_path / "grandchild.pid"
    code, _ = launch(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], log, timeout_s=1,
                     timeout_words="--cell-timeout")
    assert code is None and log.read_text().rstrip().endswith("killed after --cell-timeout 1 s")
    grandchild = int(pid_file.read_text())
    for _ in range(100):  # the dead grandchild is reaped by init or a subreaper: give it a moment
        if not _alive(grandchild):
            break
        time.sleep(0.05)
    alive = _alive(grandchild)
    if alive:
        os.kill(grandchild, signal.SIGKILL)  # our own descendant, left by the bug this test is for
    assert not alive


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_command_that_cannot_start_is_status_127_in_the_log(tmp_path):
    log = tmp_path / "run.log"
    code, _ = launch([str(tmp_path / "missing")], log, timeout_s=5)
    assert code == 127 and last_log_line(log).startswith("cannot start:")
