"""Rank 1 fails while rank 0 waits in a collective: the launcher must end the whole job."""
import sys

import click

from hvdweather.cli import run_command


@click.command()
def main() -> None:
    from hvdweather.distributed import HorovodBackend

    backend = HorovodBackend(threads_per_worker=1)
    if backend.runtime.rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    backend.allgather_object("rank 0 waits here; without the failure handling it would wait forever")


sys.exit(run_command(main, "failing-rank"))
