"""The spark executor: the EDA's and prepare's per-image work on PySpark, as the MobileNetV2 project does
its offline preprocessing.

    hvdweather-prepare DATA --out DIR --executor spark                     # local[all cores]
    hvdweather-eda DATA --out DIR --executor spark --processes 2             # local[2]
    hvdweather-eda DATA --out DIR --executor spark --spark-master spark://head:7077 --processes 16

This process is the Spark driver and the primary: it lists the images, hands the very tasks the
multiprocessing executor would make (one Spark task per chunk of images or per shard) to Spark, gets the
results back in task order and combines them itself. Same tasks, same order, integer sums: the TFRecord
shards and EDA results are identical to the other executors' at the same worker count. Shards are written
by the Spark workers themselves, so DATA and --out must be on a file system every worker sees (as for MPI).

PySpark is an optional extra (`pip install -e .[spark]`, Java 17), imported only here and only when this
executor is asked for. The driver's and executors' log level is ERROR (Spark's default prints dozens of
INFO/WARN lines per run); start-up is bounded: no executor running a first task within
SPARK_START_TIMEOUT_S is an error naming the master, not a silent wait.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hvdweather.eda.executor import Progress, SequentialExecutor
from hvdweather.errors import ConfigError
from hvdweather.host import available_cores

T = TypeVar("T")
SPARK_START_TIMEOUT_S = 120  # JVM start plus the first task; local mode needs ~5-10 s on 2 cores
_LOCAL = re.compile(r"local(?:\[(\*|\d+)(?:,\d+)?\])?")  # local, local[N], local[*], local[N,maxFailures]
_LOG4J2 = """\
# Everything at ERROR. pyspark counts as a shell, whose level Spark takes from its own loggers' config
# (WARN if they have none) and announces with "Setting default log level to ..." when it differs from
# the root's: hence org.apache.spark set explicitly, to the root's level.
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
logger.spark.name = org.apache.spark
logger.spark.level = error
"""

def local_threads(master: str) -> int | None:
    """The worker threads of a local master (`local[4]` -> 4, `local[*]` -> this machine's cores); None
    for a cluster master."""
    match = _LOCAL.fullmatch(master)
    if match is None:
        return None
    threads = match.group(1) or "1"
    return os.cpu_count() or 1 if threads == "*" else int(threads)


def _conf(master: str, log_config: Path) -> Any:
    from pyspark import SparkConf

    quiet = f"-Dlog4j2.configurationFile=file:{log_config}"
    conf = (SparkConf().setMaster(master).setAppName("hvdweather")
            .set("spark.ui.enabled", "false").set("spark.ui.showConsoleProgress", "false")
            .set("spark.driver.extraJavaOptions", quiet).set("spark.executor.extraJavaOptions", quiet))
    if local_threads(master) is not None:
        # Local mode talks to itself only: loopback, whatever this machine's hostname resolves to.
        conf.set("spark.driver.host", "127.0.0.1").set("spark.driver.bindAddress", "127.0.0.1")
    return conf


def _log_config() -> Path:
    """log4j2.properties for the driver and executors, in a temporary directory removed at exit."""
    log_dir = tempfile.mkdtemp(prefix="hvdweather-spark-")
    atexit.register(shutil.rmtree, log_dir, ignore_errors=True)  # kept while executors may still start
    log_config = Path(log_dir) / "log4j2.properties"
    log_config.write_text(_LOG4J2)
    return log_config


def _launch_gateway(master: str, conf: Any) -> Any:
    """The driver JVM (spark-submit) with `conf`; ConfigError without Java."""
    from pyspark.java_gateway import launch_gateway

    try:
        return launch_gateway(conf)
    except Exception as exc:  # no java on PATH, a bad option: one line, not a stack trace
        raise ConfigError(f"--spark-master {master}: Spark did not start: {str(exc).splitlines()[0]}") from exc


def start_context(master: str, timeout_s: float = SPARK_START_TIMEOUT_S) -> Any:
    """A SparkContext on `master` that has run one task within `timeout_s`, else ConfigError."""
    try:
        from pyspark import SparkContext
    except ImportError as exc:
        raise ConfigError("--executor spark needs PySpark, an optional extra: pip install -e '.[spark]' "
                          "(make install-spark); it also needs Java 17") from exc
    # Workers import hvdweather (and TensorFlow, for prepare): this interpreter, not PySpark's default
    # `python3` from PATH; on a cluster the same path must exist on every worker (a shared venv).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if local_threads(master) is not None:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # read by the JVM spark-submit starts
    conf = _conf(master, _log_config())
    gateway = _launch_gateway(master, conf)
    # Spark's own waits are long (a minute to give up on an unreachable standalone master) or endless
    # (a master with no free executor accepts the job and waits): past timeout_s, kill the driver JVM,
    # which ends either wait with an error.
    expired = threading.Event()
    timer = threading.Timer(timeout_s, lambda: (expired.set(), gateway.proc.kill()))
    timer.start()
    try:
        context = SparkContext(conf=conf, gateway=gateway)
        context.setLogLevel("ERROR")
        context.parallelize([0], 1).count()
    except Exception as exc:
        if expired.is_set():
            raise ConfigError(f"--spark-master {master}: no Spark executor ran a first task within {timeout_s:g} s; "
                              "is the cluster up with free cores, and is this host reachable from it?") from exc
        raise ConfigError(f"--spark-master {master}: Spark did not start: {str(exc).splitlines()[0]}") from exc
    finally:
        timer.cancel()
    return context


class SparkExecutor(SequentialExecutor):
    """The driver lists and combines (it is the primary); Spark runs one task per chunk of images."""

    name = "spark"

    def __init__(self, workers: int | None = None, master: str | None = None):
        self.master = master or f"local[{workers or available_cores()}]"
        threads = local_threads(self.master)
        if workers is not None and threads is not None and workers != threads:
            raise ConfigError(f"--processes {workers} does not match --spark-master {self.master} ({threads} "
                              "threads); leave --processes out, or make them agree")
        self.context = start_context(self.master)
        # The worker count sets the number of chunks / shards (identical outputs need the same count).
        self.workers = workers or threads or self.context.defaultParallelism
        atexit.register(self.close)

    def map(self, fn: Callable[[Any], T], tasks: Sequence[Any], progress: Progress) -> list[T]:
        tasks = list(tasks)
        if not tasks:
            return []
        # One partition per task: Spark hands them to free cores as they finish, like pool.imap; collect()
        # returns results in task order. Progress moves once, at the end: collect() has no partial results.
        results = self.context.parallelize(tasks, len(tasks)).map(fn).collect()
        progress.update(sum(len(task.index) for task in tasks))
        return results

    def close(self) -> None:
        """Stop the SparkContext (and its JVM): at exit, or earlier by a caller that is done with it."""
        if self.context is not None:
            self.context.stop()
            self.context = None
