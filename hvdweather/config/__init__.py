"""The one training configuration (TrainConfig) and everything about it, TensorFlow-free, so a bad flag is
answered before TensorFlow loads. Modules: flags (flag names, choices, field groups), train_config (the
frozen dataclass, its checks, the values derived from it), files (--config files, merging, --resume).

Runtime facts (rank, world size) never live here; see `hvdweather.distributed.Runtime`.
"""
from hvdweather.config.files import config_values, load_config_file, make_config, resume_config
from hvdweather.config.flags import (
    AUGMENT_OF_BOOL,
    CHOICES,
    HOROVOD_ONLY,
    LAUNCH_FIELDS,
    RESUMABLE,
    RESUMABLE_FIELDS,
    flag_name,
    resumable_flags,
)
from hvdweather.config.train_config import (
    BF16_MEASURED_FASTER,
    TrainConfig,
    decay_epochs,
    effective_top_k,
    resolve_precision,
    validate,
)
from hvdweather.errors import ConfigError

__all__ = ["AUGMENT_OF_BOOL", "BF16_MEASURED_FASTER", "CHOICES", "HOROVOD_ONLY", "LAUNCH_FIELDS", "RESUMABLE",
           "RESUMABLE_FIELDS", "ConfigError", "TrainConfig", "config_values", "decay_epochs", "effective_top_k",
           "flag_name", "load_config_file", "make_config", "resolve_precision", "resumable_flags", "resume_config",
           "validate"]
