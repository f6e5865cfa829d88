"""Model-zoo benchmark, measuring part: trainable parameters, training and inference images/s of every
`--model` at one image size, all in one run. The table is built by hvdweather.bench.models_report.

    hvdweather-bench models --image-size 256 --batch-size 32 --steps 3 --repeats 3 --out bench/models

Each model lives in its own worker process (`python -m hvdweather.bench.models --worker MODEL ...`): every
worker sets TensorFlow's thread pools the same way before its first op, as a one-process training run
does, and no model's graphs or allocator state weigh on another's. The workers stay up for the whole run
and the parent asks them in turn, one repeat at a time, starting each repeat one model further on: on a
shared machine a busy minute then falls on every model alike instead of on whichever model was running.
Only one worker computes at a time; the others wait on their stdin.

A worker builds its model and compiles it as training does (`hvdweather.optim`: SGD with momentum,
cross-entropy from logits), runs one training step and one forward pass untimed (tracing, allocation),
then on each request times `--steps` training steps (forward, loss, gradients, the optimizer's update)
or `--steps` forward passes in inference mode, with the step functions Keras's fit and predict call, on
fixed synthetic tensors. Decoding is not in these numbers: `hvdweather-bench pipeline` measures it.

Written to --out: models.jsonl (one line per model, per timed request, and one for the run), models.md
(the table, also printed), machine.json, logs/<model>.log (each worker's stderr).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvdweather.bench.launch import BENCH_ENV
from hvdweather.bench.machine import machine_info, write_machine
from hvdweather.bench.scaling import last_log_line
from hvdweather.bench.spec import check_train_flags, list_field, make_out_dir
from hvdweather.errors import ConfigError
from hvdweather.geometry import MODEL_GEOMETRY
from hvdweather.host import load_average

NUM_CLASSES = 11  # the WEAPD classes: the head every model gets in training
PHASES = ("train", "inference")


@dataclass(frozen=True)
class ModelsSpec:
    """What `hvdweather-bench models` measures; one field per flag."""

    models: tuple[str, ...] = list_field(tuple(MODEL_GEOMETRY), "--models", tuple(MODEL_GEOMETRY))
    image_size: int = 256  # one size for every model: training's default, above the weather CNN's 253 minimum
    per_worker_batch_size: int = 32  # flag --batch-size: images per training step and per forward pass
    steps: int = 3  # timed training steps (and forward passes) per model in each repeat
    repeats: int = 3  # rounds over all models; the table shows medians over them
    threads: int = 0  # TensorFlow intra-op threads in every worker (0 = all cores, as one training process)
    out: str = ""  # models.jsonl, models.md, machine.json, logs/ ("" = print the table only)
    timeout_s: float = 600.0  # per request to a worker (its start-up, or one timed round)
    seed: int = 0  # initial weights and the synthetic tensors

    def check(self) -> None:
        """Every check that can fail in seconds, so a bad flag never costs a model build."""
        for model in self.models:  # training's own rules: the CNN's minimum, ViT's 16-pixel patches
            check_train_flags(self.per_worker_batch_size, model=model, image_size=self.image_size, seed=self.seed)
        for flag, value in (("--steps", self.steps), ("--repeats", self.repeats)):
            if value < 1:
                raise ConfigError(f"{flag} must be a positive integer, got {value}")
        if self.threads < 0:
            raise ConfigError(f"--threads must be >= 0 (0 = all cores), got {self.threads}")
        if not self.timeout_s > 0:
            raise ConfigError(f"--timeout must be > 0 seconds, got {self.timeout_s}")
        if self.out:
            make_out_dir(self.out, "logs")


def bench_command(spec: ModelsSpec) -> str:
    """The command line that reproduces this run, with every setting spelled out (it heads the table)."""
    command = ["hvdweather-bench", "models", "--models", ",".join(spec.models), "--image-size",
               str(spec.image_size), "--batch-size", str(spec.per_worker_batch_size), "--steps", str(spec.steps),
               "--repeats", str(spec.repeats), "--threads", str(spec.threads), "--seed", str(spec.seed)]
    return shlex.join(command + (["--out", spec.out] if spec.out else []))


def round_order(models: list[str], repeat: int) -> list[str]:
    """The models in the order repeat `repeat` (from 0) asks them: rotated by one model per repeat."""
    shift = repeat % len(models) if models else 0
    return models[shift:] + models[:shift]


class WorkerError(RuntimeError):
    """A worker that died, timed out or answered nonsense; the message says which."""


class Worker:
    """One model's worker process: started, asked for timings one request at a time, then stopped."""

    def __init__(self, model: str, spec: ModelsSpec, threads: int, log: Path):
        self.model, self.log, self.timeout_s = model, log, spec.timeout_s
        command = [sys.executable, "-m", "hvdweather.bench.models", "--worker", model, "--image-size",
                   str(spec.image_size), "--batch-size", str(spec.per_worker_batch_size), "--steps",
                   str(spec.steps), "--threads", str(threads), "--seed", str(spec.seed)]
        with log.open("w") as handle:
            handle.write(f"$ {shlex.join(command)}\n")
            handle.flush()
            # Its own session, so that a hung worker's whole process group can be ended.
            self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=handle,
                                         env={**os.environ, **BENCH_ENV}, start_new_session=True)
        self._pending = b""

    def read_reply(self) -> dict[str, Any]:
        """The worker's next JSON line; WorkerError if it exits or stays silent past the timeout."""
        deadline = time.monotonic() + self.timeout_s
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()  # a worker past its timeout will not read a polite request either
                self.proc.stdout.close()
                raise WorkerError(f"no answer within {self.timeout_s:g} s (killed)")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise WorkerError(f"exited with code {self.proc.wait()}: {last_log_line(self.log)}")
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise WorkerError(f"answered {line[:100]!r}, not a JSON line") from None

    def ask(self, phase: str) -> dict[str, Any]:
        """Time one round of `phase` (train or inference)."""
        try:
            self.proc.stdin.write(f"{phase}\n".encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(f"exited with code {self.proc.wait()}: {last_log_line(self.log)}") from None
        return self.read_reply()

    def stop(self) -> None:
        """Ask it to quit (end of its input ends its loop); end its process group if it has not within 10 s."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
        self.proc.stdout.close()

    def kill(self) -> None:
        """End its process group: SIGTERM, then SIGKILL."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=10)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


def start_workers(spec: ModelsSpec, threads: int, logs: Path) -> tuple[dict[str, Worker], list[dict[str, Any]]]:
    """Start and warm up the workers one after another (a warm-up is untimed, so they need not share the
    cores); each answers with its model line. A worker that fails becomes a failed model line."""
    workers, lines = {}, []
    for model in spec.models:
        print(f"starting {model} ({spec.image_size} px): build, compile, one untimed step", flush=True)
        worker = Worker(model, spec, threads, logs / f"{model}.log")
        try:
            lines.append({**worker.read_reply(), "status": "ok", "error": None})
            workers[model] = worker
        except WorkerError as exc:
            worker.stop()
            lines.append({"kind": "model", "model": model, "image_size": spec.image_size, "status": "failed",
                          "error": str(exc), "log": str(worker.log)})
    return workers, lines


def measure_rounds(spec: ModelsSpec, workers: dict[str, Worker], lines: list[dict[str, Any]]) -> None:
    """`--repeats` rounds over the live workers in rotated order, training then inference for each; a
    worker that fails is stopped, its model line marked failed, and the rounds go on without it."""
    models = {line["model"]: line for line in lines if line["kind"] == "model"}
    for repeat in range(spec.repeats):
        for model in round_order([m for m in spec.models if m in workers], repeat):
            for phase in PHASES:
                try:
                    timing = workers[model].ask(phase)
                except WorkerError as exc:
                    workers.pop(model).stop()
                    models[model].update(status="failed", error=f"{phase}, repeat {repeat + 1}: {exc}")
                    break
                lines.append({**timing, "repeat": repeat + 1, "loadavg": load_average()})
                print(f"  repeat {repeat + 1}/{spec.repeats} {model} {phase}: "
                      f"{timing['images_per_s']:.1f} images/s", flush=True)


def run_models_bench(spec: ModelsSpec) -> list[dict[str, Any]]:
    """Start a worker per model, time them round-robin, write the lines and the table, print the table."""
    from hvdweather.bench.models_report import markdown_report

    spec.check()
    machine = machine_info()
    threads = spec.threads or machine["cores"]
    logs = Path(spec.out, "logs") if spec.out else Path(tempfile.mkdtemp(prefix="hvdweather-models-"))
    load_before, start = load_average(), time.perf_counter()
    workers, lines = start_workers(spec, threads, logs)
    try:
        measure_rounds(spec, workers, lines)
    finally:
        for worker in workers.values():
            worker.stop()
    lines.append({"kind": "benchmark", "command": bench_command(spec), "image_size": spec.image_size,
                  "per_worker_batch_size": spec.per_worker_batch_size, "steps": spec.steps,
                  "repeats": spec.repeats, "threads": threads, "loadavg_before": load_before,
                  "loadavg_after": load_average(), "wall_s": round(time.perf_counter() - start, 1)})
    report = markdown_report(lines, machine)
    if spec.out:
        write_machine(spec.out, machine)
        Path(spec.out, "models.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        Path(spec.out, "models.md").write_text(report)
    print(report, flush=True)
    if spec.out:
        print(f"wrote models.jsonl, models.md, machine.json and logs/ in {spec.out}")
    return lines


# ---- the worker process (imports TensorFlow) ----

def build_model(model: str, image_size: int, batch: int, threads: int, seed: int) -> Any:
    """The model compiled as training compiles it (optimizer, loss, metrics of a default TrainConfig with
    this model), after the thread pools and allocator are set as a one-process training run sets them."""
    import tensorflow as tf

    from hvdweather.config import TrainConfig
    from hvdweather.model import use_fast_cpu_allocator

    use_fast_cpu_allocator()  # as train() does, before TensorFlow's first allocation
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))  # as distributed.py's backends

    from hvdweather.models import create_model
    from hvdweather.optim import make_loss, make_metrics, make_optimizer

    cfg = TrainConfig(model=model, image_size=image_size, per_worker_batch_size=batch, seed=seed)
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


def run_worker(model: str, image_size: int, batch: int, steps: int, threads: int, seed: int) -> None:
    """Build, warm up, answer with the model line, then time one round per stdin line ('train' or
    'inference') until stdin ends. Replies go to the original stdout only; anything else that prints
    (TensorFlow, Keras) is sent to stderr, the log, so it cannot break a reply."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    start = time.perf_counter()
    net = build_model(model, image_size, batch, threads, seed)
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
    for call in calls.values():  # tracing and first allocations, untimed
        call()
    reply.write(json.dumps({"kind": "model", "model": model, "image_size": image_size,
                            "per_worker_batch_size": batch, "threads": threads,
                            "trainable_parameters": trainable_parameters(net), "parameters": int(net.count_params()),
                            "build_s": round(built_s, 2), "warmup_s": round(time.perf_counter() - start, 2)}) + "\n")
    for request in sys.stdin:
        phase = request.strip()
        if phase not in calls:
            break
        start = time.perf_counter()
        for _ in range(steps):
            calls[phase]()
        seconds = time.perf_counter() - start
        reply.write(json.dumps({"kind": "timing", "model": model, "phase": phase, "steps": steps,
                                "images": steps * batch, "seconds": round(seconds, 4),
                                "images_per_s": steps * batch / seconds, "peak_rss_mb": peak_rss_mb()}) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Worker entry point: `python -m hvdweather.bench.models --worker MODEL ...` (started by the benchmark)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=tuple(MODEL_GEOMETRY), required=True)
    parser.add_argument("--image-size", type=int, default=ModelsSpec.image_size)
    parser.add_argument("--batch-size", type=int, default=ModelsSpec.per_worker_batch_size)
    parser.add_argument("--steps", type=int, default=ModelsSpec.steps)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=ModelsSpec.seed)
    args = parser.parse_args(argv)
    run_worker(args.worker, args.image_size, args.batch_size, args.steps, args.threads, args.seed)


if __name__ == "__main__":
    main()
