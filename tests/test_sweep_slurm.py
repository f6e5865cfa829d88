"""The study grid as a SLURM job array (jobs/slurm/sweep_array.sbatch) on the session's single-node test
cluster (tests/cluster/slurm.py, the `slurm` fixture), collected by sweep_collect.sbatch into
hvdweather-sweep's table.

    make install-slurm && .venv/bin/pytest tests/test_sweep_slurm.py
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cluster.slurm import REPO, SlurmCluster

JOBS = REPO / "jobs"


@pytest.mark.slurm
@pytest.mark.multiprocess
@pytest.mark.timeout(600)
def test_sweep_array_two_cells_and_collect(slurm: SlurmCluster, job_data: Path, tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"base: {{data: {job_data}, epochs: 1, batch-size: 4, val-split: 0.2, test-split: 0.2}}\n"
                    "axes: {lr: [0.01, 0.02]}\n")
    study = tmp_path / "study"
    array_id, code = slurm.submit(JOBS / "slurm" / "sweep_array.sbatch", str(grid), str(study),
                                  sbatch=("--array=0-1", "-N1", "-n1", "-c1"), cwd=tmp_path, timeout=500)
    slurm.assert_completed(array_id, code)
    for name in ("lr-0.01", "lr-0.02"):
        record = json.loads((study / name / "job.json").read_text())
        assert record["exit_status"] == 0 and record["command"][:2] == ["srun", "--mpi=pmix"]
        assert (study / name / "report" / "test_metrics.json").is_file()
        assert any((study / name / "tensorboard").iterdir())
    collect_id, code = slurm.submit(JOBS / "slurm" / "sweep_collect.sbatch", str(grid), str(study),
                                    sbatch=(f"--dependency=afterany:{array_id}",), cwd=tmp_path)
    slurm.assert_completed(collect_id, code)
    with open(study / "compare.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["run"], r["status"], r["lr"], r["world_size"]) for r in rows] == [
        ("lr-0.01", "ok", "0.01", "1"), ("lr-0.02", "ok", "0.02", "1")]
    assert (study / "curves.png").exists() and (study / "test_accuracy.png").exists()
    assert "compared 2 run(s)" in slurm.output(collect_id)
