"""The tf.data input pipeline, one straight chain:

    file list -> shard by rank -> parallel decode+resize -> cache (uint8) -> shuffle and repeat (a new
    order each epoch, drawn from the seed and the epoch) -> [augment] -> batch (drop_remainder) ->
    to [0, 1] -> prefetch

Sharding comes first, on file names, so each rank decodes only its own files and shuffling cannot
leak images between ranks. Caching uint8 (not float32) keeps the cache 4x smaller.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from hvdweather.data.decode_tf import decode_image

AUTOTUNE = tf.data.AUTOTUNE


def sharded_files(paths, labels, shard_count: int = 1, shard_index: int = 0) -> tf.data.Dataset:
    """(path, label) pairs of this rank's shard: every shard_count-th file, before any shuffle (the
    stride rule of `hvdweather.data.sharding.shard_of`, applied by tf.data)."""
    ds = tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, np.int32)))
    return ds.shard(shard_count, shard_index)


def decoded_files(paths, labels, image_size: int, shard_count: int = 1,
                  shard_index: int = 0) -> tf.data.Dataset:
    """(uint8 image, label) pairs of this rank's shard of the files, decoded in parallel."""
    ds = sharded_files(paths, labels, shard_count, shard_index)
    return ds.map(lambda p, y: (decode_image(p, image_size), y), num_parallel_calls=AUTOTUNE)


def to_unit_range(images: tf.Tensor) -> tf.Tensor:
    """uint8 (or float in [0, 255]) pixels to float32 in [0, 1]. Not --normalize (a mean/std the model
    applies itself, hvdweather.data.normalization): one word, one meaning."""
    return tf.cast(images, tf.float32) / 255.0


def _pad_and_crop(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The CIFAR-10 lab's random crop: pad by 1/8 of the side (4 px at 32), crop back at a random place."""
    side = image.shape[0]
    pad = max(1, side // 8)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(padded, tf.shape(image), seed)


def _small_rotation(image: tf.Tensor, seed: tf.Tensor, max_degrees: float = 10.0) -> tf.Tensor:
    """Rotate about the centre by a uniform angle in +-max_degrees (bilinear, zeros outside)."""
    angle = tf.random.stateless_uniform([], seed, -max_degrees, max_degrees) * (math.pi / 180)
    side = tf.cast(tf.shape(image)[0], tf.float32)
    cos, sin, centre = tf.cos(angle), tf.sin(angle), (side - 1) / 2
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2): a rotation about the centre.
    transform = tf.stack([cos, -sin, centre - cos * centre + sin * centre,
                          sin, cos, centre - sin * centre - cos * centre, 0.0, 0.0])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None], output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]


def augment(image: tf.Tensor, seed: tf.Tensor, mode: str = "standard") -> tf.Tensor:
    """--augment: flip; flip_crop (+ random crop after padding); standard (+ brightness, contrast and a
    small rotation). Stateless: the same seed gives the same image, so --resume replays it exactly.
    Float pixels in [0, 255] out."""
    image = tf.image.stateless_random_flip_left_right(image, seed)
    if mode in ("flip_crop", "standard"):
        image = _pad_and_crop(image, seed + 3)
    image = tf.cast(image, tf.float32)
    if mode == "standard":
        image = tf.image.stateless_random_brightness(image, 0.1 * 255, seed + 1)
        image = tf.image.stateless_random_contrast(image, 0.8, 1.2, seed + 2)
        image = _small_rotation(image, seed + 4)
    return tf.clip_by_value(image, 0.0, 255.0)


def _options(threads: int) -> tf.data.Options:
    options = tf.data.Options()
    if threads > 0:
        options.threading.private_threadpool_size = threads  # keep to this rank's share of cores
    return options


def _cache(ds: tf.data.Dataset, cache_path: str | None) -> tf.data.Dataset:
    return ds.cache(cache_path) if cache_path is not None else ds


def _epoch_order(cached: tf.data.Dataset, n_local: int, seed: int, epoch: tf.Tensor) -> tf.data.Dataset:
    """One pass over the shard in an order drawn from (seed, epoch) alone."""
    # The op seed is a tensor here, and TensorFlow compares (graph seed, op seed) with (0, 0) in Python:
    # with a graph seed of 0 (--seed 0 sets it) tracing failed on a symbolic bool. Clearing the seed of
    # this function's graph avoids that and keeps the order independent of the global seed. Upstream:
    # https://github.com/tensorflow/tensorflow/issues/17284
    tf.compat.v1.get_default_graph().seed = None
    return cached.shuffle(max(1, n_local), seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False)


@dataclass(frozen=True)
class PipelineOptions:
    """How the training chain runs, the same for every rank and every epoch of a run."""

    augment: str = "none"  # --augment: none, flip, flip_crop or standard
    cache_path: str | None = ""  # "" caches in memory, a path caches in files, None: no cache (benchmarks)
    threads: int = 0  # tf.data's private thread pool for this rank (0: TensorFlow's shared one)


def train_pipeline(decoded: tf.data.Dataset, n_local: int, per_process_batch_size: int, seed: int,
                   options: PipelineOptions = PipelineOptions(), start_element: int = 0) -> tf.data.Dataset:
    """Infinite training batches of `per_process_batch_size` (per worker x replicas in this process);
    `n_local` = this rank's shard size (the shuffle buffer holds it all).

    `start_element`: skip this many elements of the shuffled stream, so a resumed run sees exactly the
    batches the uninterrupted run saw from there on (the order is a function of the seed and the
    position; skipping costs one pass per skipped epoch over cached images, no compute).
    """
    cached = _cache(decoded, options.cache_path)
    # Pass e over the shard in an order drawn from (seed, e) alone, so every iterator over this dataset
    # yields the same stream (fit opens a new one per call: --freeze-backbone-epochs fits twice). A
    # shuffle that reshuffles each iteration draws another order for each new iterator instead.
    ds = tf.data.Dataset.counter().flat_map(lambda epoch: _epoch_order(cached, n_local, seed, epoch))
    mode = {True: "standard", False: "none"}.get(options.augment, options.augment)  # old boolean callers
    if mode != "none":  # indices before the skip: an element's augmentation seed is its stream position
        ds = ds.enumerate().skip(start_element).map(
            lambda i, xy: (augment(xy[0], tf.stack([tf.constant(seed, tf.int64), i]), mode), xy[1]),
            num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.skip(start_element)
    ds = ds.batch(per_process_batch_size, drop_remainder=True)
    ds = ds.map(lambda x, y: (to_unit_range(x), y), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE).with_options(_options(options.threads))


def eval_pipeline(decoded: tf.data.Dataset, per_process_batch_size: int, cache_path: str | None = None,
                  threads: int = 0) -> tf.data.Dataset:
    """One ordered pass over this rank's shard in batches (the last may be smaller)."""
    ds = _cache(decoded, cache_path)
    ds = ds.batch(per_process_batch_size)
    ds = ds.map(lambda x, y: (to_unit_range(x), y), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE).with_options(_options(threads))
