"""Per-layer forward + backward time of the weather CNN (batch 32, one thread): TensorFlow in the reference
PyTorch weather project's layer form (conv with bias, Keras BatchNormalization + tanh) and in the
package's form (`hvdweather.models.weather_cnn`), next to PyTorch when it is installed.

    hvdweather-bench layers                      # oneDNN on (unless TF_ENABLE_ONEDNN_OPTS says otherwise)
    hvdweather-bench layers --onednn auto        # TensorFlow's choice: off on AVX2-only CPUs

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, at import, its CPU allocator is process-wide, and PyTorch
and TensorFlow should not share a process's thread pools: so each framework and TF form is measured in
its own subprocess (`python -m hvdweather.bench.layers --worker tensorflow|torch [--form package]`),
which prints one JSON line per layer. The table is built by hvdweather.bench.layers_report.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hvdweather.bench.layers_report import layers_table
from hvdweather.geometry import WEATHER_CNN_BLOCKS
from hvdweather.host import cpu_flags, cpu_model, versions

NUM_CLASSES = 11  # the WEAPD classes


@dataclass(frozen=True)
class Stage:
    """One measured layer: its kind, the input it sees (H, W, C) and its parameters."""

    name: str
    kind: str  # "conv", "bn_tanh", "pool" or "model"
    input_hwc: tuple[int, int, int]
    filters: int = 0
    kernel: int = 0
    input_grad: bool = True  # the first conv needs no gradient for the image


def stages(image_size: int = 256) -> list[Stage]:
    """Every conv, BN+tanh and pool of the CNN at `image_size`, from the geometry, then the whole model."""
    out, size, channels = [], image_size, 3
    for i, (filters, kernel, pool) in enumerate(WEATHER_CNN_BLOCKS, start=1):
        out.append(Stage(f"conv{i} {kernel}x{kernel} {channels}->{filters}", "conv", (size, size, channels),
                         filters, kernel, input_grad=i > 1))
        size, channels = size - kernel + 1, filters
        out.append(Stage(f"BN+tanh {size}x{size}x{channels}", "bn_tanh", (size, size, channels)))
        if pool:
            out.append(Stage(f"AvgPool {pool} on {size}x{size}x{channels}", "pool", (size, size, channels),
                             kernel=pool))
            size //= pool
    out.append(Stage(f"whole model, {NUM_CLASSES} classes", "model", (image_size, image_size, 3),
                     input_grad=False))
    return out


def _timed(step, repeats: int, warmup: int = 2) -> dict:
    """Median and all times of `step()` in ms; the first call (tracing, XLA compile) is kept apart."""
    start = time.perf_counter()
    step()
    first_ms = 1e3 * (time.perf_counter() - start)
    for _ in range(warmup - 1):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - start))
    return {"ms": statistics.median(times), "ms_min": min(times), "ms_all": [round(t, 2) for t in times],
            "first_call_ms": round(first_ms, 1)}


def reference_cnn_tf(num_classes: int, image_size: int = 256):
    """The CNN in the reference project's layer form, in Keras: conv with bias, BatchNormalization,
    tanh as its own layer. The 'before' of the package's `build_weather_cnn`."""
    import tensorflow as tf

    inputs = tf.keras.Input((image_size, image_size, 3))
    x = inputs
    for filters, kernel, pool in WEATHER_CNN_BLOCKS:
        x = tf.keras.layers.Conv2D(filters, kernel)(x)
        x = tf.keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(x)
        x = tf.keras.layers.Activation("tanh")(x)
        if pool:
            x = tf.keras.layers.AveragePooling2D(pool)(x)
    x = tf.keras.layers.Flatten()(x)
    x = tf.keras.layers.Dropout(0.32)(x)
    x = tf.keras.layers.Dense(84, activation="tanh")(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(num_classes)(x))


def _tf_layer(stage: Stage, form: str):
    """The Keras layer (or model) of one stage in the reference or the package's form."""
    import tensorflow as tf

    from hvdweather.models.weather_cnn import BatchNormTanh, build_weather_cnn, fuses_bn_tanh

    reference = form == "reference"
    height, width = stage.input_hwc[:2]
    if stage.kind == "conv":  # the package drops the bias where BatchNormTanh follows
        out = (height - stage.kernel + 1, width - stage.kernel + 1)
        return tf.keras.layers.Conv2D(stage.filters, stage.kernel, use_bias=reference or not fuses_bn_tanh(*out))
    if stage.kind == "bn_tanh":
        if reference or not fuses_bn_tanh(height, width):
            return tf.keras.Sequential([tf.keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9),
                                        tf.keras.layers.Activation("tanh")])
        return BatchNormTanh(epsilon=1e-5, momentum=0.9)
    if stage.kind == "pool":
        return tf.keras.layers.AveragePooling2D(stage.kernel)
    build = reference_cnn_tf if reference else build_weather_cnn
    return build(NUM_CLASSES, stage.input_hwc[0])


def measure_tf(stage: Stage, form: str, batch: int, repeats: int) -> dict:
    """Forward + backward (gradients of the weights, and of the input where the model needs it)."""
    import tensorflow as tf

    layer = _tf_layer(stage, form)
    x = tf.random.uniform((batch, *stage.input_hwc))
    dy = tf.random.normal(layer(x, training=False).shape)  # also builds the weights

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        sources = layer.trainable_variables + ([x] if stage.input_grad else [])
        return tape.gradient(y, sources, output_gradients=dy)

    return _timed(lambda: [g.numpy() for g in step()], repeats)


def run_tf_worker(batch: int, repeats: int, image_size: int, form: str) -> None:
    """Print one JSON line per stage in one form, TensorFlow on one thread. The package form runs with
    the package's process settings (its CPU allocator), so each form is its own process."""
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port  # whether oneDNN kernels are in use

    from hvdweather.host import start_xla_quietly
    from hvdweather.models.weather_cnn import use_fast_cpu_allocator

    if form == "package":
        use_fast_cpu_allocator()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    start_xla_quietly()  # BatchNormTanh is XLA-compiled: without this, TensorFlow's three start-up lines
    onednn = bool(_pywrap_util_port.IsMklEnabled())
    for stage in stages(image_size):
        if stage.kind == "pool" and form == "package":
            continue  # the same layer in both forms
        row = {"framework": "tensorflow", "form": form, "layer": stage.name, "kind": stage.kind,
               "onednn": onednn, "batch": batch, "threads": 1}
        print(json.dumps(row | measure_tf(stage, form, batch, repeats)), flush=True)


def _torch_layer(stage: Stage):
    """The PyTorch module of one stage, as the reference project writes it (NCHW, conv with bias)."""
    from torch import nn

    from hvdweather.bench.torch_ddp import build_torch_cnn

    channels = stage.input_hwc[2]
    if stage.kind == "conv":
        return nn.Conv2d(channels, stage.filters, stage.kernel)
    if stage.kind == "bn_tanh":
        return nn.Sequential(nn.BatchNorm2d(channels), nn.Tanh())
    if stage.kind == "pool":
        return nn.AvgPool2d(stage.kernel)
    return build_torch_cnn(NUM_CLASSES, stage.input_hwc[0])


def measure_torch(stage: Stage, batch: int, repeats: int) -> dict:
    """Forward + backward in train mode, the same gradients as `measure_tf`."""
    import torch

    module = _torch_layer(stage).train()
    height, width, channels = stage.input_hwc
    x = torch.rand(batch, channels, height, width, requires_grad=stage.input_grad)
    with torch.no_grad():
        dy = torch.randn_like(module(x))

    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(dy)

    return _timed(step, repeats)


def run_torch_worker(batch: int, repeats: int, image_size: int) -> None:
    """Print one JSON line per stage, PyTorch on one thread."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    for stage in stages(image_size):
        row = {"framework": "torch", "form": "reference", "layer": stage.name, "kind": stage.kind,
               "batch": batch, "threads": 1}
        print(json.dumps(row | measure_torch(stage, batch, repeats)), flush=True)


def _child_env(onednn: str | None) -> dict[str, str]:
    """One thread everywhere; TF_ENABLE_ONEDNN_OPTS set (on/off), removed (auto: TF decides from the CPU's
    flags) or, with None (or a mode the user's environment gave), left as this process has it."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if onednn in ("on", "off"):
        env["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn == "on" else "0"
    elif onednn == "auto":
        env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    return env


def _run_worker(framework: str, env: dict[str, str], batch: int, repeats: int, image_size: int,
                form: str = "reference") -> list[dict]:
    command = [sys.executable, "-m", "hvdweather.bench.layers", "--worker", framework, "--batch", str(batch),
               "--repeats", str(repeats), "--image-size", str(image_size), "--form", form]
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{framework} layer measurement failed (exit {done.returncode}): {' '.join(command)}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@dataclass(frozen=True)
class LayersBenchSpec:
    """What `hvdweather-bench layers` measures and where it writes."""

    out: str = "bench/layers"  # folder for layers-<onednn>.jsonl and .md
    onednn: str | None = None  # on, off, auto (TF decides from the CPU) or None (this environment's)
    batch: int = 32  # images per forward + backward
    repeats: int = 10  # timed calls per layer (after 2 warm-up calls); the median is reported
    image_size: int = 256  # input pixels per side
    torch: bool = True  # also measure PyTorch when it is installed


def run_layers_bench(spec: LayersBenchSpec) -> list[dict]:
    """Measure TensorFlow (and PyTorch) in subprocesses; write JSON lines and the table; print the table."""
    env = _child_env(spec.onednn)
    rows = [row for form in ("reference", "package")
            for row in _run_worker("tensorflow", env, spec.batch, spec.repeats, spec.image_size, form)]
    if spec.torch and importlib.util.find_spec("torch") is not None:
        rows += _run_worker("torch", env, spec.batch, spec.repeats, spec.image_size)
    elif spec.torch:
        print("PyTorch is not installed, so its column stays empty: pip install -e .[torch]", file=sys.stderr)
    machine = {"cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "onednn_option": spec.onednn or "environment",
               "versions": versions()}
    rows = [row | machine for row in rows]
    label = spec.onednn if spec.onednn in ("on", "off", "auto") else "environment"
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"layers-{label}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = layers_table(rows)
    (out / f"layers-{label}.md").write_text(table + "\n")
    print(table)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Worker entry point: `python -m hvdweather.bench.layers --worker tensorflow|torch`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("tensorflow", "torch"), required=True)
    parser.add_argument("--batch", type=int, default=LayersBenchSpec.batch)
    parser.add_argument("--repeats", type=int, default=LayersBenchSpec.repeats)
    parser.add_argument("--image-size", type=int, default=LayersBenchSpec.image_size)
    parser.add_argument("--form", choices=("reference", "package"), default="reference",
                        help="TensorFlow's layer form (PyTorch is measured in the reference form).")
    args = parser.parse_args(argv)
    if args.worker == "tensorflow":
        run_tf_worker(args.batch, args.repeats, args.image_size, args.form)
    else:
        run_torch_worker(args.batch, args.repeats, args.image_size)


if __name__ == "__main__":
    main()
