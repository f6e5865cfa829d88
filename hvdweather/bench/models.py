"""Model-zoo benchmark, measuring part: trainable parameters, training and inference images/s of every
`--model` at one image size, all in one run. The table is built by hvdweather.bench.models_report.

    hvdweather-bench models --image-size 256 --batch-size 32 --steps 2 --repeats 3 --out bench/models

Each measurement is its own process (`python -m hvdweather.bench.models --worker MODEL ... --result FILE`),
launched like every benchmark run (`hvdweather.launch`): each sets TensorFlow's thread pools and
allocator as a one-process training run does, before its first op, and no model's graphs or allocator
pool weigh on another's. One process at a time, so memory holds one model: kept alive side by side, the
six models' processes held about 19 GB at 256 px and batch 32 (EfficientNet-B0 alone 5.5 GB), too much
for a machine that runs anything else. The models are measured in turn, one repeat after another, each
repeat starting one model further on: on a shared machine a busy minute then falls on every model alike
instead of on whichever model was running.

A process builds its model and compiles it as training does (`hvdweather.optim`: SGD with momentum,
cross-entropy from logits), runs one training step and one forward pass untimed (tracing, allocation),
then times `--steps` training steps (forward, loss, gradients, the optimizer's update) and `--steps`
forward passes in inference mode, with the step functions Keras's fit and predict call, on fixed
synthetic tensors. Decoding is not in these numbers: `hvdweather-bench pipeline` measures it.

Written to --out: models.jsonl (one line per model and repeat, and one for the run), models.md (the
table, also printed), machine.json, logs/<model>-r<repeat>.log and .json (each process's output and figures).
"""
from __future__ import annotations

import argparse
import json
import resource
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvdweather.bench.machine import machine_info, write_machine
from hvdweather.bench.models_report import markdown_report
from hvdweather.bench.spec import check_train_flags, list_field
from hvdweather.errors import ConfigError, check_output_dir
from hvdweather.geometry import MODEL_GEOMETRY
from hvdweather.host import load_average
from hvdweather.launch import last_log_line, launch

NUM_CLASSES = 11  # the WEAPD classes: the head every model gets in training


@dataclass(frozen=True)
class ModelsSpec:
    """What `hvdweather-bench models` measures; one field per flag."""

    models: tuple[str, ...] = list_field(tuple(MODEL_GEOMETRY), "--models", tuple(MODEL_GEOMETRY))
    image_size: int = 256  # one size for every model: training's default, above the weather CNN's 253 minimum
    per_worker_batch_size: int = 32  # flag --batch-size: images per training step and per forward pass
    steps: int = 2  # timed training steps (and forward passes) per model in each repeat
    repeats: int = 3  # rounds over all models; the table shows medians over them
    threads: int = 0  # TensorFlow intra-op threads in every model process (0 = all cores, as one training process)
    out: str = ""  # models.jsonl, models.md, machine.json, logs/ ("" = print the table only)
    timeout_s: float = 600.0  # per model process: start-up and its timed steps
    seed: int = 0  # initial weights and the synthetic tensors
    precision: str = "auto"  # --precision of training (auto, float32, bfloat16): the Keras policy of every model

    def check(self) -> None:
        """Every check that can fail in seconds, so a bad flag never costs a model build."""
        for model in self.models:  # training's own rules: the CNN's minimum, ViT's 16-pixel patches
            check_train_flags(self.per_worker_batch_size, model=model, image_size=self.image_size, seed=self.seed,
                              precision=self.precision)  # bfloat16: refused on CPUs without native BF16
        for flag, value in (("--steps", self.steps), ("--repeats", self.repeats)):
            if value < 1:
                raise ConfigError(f"{flag} must be a positive integer, got {value}")
        if self.threads < 0:
            raise ConfigError(f"--threads must be >= 0 (0 = all cores), got {self.threads}")
        if not self.timeout_s > 0:
            raise ConfigError(f"--timeout must be > 0 seconds, got {self.timeout_s}")
        if self.out:
            check_output_dir(self.out, subdirs=("logs",))


def bench_command(spec: ModelsSpec) -> str:
    """The command line that reproduces this run, with every setting spelled out (it heads the table)."""
    command = ["hvdweather-bench", "models", "--models", ",".join(spec.models), "--image-size",
               str(spec.image_size), "--batch-size", str(spec.per_worker_batch_size), "--steps", str(spec.steps),
               "--repeats", str(spec.repeats), "--threads", str(spec.threads), "--seed", str(spec.seed),
               "--precision", spec.precision]
    return shlex.join(command + (["--out", spec.out] if spec.out else []))


def round_order(models: list[str], repeat: int) -> list[str]:
    """The models in the order repeat `repeat` (from 0) measures them: rotated by one model per repeat."""
    shift = repeat % len(models) if models else 0
    return models[shift:] + models[:shift]


def measure_once(spec: ModelsSpec, model: str, repeat: int, threads: int, logs: Path) -> dict[str, Any]:
    """One model's process for one repeat, launched as every benchmark run is (its own process group, a
    timeout, output to a log); its measurement line, or a failed line saying why."""
    name = f"{model}-r{repeat}"
    log, result = logs / f"{name}.log", logs / f"{name}.json"
    result.unlink(missing_ok=True)
    command = [sys.executable, "-m", "hvdweather.bench.models", "--worker", model, "--image-size",
               str(spec.image_size), "--batch-size", str(spec.per_worker_batch_size), "--steps", str(spec.steps),
               "--threads", str(threads), "--seed", str(spec.seed), "--precision", spec.precision,
               "--result", str(result)]
    code, wall_s = launch(command, log, spec.timeout_s)
    line = {"kind": "measurement", "model": model, "repeat": repeat, "image_size": spec.image_size,
            "wall_s": round(wall_s, 2), "loadavg": load_average(), "log": str(log)}
    if code == 0 and result.exists():
        return {**line, **json.loads(result.read_text()), "status": "ok", "error": None}
    error = f"timed out after {spec.timeout_s:g} s" if code is None else f"exit {code}: {last_log_line(log)}"
    return {**line, "status": "timeout" if code is None else "failed", "error": error}


def run_models_bench(spec: ModelsSpec) -> list[dict[str, Any]]:
    """`--repeats` rounds over the models in rotated order, one model process at a time; write the lines
    and the table, print the table."""
    spec.check()
    machine = machine_info()
    threads = spec.threads or machine["cores"]
    logs = Path(spec.out, "logs") if spec.out else Path(tempfile.mkdtemp(prefix="hvdweather-models-"))
    results = Path(spec.out or logs, "models.jsonl")
    results.write_text("")
    load_before, start = load_average(), time.perf_counter()
    lines = []
    for repeat in range(1, spec.repeats + 1):
        for model in round_order(list(spec.models), repeat - 1):
            lines.append(measure_once(spec, model, repeat, threads, logs))
            _append(results, lines[-1])  # line by line: a killed benchmark keeps what it measured
            print(f"  repeat {repeat}/{spec.repeats} {model}: {_progress(lines[-1])}", flush=True)
    lines.append({"kind": "benchmark", "command": bench_command(spec), "image_size": spec.image_size,
                  "per_worker_batch_size": spec.per_worker_batch_size, "steps": spec.steps,
                  "repeats": spec.repeats, "threads": threads, "loadavg_before": load_before,
                  "loadavg_after": load_average(), "wall_s": round(time.perf_counter() - start, 1)})
    _append(results, lines[-1])
    report = markdown_report(lines, machine)
    if spec.out:
        write_machine(spec.out, machine)
        Path(spec.out, "models.md").write_text(report)
    print(report, flush=True)
    if spec.out:
        print(f"wrote models.jsonl, models.md, machine.json and logs/ in {spec.out}")
    return lines


def _append(path: Path, line: dict[str, Any]) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(line) + "\n")


def _progress(line: dict[str, Any]) -> str:
    if line["status"] != "ok":
        return f"{line['status'].upper()}: {line['error']} (log: {line['log']})"
    return (f"training {line['train_images_per_s']:.1f} images/s, inference {line['inference_images_per_s']:.1f} "
            f"images/s (load {line['loadavg']})")


# What runs in each model's process: TensorFlow is imported here, inside the functions.

def build_model(model: str, image_size: int, batch: int, threads: int, seed: int, precision: str = "auto") -> Any:
    """The model compiled as training compiles it (optimizer, loss, metrics of a default TrainConfig with
    this model, in the Keras policy --precision gives it), after the thread pools and allocator are set as
    a one-process training run sets them."""
    import tensorflow as tf

    from hvdweather.config import TrainConfig
    from hvdweather.models.weather_cnn import use_fast_cpu_allocator

    use_fast_cpu_allocator()  # as train() does, before TensorFlow's first allocation
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))  # as hvdweather.distributed's backends

    from hvdweather.config import resolve_precision
    from hvdweather.models import apply_precision, create_model
    from hvdweather.optim import make_loss, make_metrics, make_optimizer

    cfg = TrainConfig(model=model, image_size=image_size, per_worker_batch_size=batch, seed=seed, precision=precision)
    apply_precision(resolve_precision(cfg))
    tf.keras.utils.set_random_seed(seed)
    net = create_model(model, NUM_CLASSES, image_size)
    net.compile(optimizer=make_optimizer(cfg, cfg.lr), loss=make_loss(cfg), metrics=make_metrics(cfg, NUM_CLASSES))
    return net


def trainable_parameters(net: Any) -> int:
    """Scalars in the trainable weights (what the optimizer updates)."""
    return int(sum(int(w.shape.num_elements()) for w in net.trainable_weights))


def finished(outputs: Any) -> None:
    """Wait for a step: fetching its outputs' values returns only once the step has run."""
    import tensorflow as tf

    for tensor in tf.nest.flatten(outputs):
        tensor.numpy()


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports kilobytes): what the model needs to train
    at this batch and size, TensorFlow's own few hundred MB included."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def timed(call: Any, steps: int, batch: int) -> dict[str, float]:
    """`steps` calls of a step function, waited for; seconds and images/s."""
    start = time.perf_counter()
    for _ in range(steps):
        call()
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 4), "images_per_s": steps * batch / seconds}


@dataclass(frozen=True)
class WorkerSpec:
    """What one model's process measures: its command-line flags (see main)."""

    model: str  # a key of MODEL_GEOMETRY
    image_size: int
    per_worker_batch_size: int
    steps: int  # timed training steps, and as many timed forward passes
    threads: int  # TensorFlow intra-op threads
    seed: int
    precision: str = "auto"  # --precision of hvdweather-train: auto, float32 or bfloat16


def run_worker(worker: WorkerSpec, result: str) -> None:
    """Build and compile, one untimed training step and forward pass (tracing, first allocations), then
    `steps` timed training steps and `steps` timed forward passes; the figures go to `result` as one
    JSON object (a file, not stdout: TensorFlow and Keras print there too)."""
    image_size, batch, steps, seed = worker.image_size, worker.per_worker_batch_size, worker.steps, worker.seed
    start = time.perf_counter()
    net = build_model(worker.model, image_size, batch, worker.threads, seed, worker.precision)
    built_s = time.perf_counter() - start
    import tensorflow as tf

    images = tf.random.uniform((batch, image_size, image_size, 3), seed=seed)
    labels = tf.random.uniform((batch,), 0, NUM_CLASSES, tf.int32, seed=seed)
    # Keras's own step functions on an endless in-memory dataset, as fit and predict call them per step
    # (train_on_batch would build a new dataset adapter on every call, which fit does not pay).
    train_step, forward = net.make_train_function(), net.make_predict_function()
    train_data = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
    forward_data = iter(tf.data.Dataset.from_tensors(images).repeat())
    calls = {"train": lambda: finished(train_step(train_data)), "inference": lambda: finished(forward(forward_data))}
    start = time.perf_counter()
    for call in calls.values():
        call()
    warmup_s = time.perf_counter() - start
    figures = {f"{phase}_{key}": value for phase, call in calls.items()
               for key, value in timed(call, steps, batch).items()}
    Path(result).write_text(json.dumps({
        "per_worker_batch_size": batch, "steps": steps, "threads": worker.threads,
        "keras_policy": tf.keras.mixed_precision.global_policy().name,  # what --precision resolved to
        "trainable_parameters": trainable_parameters(net), "parameters": int(net.count_params()),
        "build_s": round(built_s, 2), "warmup_s": round(warmup_s, 2), **figures, "peak_rss_mb": peak_rss_mb()}))


def main(argv: list[str] | None = None) -> None:
    """Entry point of one model's process: `python -m hvdweather.bench.models --worker MODEL ... --result FILE`
    (started by the benchmark)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=tuple(MODEL_GEOMETRY), required=True)
    parser.add_argument("--image-size", type=int, default=ModelsSpec.image_size)
    parser.add_argument("--batch-size", type=int, default=ModelsSpec.per_worker_batch_size)
    parser.add_argument("--steps", type=int, default=ModelsSpec.steps)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=ModelsSpec.seed)
    parser.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto")
    parser.add_argument("--result", required=True, help="File for the JSON object of figures.")
    args = parser.parse_args(argv)
    run_worker(WorkerSpec(args.worker, args.image_size, args.batch_size, args.steps, args.threads, args.seed,
                          args.precision), args.result)


if __name__ == "__main__":
    main()
