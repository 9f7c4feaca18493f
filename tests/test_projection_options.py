"""The cheaper projection options (ProjectionConfig: bfloat16 descent, restart pruning,
early stopping, encoder start): what each keeps of the paper projection and what it saves."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from defense_gan_tf import config as config_lib
from defense_gan_tf import models
from defense_gan_tf.defense import Projector, project
from defense_gan_tf.defense.projection import bfloat16_twin


def cfg(**kw):
    return config_lib.ProjectionConfig(**kw)


@pytest.fixture(scope="module")
def conv_gen():
    """The paper's convolutional generator at a tiny width (bfloat16 needs real layers)."""
    c = config_lib.override(config_lib.preset("mnist"), {"model.net_dim": 8,
                                                          "model.latent_dim": 16})
    return models.build_generator(c, seed=0)


def _targets(g, n, seed=1, scale=0.5):
    z = tf.random.stateless_normal([n, int(g.input_shape[-1])], seed=[seed, 3]) * scale
    return g(z).numpy()


def test_bfloat16_descent_returns_float32_and_nearly_the_float32_result(conv_gen):
    twin = bfloat16_twin(conv_gen)
    assert twin.get_layer("up1").compute_dtype == "bfloat16"
    assert twin.layers[-1].compute_dtype == "float32"
    x = _targets(conv_gen, 4)
    a = project(conv_gen, x, cfg(iterations=30, restarts=3), seed=2)
    b = project(conv_gen, x, cfg(iterations=30, restarts=3, descent_precision="bfloat16"),
                seed=2)
    assert b.reconstruction.dtype == tf.float32 and b.error.dtype == tf.float32
    # The returned error is the float32 error of the returned reconstruction.
    np.testing.assert_allclose(
        b.error.numpy(), np.mean((b.reconstruction.numpy() - x) ** 2, axis=(1, 2, 3)),
        rtol=1e-5)
    # bfloat16 arithmetic took another path, but to about the same error.
    assert not np.array_equal(a.z.numpy(), b.z.numpy())
    np.testing.assert_allclose(b.error.numpy(), a.error.numpy(), rtol=0.25, atol=2e-4)


def test_pruning_keeps_the_clearly_best_restart_and_runs_the_schedule(dense_generator):
    g = dense_generator()
    z_true = tf.random.stateless_normal([2, 8], seed=[5, 5]) * 0.3
    x = g(z_true).numpy()
    restarts = 8
    far = tf.random.stateless_normal([2 * restarts, 8], seed=[6, 6]) * 3.0
    # Restart 5 of each image starts at its true z: it ends best, however the others go.
    z_init = tf.tensor_scatter_nd_update(far, [[5], [restarts + 5]], z_true)
    c = cfg(iterations=30, restarts=restarts, prune_at=(5, 10, 20))
    p = project(g, x, c, z_init=z_init)
    full = project(g, x, cfg(iterations=30, restarts=restarts), z_init=z_init)
    np.testing.assert_allclose(p.z.numpy(), full.z.numpy(), rtol=1e-5, atol=1e-6)
    assert float(tf.reduce_max(p.error)) < 1e-6
    # Rows x steps: 8 restarts for 5 steps, 4 for 5, 2 for 10, 1 for 10; per image.
    assert c.restart_schedule == ((0, 5, 8), (5, 10, 4), (10, 20, 2), (20, 30, 1))
    assert int(p.row_steps) == 2 * (8 * 5 + 4 * 5 + 2 * 10 + 1 * 10)
    assert int(p.steps) == 30 and int(full.row_steps) == 2 * 8 * 30


def test_early_stopping_stops_converged_images_first_and_alone(dense_generator):
    g = dense_generator()
    z_true = tf.random.stateless_normal([1, 8], seed=[7, 7]) * 0.3
    converged = g(z_true).numpy()
    hard = np.random.default_rng(0).uniform(size=(1, 28, 28, 1)).astype(np.float32)
    c = cfg(iterations=200, restarts=1, early_stop_tolerance=1e-6, early_stop_window=10)
    start = np.concatenate([z_true.numpy(), np.zeros((1, 8), np.float32)])
    # An image already at its minimum stops after two windows (the first sets the
    # reference its improvement is measured against); the loop then ends.
    alone = project(g, converged, c, z_init=start[:1])
    assert int(alone.steps) == 20
    # A batch runs until its last image stops, but the converged image's result is the
    # one it gets alone: its z stayed where it stopped. (Up to float32 round-off: oneDNN
    # kernels may round a batch of two differently from a batch of one.)
    both = project(g, np.concatenate([converged, hard]), c, z_init=start)
    assert int(both.steps) > 20
    np.testing.assert_allclose(both.z.numpy()[0], alone.z.numpy()[0], rtol=1e-6, atol=1e-7)
    hard_alone = project(g, hard, c, z_init=start[1:])
    np.testing.assert_allclose(both.z.numpy()[1], hard_alone.z.numpy()[0], rtol=1e-5,
                               atol=1e-6)
    # Without early stopping all 200 steps run.
    assert int(project(g, converged, cfg(iterations=200, restarts=1),
                       z_init=start[:1]).steps) == 200


def test_full_gradient_runs_through_the_options(conv_gen):
    x = tf.constant(_targets(conv_gen, 2, seed=4))
    c = cfg(iterations=6, restarts=4, prune_at=(2, 4), descent_precision="bfloat16",
            early_stop_tolerance=1e-9, early_stop_window=2)
    projector = Projector(conv_gen, c, gradient="full")
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = tf.reduce_sum(projector(x, seed=3).reconstruction)
    grad = tape.gradient(out, x)
    assert grad is not None and np.all(np.isfinite(grad.numpy()))
    assert float(tf.norm(grad)) > 0


def test_encoder_start_replaces_one_restart(dense_generator):
    g = dense_generator()
    z_true = tf.random.stateless_normal([3, 8], seed=[8, 8]) * 0.3
    x = g(z_true).numpy()
    table = {tuple(np.round(img.ravel()[:5], 5)): z for img, z in zip(x, z_true.numpy())}

    class Oracle(keras.Model):  # an exact encoder for these three images
        def call(self, images, training=False):
            return tf.constant(np.stack([table[tuple(np.round(i.ravel()[:5], 5))]
                                         for i in images.numpy()]))

    c = cfg(iterations=1, restarts=3, encoder_start=True)
    with pytest.raises(ValueError, match="encoder"):
        Projector(g, c)
    p = Projector(g, c, encoder=Oracle())
    tf.config.run_functions_eagerly(True)
    try:
        out = p(x, seed=1)
    finally:
        tf.config.run_functions_eagerly(False)
    assert float(tf.reduce_max(out.error)) < 1e-5  # the encoder's start wins


def test_presets_and_the_projection_flag():
    paper = config_lib.projection_preset("paper", "mnist")
    assert paper == config_lib.preset("mnist").projection
    fast = config_lib.projection_preset("fast", "mnist")
    assert (fast.iterations, fast.restarts) == (paper.iterations, paper.restarts)
    assert fast != paper
    rows = sum((end - start) * r for start, end, r in fast.restart_schedule)
    assert rows <= paper.iterations * paper.restarts / 5  # at least 5x fewer passes
    assert config_lib.projection_preset("paper", "celeba").restarts == 2
    with pytest.raises(ValueError, match="unknown projection preset"):
        config_lib.projection_preset("turbo")


@pytest.mark.parametrize("flags,precision,warned", [
    ({"avx2"}, "bfloat16", True), ({"avx512_bf16"}, "bfloat16", False),
    ({"avx2"}, "float32", False)])
def test_bfloat16_descent_warns_where_the_cpu_would_emulate_it(conv_gen, monkeypatch, flags,
                                                               precision, warned):
    import warnings

    from defense_gan_tf import hardware

    monkeypatch.setattr(hardware, "cpu_info", lambda: ("cpu", frozenset(flags)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Projector(conv_gen, cfg(iterations=2, restarts=1, descent_precision=precision))
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("--rec_precision=float32" in m for m in messages) == warned


def test_rec_precision_flag_overrides_the_preset_and_keeps_its_pruning():
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, 'bin'); import flags as f; "
            "from absl import flags as af; f.define_projection_flags(); "
            "af.FLAGS(['x', '--projection=fast'] + sys.argv[1:]); "
            "c = f.projection_config('mnist'); print(c.descent_precision, list(c.prune_at))")
    runs = {args: subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                                 text=True, check=True).stdout.strip()
            for args in ((), ("--rec_precision=float32",))}
    assert runs[()] == "bfloat16 [10, 20, 40]"
    assert runs[("--rec_precision=float32",)] == "float32 [10, 20, 40]"
