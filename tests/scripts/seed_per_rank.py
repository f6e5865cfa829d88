"""hvdweather-train with a different random seed on every rank: `horovodrun -np 2 python seed_per_rank.py
--data D --out R ...` takes hvdweather-train's flags.

hvdweather-train seeds every rank alike (tf.keras.utils.set_random_seed(cfg.seed)), so its ranks would
start with equal weights even without rank 0's broadcast. Here each call adds 7919 x rank to the seed
(and says so in one line per rank), so only the broadcast can make the ranks agree. The split and the
data order take cfg.seed directly, not this call, and stay the same on every rank.
"""
import os
import sys

from hvdweather.host import prefer_onednn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
prefer_onednn()  # before TensorFlow loads, as the console script does

import tensorflow as tf  # noqa: E402

from hvdweather.cli import train_main  # noqa: E402
from hvdweather.host import say  # noqa: E402

RANK = int(os.environ.get("HOROVOD_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or 0)
keras_seed = tf.keras.utils.set_random_seed


def seed_per_rank(seed: int) -> None:
    say(f"seed_per_rank: rank {RANK} seeds {seed + 7919 * RANK} instead of {seed}")
    keras_seed(seed + 7919 * RANK)


tf.keras.utils.set_random_seed = seed_per_rank
sys.argv[0] = "hvdweather-train"
train_main()
