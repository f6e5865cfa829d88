"""The training command's checks that need no TensorFlow, run before it loads (6-9 s on these machines),
so that a wrong command fails in about a second: the launch against the flags, the data folder, the run
directory, and what the data set's class folders already tell: a batch larger than any rank's shard could
be, a --top-k above the number of classes, a --stats file from another data set.

    cfg = train_config(...); source = check_inputs(cfg)   # hvdweather-train does this, then imports train

Checks that need the decoded images (the exact split after unreadable files are dropped) stay in hvdweather.train.
"""
from __future__ import annotations

import fcntl
import os
import platform
from pathlib import Path

from hvdweather.config import ConfigError, TrainConfig
from hvdweather.data.discovery import Catalog
from hvdweather.data.sharding import steps_per_epoch
from hvdweather.data.source import Source, open_source
from hvdweather.data.split import subset_sizes
from hvdweather.errors import check_output_dir
from hvdweather.host import launched_processes, launched_rank
from hvdweather.runfiles import clear_run, read_json, run_files_in

LOCK_FILE = ".hvdweather.lock"  # held by the training primary for as long as it lives
_held_locks: dict[Path, object] = {}  # this process's open lock files: closing one would release its lock


def lock_run_dir(out: str) -> None:
    """Hold `out`'s lock for this process's lifetime, or refuse: another training process writes there
    (a second launch into the same --out, or the ranks of a job whose launcher was killed, which go on
    training). Linux drops the lock when its holder ends, however it ends."""
    path = (Path(out) / LOCK_FILE).resolve()
    if path in _held_locks:  # this process trains there already (one run after another, in tests)
        return
    lock = path.open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise ConfigError(f"--out {out} is being trained by {holder}; wait for it to end or stop it, "
                          "then run this again") from None
    except OSError:  # a file system without locks (some NFS setups): go on unprotected
        pass
    lock.truncate(0)
    lock.write(f"pid {os.getpid()} on {platform.node()}\n")
    lock.flush()
    _held_locks[path] = lock


def unlock_run_dir(out: str) -> None:
    """Let `out` go once this process has finished training there (a later run in the same process, or
    a tool started after it, may then use it)."""
    lock = _held_locks.pop((Path(out) / LOCK_FILE).resolve(), None)
    if lock is not None:
        lock.close()


def check_run_dir(cfg: TrainConfig) -> None:
    """A new run never mixes with an old one's files: refuse, replace (--overwrite) or --resume. Only a
    run that started (config.json, written once the checks passed) counts: the files of one refused
    before that (split.csv, skipped.csv...) are removed, so the corrected command just runs. The primary
    locks the directory first and alone clears it: nothing is removed under a run still training."""
    primary = launched_rank() == 0
    if primary:
        lock_run_dir(cfg.out)
    existing = run_files_in(cfg.out)
    if cfg.resume and "config.json" not in existing:
        raise ConfigError(f"--resume: {cfg.out} holds no run to resume (no config.json); "
                          "drop --resume to start a new run there")
    if existing and not cfg.resume and "config.json" in existing and not cfg.overwrite:
        raise ConfigError(f"--out {cfg.out} already holds a run ({', '.join(existing[:3])}); pass "
                          "--resume to continue it, --overwrite to replace it, or another --out")
    if existing and primary and ("config.json" not in existing or not cfg.resume):
        clear_run(cfg.out)  # a refused run's leftovers, or --overwrite


def check_inputs(cfg: TrainConfig) -> Source:
    """The cheap checks that must fail in seconds, before any image is decoded (and before TensorFlow)."""
    processes = launched_processes()
    if cfg.strategy == "mirrored" and processes > 1:  # every process would train into one --out
        raise ConfigError(f"--strategy mirrored is one process with --replicas replicas, but a launcher started "
                          f"{processes} processes; run it without horovodrun/mpirun/srun, or use --strategy horovod")
    source = open_source(cfg.data, cfg.image_size)
    check_output_dir(cfg.out)
    if not cfg.elastic:  # elastic: in the first world only (a worker joining later finds the run there)
        check_run_dir(cfg)
    if cfg.cache_dir:
        check_output_dir(cfg.cache_dir, "--cache-dir")
    check_against_classes(cfg, source.catalog)
    if not cfg.elastic:  # an elastic run's world changes; each world's plan checks its own batch
        workers = cfg.replicas if cfg.strategy == "mirrored" else processes
        shard_count = 1 if cfg.strategy == "mirrored" else processes
        check_batch(cfg.per_worker_batch_size, cfg.per_worker_batch_size * (workers // shard_count),
                    train_images_at_most(source.catalog, cfg.val_split, cfg.test_split), shard_count, workers,
                    at_most=True)
    return source


def check_batch(per_worker_batch_size: int, per_process_batch_size: int, n_train: int, shard_count: int,
                workers: int, at_most: bool = False) -> None:
    """A process's batch must fit in its training shard (drop_remainder would leave no step at all).
    `at_most`: n_train is an upper bound from the class folders, before the scan drops unreadable files."""
    if steps_per_epoch(n_train, shard_count, per_process_batch_size) < 1:
        raise ConfigError(f"--batch-size {per_worker_batch_size}: a worker's training shard has "
                          f"{'at most' if at_most else 'only'} {n_train // shard_count} image(s) per process "
                          f"({workers} worker{'' if workers == 1 else 's'}); lower --batch-size")


def check_val_shards(n_val: int, shard_count: int) -> None:
    """Validation runs on every process: one with no validation image would fail at the end of epoch 1
    (Keras refuses an empty dataset), after the whole first epoch's work."""
    if 0 < n_val < shard_count:
        raise ConfigError(f"--val-split: the split has {n_val} validation image(s) for {shard_count} processes, "
                          "and every process validates on its share; raise --val-split, use fewer processes, "
                          "or pass --val-split 0")


def train_images_at_most(catalog: Catalog, val_frac: float, test_frac: float) -> int:
    """The most training images the split can give, from the class folders alone: the scan may drop
    unreadable files (a class of m usable files trains m - val(m) - test(m), not monotonic in m because
    of rounding, hence the max) and keeping duplicates together only moves files out of train."""
    total = 0
    for n_class in catalog.counts().values():
        total += max([m - sum(subset_sizes(m, val_frac, test_frac)) for m in range(1, n_class + 1)], default=0)
    return max(total, 0)


def check_against_classes(cfg: TrainConfig, catalog: Catalog) -> None:
    """--top-k and --stats against the data set's classes (predict refuses the same --top-k)."""
    names = catalog.class_names
    if cfg.top_k > len(names):
        raise ConfigError(f"--top-k {cfg.top_k}: --data {cfg.data} has {len(names)} classes; pass 1 to {len(names)}")
    if cfg.stats:
        summary = read_json(cfg.stats) if os.path.isfile(cfg.stats) else None
        if not isinstance(summary, dict):
            raise ConfigError(f"--stats {cfg.stats}: not found or not an hvdweather-eda summary.json")
        theirs = summary.get("class_names")
        if theirs is not None and tuple(theirs) != names:
            raise ConfigError(f"--stats {cfg.stats} describes another data set (classes "
                              f"{_few(theirs)}), not --data {cfg.data} ({_few(names)}); run hvdweather-eda "
                              f"{cfg.data} --out DIR and pass DIR/summary.json")


def _few(names, limit: int = 4) -> str:
    return f"{len(names)}: " + ", ".join(list(names)[:limit]) + (", ..." if len(names) > limit else "")
