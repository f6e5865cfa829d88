"""Record where a rank runs, then run a Python script as that rank: for scripts that do not record it.

    horovodrun -np 2 -H hostA:1,hostB:1 python tests/cluster/where.py DIR SCRIPT ARG...

Writes DIR/rank-<rank>.txt holding platform.node() (on namespace hosts: the host's own hostname), then
runs SCRIPT with ARG... as its argv, in this process, so the launcher's rank is the script's.
"""
from __future__ import annotations

import os
import platform
import runpy
import sys
from pathlib import Path


def launcher_rank() -> str:
    """The rank the launcher gave this process: OpenMPI (horovodrun's MPI mode, mpirun), Gloo, PMIx (srun)."""
    for name in ("OMPI_COMM_WORLD_RANK", "HOROVOD_RANK", "PMIX_RANK"):
        if os.environ.get(name, "").isdigit():
            return os.environ[name]
    raise SystemExit("where.py: not started by a launcher (no OMPI_COMM_WORLD_RANK, HOROVOD_RANK, PMIX_RANK)")


if __name__ == "__main__":
    out, script, *args = sys.argv[1:]
    Path(out, f"rank-{launcher_rank()}.txt").write_text(platform.node() + "\n")
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
