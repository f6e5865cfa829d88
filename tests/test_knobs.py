"""What each training knob computes: the LR plan per step, class weights, the label-smoothing target,
normalisation constants, augmentation modes, early stopping's count, the optimizers and the top-k metric."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from hvdweather.callbacks import epochs_without_improvement
from hvdweather.config import ConfigError, TrainConfig
from hvdweather.data.normalization import moments_from_sums
from hvdweather.data.pipeline import augment
from hvdweather.distributed import Runtime
from hvdweather.optim import SmoothedSparseCrossentropy, balanced_class_weights, make_metrics, make_optimizer
from hvdweather.train.plan import make_plan

RT2 = Runtime("horovod", 0, 0, 2, 2, 1, 1)


def _plan(**fields):
    # 80 images, 2 workers x batch 8: 5 steps per epoch.
    return make_plan(TrainConfig(**fields), 80, RT2, 2)


def test_step_schedule_decays_at_each_epoch_after_the_warmup():
    plan = _plan(lr=0.1, epochs=4, warmup_epochs=1, lr_schedule="step", lr_decay_epochs="3,4",
                 lr_decay_factor=0.5, per_worker_batch_size=8)
    lrs = [plan.lr_at(s) for s in range(20)]
    np.testing.assert_allclose(lrs[:5], [0.1 + i / 5 * 0.1 for i in range(5)])  # ramp 0.1 -> 0.2
    np.testing.assert_allclose(lrs[5:10], [0.2] * 5)
    np.testing.assert_allclose(lrs[10:15], [0.1] * 5)  # epoch 3
    np.testing.assert_allclose(lrs[15:], [0.05] * 5)  # epoch 4


def test_the_warmup_ramp_is_the_plans_and_planned_lr_assigns_it_by_global_step():
    """The ramp has one home, Plan.lr_at: with a constant schedule PlannedLR assigns it too (it ramps
    from base to scaled over the warm-up, then holds), and a plan without warm-up has no LR callback."""
    plan = _plan(lr=0.01, warmup_epochs=0.8, per_worker_batch_size=8)  # 4 warm-up steps of 5 per epoch
    assert [plan.lr_at(step) for step in range(6)] == pytest.approx([0.01, 0.0125, 0.015, 0.0175, 0.02, 0.02])
    (callback,) = plan.lr_callbacks()
    assigned = []

    class Model:
        class optimizer:  # noqa: N801 - stands in for the optimizer and its tf.Variable
            class learning_rate:  # noqa: N801
                assign = assigned.append

    callback.set_model(Model)
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    callback.on_train_batch_begin(3)  # global step 3 of the ramp's 4
    callback.on_epoch_begin(1)
    for batch in range(3):
        callback.on_train_batch_begin(batch)  # global steps 5, 6, 7: at the peak, assigned once
    assert assigned == pytest.approx([0.0175, 0.02])
    assert _plan(lr=0.01, warmup_epochs=0, per_worker_batch_size=8).lr_callbacks() == []


def test_cosine_schedule_peaks_at_the_scaled_lr_and_reaches_zero():
    plan = _plan(lr=0.1, epochs=3, warmup_epochs=0, lr_schedule="cosine", per_worker_batch_size=8)
    assert plan.lr_at(0) == pytest.approx(0.2)
    assert plan.lr_at(15) == pytest.approx(0.0, abs=1e-12)
    assert plan.lr_at(7) == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 7 / 15)))


def test_fine_tuning_multiplies_the_lr_from_the_unfreeze_on():
    plan = _plan(lr=0.1, epochs=3, warmup_epochs=0, freeze_backbone_epochs=1, fine_tune_lr_factor=0.1,
                 per_worker_batch_size=8)
    assert plan.lr_at(4) == pytest.approx(0.2) and plan.lr_at(5) == pytest.approx(0.02)


def test_backward_passes_and_adasum_in_the_plan():
    plan = _plan(lr=0.1, per_worker_batch_size=4, backward_passes_per_step=2)  # 10 batches/epoch
    assert plan.global_batch_size == 16 and plan.steps_per_epoch == 10 and plan.images_per_step == 8
    adasum = _plan(lr=0.1, per_worker_batch_size=8, adasum=True)
    assert adasum.scaled_lr == pytest.approx(0.1) and adasum.warmup_steps == 0


def test_horovod_options_are_errors_under_mirrored_and_bad_knobs_name_their_flag():
    for flag, value in [("fp16_allreduce", True), ("adasum", True), ("backward_passes_per_step", 2),
                        ("autotune", True)]:
        with pytest.raises(ConfigError, match=f"--{flag.replace('_', '-')} is a Horovod option"):
            TrainConfig(strategy="mirrored", **{flag: value})
    with pytest.raises(ConfigError, match="--lr-schedule step needs --lr-decay-epochs"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ConfigError, match="--label-smoothing must be in"):
        TrainConfig(label_smoothing=1.0)
    with pytest.raises(ConfigError, match="--autotune-log needs --autotune"):
        TrainConfig(autotune_log="a.csv")


def test_old_boolean_augment_maps_to_the_modes():
    assert TrainConfig(augment=True).augment == "standard"
    assert TrainConfig(augment=False).augment == "none"


def test_balanced_class_weights_equalise_each_class_total():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 4)
    weights = balanced_class_weights(labels, 3)
    assert weights == pytest.approx({0: 16 / 30, 1: 16 / 6, 2: 16 / 12})
    totals = [weights[c] * np.sum(labels == c) for c in range(3)]
    assert totals == pytest.approx([totals[0]] * 3)


def test_label_smoothing_target():
    logits = tf.constant([[2.0, 0.0, -1.0, 0.5]])
    loss = SmoothedSparseCrossentropy(0.2)(tf.constant([1]), logits).numpy()
    target = np.full(4, 0.2 / 4)
    target[1] += 0.8
    log_p = logits.numpy()[0] - np.log(np.exp(logits.numpy()[0]).sum())
    assert loss == pytest.approx(-(target * log_p).sum(), rel=1e-5)


def test_dataset_moments_combine_rank_sums():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(1000, 3)).astype(np.float64)

    def sums(p):
        return np.stack([np.full(3, len(p)), p.sum(0), (p * p).sum(0)], axis=1)

    mean, std = moments_from_sums([sums(pixels[:300]), sums(pixels[300:])])
    np.testing.assert_allclose(mean, pixels.mean(0) / 255, rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(0) / 255, rtol=1e-9)


@pytest.mark.parametrize("mode", ["flip", "flip_crop", "standard"])
def test_augment_modes_are_seeded_and_equal_eagerly_and_in_tf_data(mode):
    image = tf.constant(np.random.default_rng(1).integers(0, 256, (32, 32, 3)), tf.uint8)
    seed = tf.constant([3, 7], tf.int64)
    eager = augment(image, seed, mode).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(image).map(lambda x: augment(x, seed, mode)))).numpy()
    np.testing.assert_allclose(eager, mapped, atol=1e-4)
    assert eager.shape == (32, 32, 3) and eager.min() >= 0 and eager.max() <= 255
    flips = {bool(np.array_equal(augment(image, tf.constant([s, 0], tf.int64), "flip").numpy(),
                                 image.numpy()[:, ::-1].astype(np.float32))) for s in range(8)}
    assert flips == {True, False}  # some seeds flip, some do not


def test_early_stopping_counts_epochs_without_improvement():
    rows = [{"val_loss": 1.0}, {"val_loss": 0.8}, {"val_loss": 0.9}, {"val_loss": 0.85}]
    assert epochs_without_improvement(rows) == (0.8, 2)


def test_optimizers_and_top_k_metric():
    cfg = TrainConfig(optimizer="adamw", weight_decay=0.05)
    assert isinstance(make_optimizer(cfg, 0.1), tf.keras.optimizers.AdamW)
    assert make_optimizer(cfg, 0.1).weight_decay == pytest.approx(0.05)
    assert isinstance(make_optimizer(TrainConfig(optimizer="rmsprop"), 0.1), tf.keras.optimizers.RMSprop)
    assert [getattr(m, "name", m) for m in make_metrics(TrainConfig(), 11)] == ["accuracy", "top3_accuracy"]
    assert make_metrics(TrainConfig(), 3) == ["accuracy"]
