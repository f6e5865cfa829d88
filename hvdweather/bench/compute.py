"""The compute limit next to a benchmark's rows: how many FLOPs a model's training step does per image, and
how fast this machine multiplies float32 matrices on a given number of threads.

    python -m hvdweather.bench.compute --flops weather_cnn --image-size 256 --classes 11
    python -m hvdweather.bench.compute --matmul 2

FLOPs: TensorFlow's profiler (`float_operation`) on the model's forward pass, traced at batch 1 in
inference mode with its variables frozen to constants, plus the Einsum ops that profiler does not count
(ViT's attention and projections: 2 x the product of every index's size). Ops inside XLA-compiled
functions are not counted: for the weather CNN that is BatchNormTanh's elementwise pass on block 1, under
3% of its FLOPs. Training = 3 x forward (the backward pass computes the gradients of the inputs and of
the weights, each about one forward); conv1's input gradient, which nothing needs, is counted too.
That count, times images/s, is the achieved rate; the model is counted once, however many workers run it.

Matrix multiply: numpy's BLAS (OpenBLAS in the venv) on 2048 x 2048 float32 matrices, best of 5 timed
products after one untimed, in a fresh process whose BLAS thread count is set before numpy loads; so each
thread count is measured on its own and no TensorFlow or training process shares it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import Any

MATMUL_SIZE = 2048
MATMUL_REPEATS = 5
FLOPS_METHOD = ("TensorFlow profiler float_operation on the frozen forward graph at batch 1 (inference mode) "
                "+ Einsum ops, x3 for forward + backward")
MATMUL_METHOD = (f"numpy/BLAS float32 {MATMUL_SIZE}x{MATMUL_SIZE} matmul, best of {MATMUL_REPEATS}, "
                 "in a fresh process per thread count")


def einsum_flops(equation: str, shapes: list[list[int]]) -> int:
    """FLOPs of a two-operand Einsum: 2 x the product of the sizes of every index (each output element is
    a sum of products over the contracted indices). One-operand einsums (transposes) count 0."""
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    if len(inputs) != 2:
        return 0
    sizes: dict[str, int] = {}
    for letters, shape in zip(inputs, shapes):
        if "..." in letters:  # the ellipsis stands for the dimensions the letters leave over
            head, tail = letters.split("...")
            middle = shape[len(head):len(shape) - len(tail)]
            sizes.update({f"...{i}": max(sizes.get(f"...{i}", 1), d) for i, d in enumerate(reversed(middle))})
            letters, shape = head + tail, shape[:len(head)] + shape[len(shape) - len(tail):]
        for letter, size in zip(letters, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return 2 * math.prod(sizes.values())


def forward_flops(model: Any) -> int:
    """FLOPs of one image's forward pass through a built Keras model (see the module's docstring)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([1, *model.input_shape[1:]], tf.float32)
    traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    graph = convert_variables_to_constants_v2(traced).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    counted = tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops
    einsums = sum(einsum_flops(op.get_attr("equation").decode(), [t.shape.as_list() for t in op.inputs])
                  for op in graph.get_operations() if op.type == "Einsum")
    return int(counted + einsums)


def model_flops(model_name: str, image_size: int, classes: int) -> dict[str, Any]:
    """Forward and training FLOPs per image of --model at this size and class count (TensorFlow)."""
    from hvdweather.models import create_model

    forward = forward_flops(create_model(model_name, classes, image_size))
    return {"model": model_name, "image_size": image_size, "classes": classes, "forward_flops": forward,
            "train_flops_per_image": 3 * forward, "method": FLOPS_METHOD}


def matmul_rate(size: int = MATMUL_SIZE, repeats: int = MATMUL_REPEATS) -> float:
    """GFLOP/s of the best of `repeats` float32 size x size products in this process (numpy's BLAS)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    a @ b  # BLAS threads start, pages fault in
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _child(args: list[str], env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """Run this module with `args` in a fresh process; its last stdout line is a JSON object."""
    done = subprocess.run([sys.executable, "-m", "hvdweather.bench.compute", *args], capture_output=True,
                          text=True, env=env, timeout=timeout_s, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"compute measurement {' '.join(args)} failed (exit {done.returncode}): {tail}")
    return json.loads(lines[-1])


def measure_matmul(thread_counts: list[int], timeout_s: float = 300) -> dict[str, float]:
    """Float32 matmul GFLOP/s per thread count, each in its own process: {"1": 95.2, "2": 181.0}."""
    rates = {}
    for threads in sorted(set(thread_counts)):
        count = str(threads)
        env = dict(os.environ, OPENBLAS_NUM_THREADS=count, OMP_NUM_THREADS=count, MKL_NUM_THREADS=count)
        rates[count] = round(_child(["--matmul", count], env, timeout_s)["gflops"], 1)
    return rates


def measure_model_flops(model_name: str, image_size: int, classes: int, timeout_s: float = 300) -> dict[str, Any]:
    """model_flops() in a fresh process: the parent (a benchmark) stays TensorFlow-free."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return _child(["--flops", model_name, "--image-size", str(image_size), "--classes", str(classes)], env,
                  timeout_s)


def compute_limit(model_name: str, image_size: int, classes: int, thread_counts: list[int]) -> dict[str, Any]:
    """What machine.json records: the model's FLOPs per image and the matmul rate per thread count."""
    return {"model_flops": measure_model_flops(model_name, image_size, classes),
            "matmul_gflops": measure_matmul(thread_counts), "matmul_method": MATMUL_METHOD}


def main(argv: list[str] | None = None) -> None:
    """`python -m hvdweather.bench.compute --flops MODEL ... | --matmul THREADS`: one JSON line."""
    from hvdweather.geometry import MODEL_GEOMETRY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--flops", choices=tuple(MODEL_GEOMETRY), help="Count this model's FLOPs per image.")
    what.add_argument("--matmul", type=int, help="Time float32 matmul with this many BLAS threads (set them "
                                                 "in the environment before starting: numpy reads them at import).")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=11)
    args = parser.parse_args(argv)
    if args.flops:
        result = model_flops(args.flops, args.image_size, args.classes)
    else:
        result = {"threads": args.matmul, "gflops": matmul_rate()}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
