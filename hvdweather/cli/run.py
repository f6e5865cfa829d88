"""How every console script runs its click command: known input errors as one line and exit 2, Ctrl-C as
exit 130 with what is saved, anything else as a traceback and exit 1."""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

import click

from hvdweather.errors import INPUT_ERRORS
from hvdweather.host import say, say_primary

# Under horovodrun/mpirun/srun an input error (a missing --data, a batch too large) is the same on every
# rank. The first rank prints it at once; the others wait this long first, and the launcher, which ends
# the whole job as soon as one process exits non-zero, ends them before they print the line again. A rank
# that fails alone (its node lacks the data) still prints its line, this much later.
_OTHER_RANKS_WAIT_S = 10.0


class Interrupted(Exception):
    """Training stopped by Ctrl-C; the message says which epoch is saved and how to continue."""


def run_command(command: click.Command, prog: str, argv: list[str] | None = None) -> int:
    """Run a click command; known input errors become one line 'prog: error: ...' and exit 2.

    Any other exception prints its traceback and exits 1: under mpirun/horovodrun a rank that
    exits non-zero ends the whole job instead of leaving the others waiting in an allreduce.
    """
    try:
        command.main(args=argv, prog_name=prog, standalone_mode=False)
        return 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        return 130
    except Interrupted as exc:
        say_primary(f"{prog}: {exc}", sys.stderr)
        return 130
    except (*INPUT_ERRORS, click.UsageError, FileNotFoundError) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        say_primary(f"{prog}: error: {message}", sys.stderr, others_after_s=_OTHER_RANKS_WAIT_S)
        return 2
    except Exception:
        traceback.print_exc()
        say(f"{prog}: failed; see the traceback above", sys.stderr)
        return 1


def console_script(command: click.Command, prog: str) -> Callable[[], None]:
    """The function a console_scripts entry point calls: run `command` as `prog`, exit with its code."""
    def entry() -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ info lines drown the progress bar
        sys.exit(run_command(command, prog))

    return entry
