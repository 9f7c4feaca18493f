"""The averaged (EMA) generator: the update rule, checkpoints, warm start, export (its exact
resume is tests/test_gan_trainer.py's)."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from defense_gan_tf import config as config_lib
from defense_gan_tf import models, training
from defense_gan_tf.training import averaging, gan_trainer


def _images(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, 28, 28, 1)) / 255.0).astype(np.float32)


def _with(cfg, **overrides):
    return config_lib.override(cfg, {k.replace("__", "."): v for k, v in overrides.items()})


def _quiet(message):
    del message


def _checkpointed_average(output_dir, cfg):
    """The averaged generator's weights in the newest checkpoint of output_dir."""
    g = models.build_generator(cfg)
    ckpt = tf.train.Checkpoint(generator_average=g)
    ckpt.restore(tf.train.latest_checkpoint(os.path.join(output_dir, "checkpoints"))
                 ).expect_partial()
    return [v.numpy() for v in g.weights]


def _model_weights(path):
    return [np.asarray(w) for w in keras.models.load_model(path).get_weights()]


def test_warmup_decay_follows_the_schedule():
    assert float(averaging.warmup_decay(0.999, 0)) == pytest.approx(0.1)
    assert float(averaging.warmup_decay(0.999, 10)) == pytest.approx(11 / 20)
    assert float(averaging.warmup_decay(0.999, 10**6)) == pytest.approx(0.999)


def test_average_of_a_constant_sequence_is_that_constant(tiny_config):
    source = models.build_generator(tiny_config, seed=1)
    target = models.build_generator(tiny_config, seed=2)
    average = averaging.WeightAverage(source, target, 0.9)
    average.reset()
    for step in range(1, 30):
        average.update(step)
    for a, b in zip(target.get_weights(), source.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_average_matches_a_reference_of_the_update_rule(tiny_config):
    source = models.build_generator(tiny_config, seed=1)
    target = models.build_generator(tiny_config, seed=2)
    average = averaging.WeightAverage(source, target, 0.5)
    rng = np.random.default_rng(0)
    expected = [w.astype(np.float64) for w in target.get_weights()]
    for step in range(1, 8):  # decays 2/11, 3/12, ... then capped at 0.5
        values = [rng.standard_normal(w.shape).astype(np.float32)
                  for w in source.get_weights()]
        source.set_weights(values)
        average.update(step)
        d = min(0.5, (1 + step) / (10 + step))
        expected = [d * e + (1 - d) * v for e, v in zip(expected, values)]
    for a, b in zip(target.get_weights(), expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_average_refuses_another_architecture(tiny_config):
    other = _with(tiny_config, model__net_dim=8)
    with pytest.raises(ValueError, match="does not match"):
        averaging.WeightAverage(models.build_generator(tiny_config),
                                models.build_generator(other), 0.9)
    with pytest.raises(ValueError, match="ema_decay"):
        _with(tiny_config, gan__ema_decay=1.0)
    with pytest.raises(ValueError, match="ema_decay"):
        _with(tiny_config, gan__ema_decay=float("nan"))


def test_tiny_run_exports_an_averaged_generator_that_draws_in_range(tmp_path, tiny_config):
    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=3, gan__precision="mixed_bfloat16")
    result = training.train_gan(cfg, out, images=_images(), log=_quiet)
    assert result.average_path == os.path.join(out, "generator_ema.keras")
    average = keras.models.load_model(result.average_path)
    assert all(w.dtype == "float32" for w in average.weights)
    images = np.asarray(average(tf.random.normal([6, 8]), training=False))
    assert images.shape == (6, 28, 28, 1) and np.isfinite(images).all()
    assert images.min() >= 0.0 and images.max() <= 1.0
    np.testing.assert_array_equal(_checkpointed_average(out, cfg)[0],
                                  average.get_weights()[0])


def test_no_average_with_zero_decay(tmp_path, tiny_config):
    out = str(tmp_path / "run")
    result = training.train_gan(_with(tiny_config, gan__train_iters=2, gan__ema_decay=0.0),
                                out, images=_images(), log=_quiet)
    assert result.average_path is None
    assert not os.path.exists(os.path.join(out, "generator_ema.keras"))


def test_checkpoint_without_an_average_resumes_with_the_generator_weights(tmp_path,
                                                                          tiny_config):
    images = _images()
    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=2, gan__checkpoint_every=100)
    training.train_gan(_with(cfg, gan__ema_decay=0.0), out, images=images, log=_quiet)
    generator_at_2 = _model_weights(os.path.join(out, "generator.keras"))
    # An older checkpoint (no average) with the average now on: resumes, says so.
    messages = []
    config_path = os.path.join(out, "config.json")
    with open(config_path) as f:
        saved = json.load(f)
    saved["gan"]["ema_decay"] = 0.999
    with open(config_path, "w") as f:
        json.dump(saved, f)
    result = training.train_gan(_with(cfg, gan__train_iters=3, gan__ema_decay=0.999), out,
                                images=images, log=messages.append)
    assert result.start_iteration == 2
    assert any("holds no averaged generator" in m for m in messages)
    # At t=3 the decay is 4/13: the average is 4/13 of generator_at_2 + 9/13 of the new.
    generator_at_3 = _model_weights(os.path.join(out, "generator.keras"))
    averaged = _model_weights(os.path.join(out, "generator_ema.keras"))
    for a, g2, g3 in zip(averaged, generator_at_2, generator_at_3):
        np.testing.assert_allclose(a, 4 / 13 * g2 + 9 / 13 * g3, rtol=1e-5, atol=1e-6)


def _package(run_dir, dest, iteration, with_average):
    os.makedirs(dest)
    for name in ("generator.keras", "critic.keras"):
        shutil.copy(os.path.join(run_dir, name), dest)
    if with_average:
        shutil.copy(os.path.join(run_dir, "generator_ema.keras"), dest)
    with open(os.path.join(dest, "manifest.json"), "w") as f:
        json.dump({"iterations": iteration}, f)


@pytest.mark.parametrize("with_average", [False, True])
def test_warm_start_starts_the_average_from_the_package(tmp_path, tiny_config, with_average):
    images = _images()
    cfg = _with(tiny_config, gan__train_iters=2, gan__checkpoint_every=100, gan__ema_decay=0.5)
    first = str(tmp_path / "first")
    training.train_gan(cfg, first, images=images, log=_quiet)
    package = str(tmp_path / "package")
    _package(first, package, 2, with_average)
    warm = training.load_warm_start(package)
    assert (warm.average_path is not None) == with_average
    start = _model_weights(os.path.join(package, "generator_ema.keras" if with_average
                                        else "generator.keras"))
    out = str(tmp_path / "continued")
    messages = []
    training.train_gan(_with(cfg, gan__train_iters=3), out, images=images,
                       log=messages.append, warm_start=warm)
    assert any("has no generator_ema.keras" in m for m in messages) != with_average
    # One update at t=3, decay min(0.5, 4/13): 4/13 of the package's, 9/13 of the new.
    new = _model_weights(os.path.join(out, "generator.keras"))
    averaged = _model_weights(os.path.join(out, "generator_ema.keras"))
    for a, s, g in zip(averaged, start, new):
        np.testing.assert_allclose(a, 4 / 13 * s + 9 / 13 * g, rtol=1e-5, atol=1e-6)


def test_evaluation_scores_both_generators(tmp_path, tiny_config):
    seen = []

    def evaluator(generator):
        seen.append(("raw", generator.get_weights()[0].copy()))
        return {"figure": 1}

    def average_evaluator(generator):
        seen.append(("average", generator.get_weights()[0].copy()))
        return {"figure": 2}

    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=2, gan__checkpoint_every=100, gan__ema_decay=0.9)
    training.train_gan(cfg, out, images=_images(), log=_quiet, evaluator=evaluator,
                       evaluate_every=2, average_evaluator=average_evaluator)
    entries = gan_trainer.read_quality(os.path.join(out, "quality.jsonl"))
    assert len(entries) == 1
    assert entries[0]["figure"] == 1 and entries[0]["average"] == {"figure": 2}
    assert [name for name, _ in seen] == ["raw", "average"]
    assert not np.array_equal(seen[0][1], seen[1][1])


def test_jit_compiled_step_trains_with_finite_losses(tmp_path, tiny_config):
    # XLA draws z and the penalty weights with its own random algorithm, so its losses
    # differ from the plain step's; it must train all the same.
    cfg = _with(tiny_config, gan__train_iters=2, gan__checkpoint_every=100,
                gan__jit_compile=True)
    result = training.train_gan(cfg, str(tmp_path / "jit"), images=_images(), log=_quiet)
    assert result.iteration == 2
    assert set(result.last_logs) == {"critic_loss", "generator_loss", "gradient_penalty",
                                     "wasserstein"}
    assert all(np.isfinite(v) for v in result.last_logs.values())
