"""hvdweather.bench.collect: a scaling array's run directories -> the scaling benchmark's results and tables.

The real array runs in tests/test_jobs.py; here the task directories are written by hand so that the
failed, missing and unreadable cases can be checked in a second.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hvdweather.bench.collect import collect_array
from hvdweather.cli import bench_group, run_command
from hvdweather.config import ConfigError

GRID = {"grid_workers": [1, 2], "grid_batch_sizes": [8]}


def write_task(array_dir: Path, task: int, workers: int, exit_status: int | None, epochs: int = 2) -> Path:
    """What scaling_array.sbatch and hvdweather-train leave in one task's run directory."""
    run = array_dir / "runs" / f"horovod-w{workers}-b8"
    run.mkdir(parents=True)
    record = {"ranks": workers, "hosts": ["node1"], "command_line": "srun ... hvdweather-train ...",
              "versions": {"tensorflow-cpu": "2.15.1", "horovod": "0.28.1",
                           "openmpi": "mpirun (Open MPI) 4.1.4"},
              "scheduler": {"name": "slurm", "SLURM_NTASKS": "2", "SLURM_CPUS_PER_TASK": "1",
                            "output_file": f"/out/hvdw-scaling-7_{task}.out"},
              "scaling": {"array_task": task, "strategy": "horovod", "workers": workers,
                          "per_worker_batch_size": 8, "threads_per_worker": 1, **GRID}}
    if exit_status is not None:
        record.update(exit_status=exit_status, wall_time_s=12.5)
    (run / "job.json").write_text(json.dumps(record))
    config = {"data": "/data", "epochs": epochs, "image_size": 256, "seed": 42, "target_accuracy": 0.5}
    (run / "config.json").write_text(json.dumps({"config": config}))
    rows = [{"epoch": e + 1, "epoch_time_s": 3.0 + e, "train_time_s": 2.0 + e, "images_per_s": 40.0 * workers,
             "val_accuracy": 0.3 * (e + 1), "world_size": workers, "strategy": "horovod"}
            for e in range(epochs)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_collect_builds_the_benchmark_tables_from_task_directories(tmp_path: Path) -> None:
    write_task(tmp_path, 0, 1, 0)
    write_task(tmp_path, 1, 2, 0)
    results = collect_array(tmp_path)
    assert [(r["workers"], r["status"]) for r in results] == [(1, "ok"), (2, "ok")]
    assert results[1]["images_per_s"] == 80.0 and results[1]["timed_epochs"] == 1  # epoch 1 left out
    assert results[0]["log"] == "/out/hvdw-scaling-7_0.out" and results[0]["cores"] == 2
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(results))
    table = (tmp_path / "scaling.md").read_text()
    assert "| horovod x 2 | 2.00 |" in table  # speed-up row: 80 / 40 images/s
    machine = json.loads((tmp_path / "machine.json").read_text())
    assert machine["versions"]["tensorflow"] == "2.15.1" and machine["host"] == "node1"


def test_failed_and_missing_cells_become_rows_not_gaps(tmp_path: Path) -> None:
    write_task(tmp_path, 1, 2, 1)  # task 0 (1 worker) never ran; task 1 exited 1
    results = collect_array(tmp_path)
    assert [(r["workers"], r["status"]) for r in results] == [(1, "missing"), (2, "failed")]
    assert "exit status 1" in results[1]["error"]
    assert "## Failed runs" in (tmp_path / "scaling.md").read_text()


def test_a_task_with_the_wrong_world_size_is_failed(tmp_path: Path) -> None:
    run = write_task(tmp_path, 1, 2, 0)
    text = (run / "metrics.jsonl").read_text().replace('"world_size": 2', '"world_size": 1')
    (run / "metrics.jsonl").write_text(text)
    (result,) = [r for r in collect_array(tmp_path) if r["workers"] == 2]
    assert result["status"] == "failed" and "world_size 1" in result["error"]


def test_bad_array_directory_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError, match="no runs/\\*/job.json"):
        collect_array(tmp_path)
    assert run_command(bench_group, "hvdweather-bench", ["collect", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("hvdweather-bench: error:") and "not a directory" in err


@pytest.mark.parametrize("key", ["batch_size", "per_worker_batch_size"])
def test_old_and_new_config_batch_keys_both_collect(tmp_path: Path, key: str) -> None:
    """Runs written before the config field's rename say batch_size; both must be read, and checked."""
    for task, workers in ((0, 1), (1, 2)):
        run = write_task(tmp_path, task, workers, 0)
        config = json.loads((run / "config.json").read_text())
        config["config"][key] = 8 if workers == 1 else 16  # the 2-worker task ran at the wrong batch
        (run / "config.json").write_text(json.dumps(config))
    results = collect_array(tmp_path)
    assert [r["status"] for r in results] == ["ok", "failed"]
    assert "config.json says per-worker batch 16, expected 8" in results[1]["error"]


def test_machine_header_says_when_cpu_flags_were_not_recorded(tmp_path: Path) -> None:
    write_task(tmp_path, 0, 1, 0)
    collect_array(tmp_path)
    assert "flags unknown" in (tmp_path / "scaling.md").read_text()
    assert json.loads((tmp_path / "machine.json").read_text())["cpu_flags"] is None
