"""hvdweather-train that holds inside an epoch until the test acts, so that a kill (or a host joining)
lands inside that epoch by construction, never by timing. After step STEP of epoch EPOCH, each holding
process makes a FIFO MARK.<pid>.go, writes MARK.<pid> (JSON: pid, primary, host) and blocks opening the
FIFO: no timer, no polling. The test then kills it, signals it, or writes to the FIFO to let it go on.
Each process holds at most once, the first time it passes that step (an elastic survivor that replays
the epoch in its next world goes through). Nothing else changes: the hold wraps one callback method, the
command line is hvdweather-train's own (hvdweather.cli), oneDNN set as the console script sets it.

    [horovodrun ...] python tests/scripts/hold_in_epoch.py EPOCH STEP MARK WHO -- --data D --out R ...

WHO: all; primary (rank 0 of the world at that moment); others; host=NAME (platform.node() or
HOROVOD_HOSTNAME is NAME). The processes that do not hold run on into the next allreduce and wait there.
"""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path


def holds(who: str, primary: bool) -> bool:
    if who.startswith("host="):
        return who[len("host="):] in (platform.node(), os.environ.get("HOROVOD_HOSTNAME"))
    return who == "all" or who == ("primary" if primary else "others")


def hold(mark: Path, primary: bool) -> None:
    """Announce this process (MARK.<pid>, written whole) and block until the test writes to the FIFO."""
    pid = os.getpid()
    go = mark.with_name(f"{mark.name}.{pid}.go")
    os.mkfifo(go)
    record = {"pid": pid, "primary": primary, "host": platform.node(),
              "horovod_hostname": os.environ.get("HOROVOD_HOSTNAME")}
    partial = mark.with_name(f".{mark.name}.{pid}")
    partial.write_text(json.dumps(record))
    partial.rename(mark.with_name(f"{mark.name}.{pid}"))
    with open(go) as fifo:  # blocks until the test opens it to write (SIGINT: KeyboardInterrupt here)
        fifo.read()


def hold_after(epoch: int, step: int, mark: Path, who: str) -> None:
    """Wrap EpochMetrics (in every run's callbacks) to hold after `step` of `epoch` (both 1-based)."""
    from hvdweather.callbacks import EpochMetrics

    begin, batch_end = EpochMetrics.on_epoch_begin, EpochMetrics.on_train_batch_end
    passed = []

    def on_epoch_begin(self, index: int, logs: dict | None = None) -> None:
        self.held_epoch = index + 1
        begin(self, index, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        batch_end(self, batch, logs)
        if (self.held_epoch, batch + 1) == (epoch, step) and not passed:
            passed.append(True)
            if holds(who, self.writer.is_primary):
                hold(mark, self.writer.is_primary)

    EpochMetrics.on_epoch_begin, EpochMetrics.on_train_batch_end = on_epoch_begin, on_train_batch_end


def main() -> None:
    epoch, step, mark, who, separator, *train_args = sys.argv[1:]
    assert separator == "--", __doc__
    from hvdweather.host import prefer_onednn

    prefer_onednn()  # as the console script does, before TensorFlow loads: else other kernels, other bits
    hold_after(int(epoch), int(step), Path(mark), who)
    sys.argv = ["hvdweather-train", *train_args]
    from hvdweather.cli import train_main

    train_main()


if __name__ == "__main__":
    main()
