import keras
import numpy as np
import pytest
import tensorflow as tf

from defense_gan_tf import config as config_lib
from defense_gan_tf import models
from defense_gan_tf.defense import DefendedClassifier, Projector, project

LATENT = 8


@pytest.fixture(scope="module")
def gen(dense_generator):
    return dense_generator()


def targets(g, n=4, seed=1):
    z0 = tf.random.stateless_normal([n, LATENT], seed=[seed, 2]) * np.sqrt(1 / LATENT)
    return g(z0).numpy(), z0.numpy()


def cfg(**kw):
    return config_lib.ProjectionConfig(**kw)


def test_recovers_images_in_the_range(gen):
    x, z0 = targets(gen)
    p = project(gen, x, cfg(iterations=100, restarts=4), seed=0)
    assert p.reconstruction.shape == x.shape and p.z.shape == (4, LATENT)
    assert p.error.shape == (4,)
    assert float(tf.reduce_max(p.error)) < 1e-3
    np.testing.assert_allclose(p.error.numpy(),
                               np.mean((p.reconstruction.numpy() - x) ** 2, axis=(1, 2, 3)),
                               rtol=1e-5, atol=1e-9)


def test_error_decreases_with_iterations(gen):
    x = np.random.default_rng(0).uniform(size=(6, 28, 28, 1)).astype(np.float32)
    errors = [float(tf.reduce_mean(project(gen, x, cfg(iterations=L, restarts=2),
                                           seed=3).error)) for L in (1, 5, 20, 60)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0]


def test_best_of_restarts_is_the_lowest_error(gen):
    x = np.random.default_rng(1).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    restarts = 5
    z_init = tf.random.stateless_normal([3 * restarts, LATENT], seed=[4, 4]) * 0.5
    best = project(gen, x, cfg(iterations=15, restarts=restarts), z_init=z_init)
    singles = np.array([[project(gen, x[i:i + 1], cfg(iterations=15, restarts=1),
                                 z_init=z_init[i * restarts + r:i * restarts + r + 1]
                                 ).error.numpy()[0] for r in range(restarts)]
                        for i in range(3)])
    assert len({tuple(np.round(row, 6)) for row in singles}) > 1  # restarts do differ
    np.testing.assert_allclose(best.error.numpy(), singles.min(axis=1), rtol=1e-4)
    for i in range(3):
        r = int(np.argmin(singles[i]))
        single = project(gen, x[i:i + 1], cfg(iterations=15, restarts=1),
                         z_init=z_init[i * restarts + r:i * restarts + r + 1])
        np.testing.assert_allclose(best.z.numpy()[i], single.z.numpy()[0], rtol=1e-4,
                                   atol=1e-6)


def test_result_independent_of_batch_companions(gen):
    x = np.random.default_rng(2).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    z_init = tf.random.stateless_normal([8, LATENT], seed=[5, 5])
    c = cfg(iterations=30, restarts=2)
    together = project(gen, x, c, z_init=z_init)
    alone = project(gen, x[2:3], c, z_init=z_init[4:6])
    np.testing.assert_allclose(together.reconstruction.numpy()[2],
                               alone.reconstruction.numpy()[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(together.error.numpy()[2], alone.error.numpy()[0], rtol=1e-5)


def _reference_projection(g, x, z, iterations, lr, momentum, decay_step=None, factor=1.0):
    """NumPy momentum descent for G(z) = sigmoid(W z + b): the update of TF1's
    MomentumOptimizer, v <- m v + grad, z <- z - lr v, with
    grad = W^T [2 / P (G - x) G (1 - G)] for the per-image mean squared error."""
    w, b = [v.numpy().astype(np.float64) for v in g.layers[1].weights]
    x = x.reshape(len(x), -1).astype(np.float64)
    z = z.astype(np.float64)
    v = np.zeros_like(z)
    for t in range(iterations):
        out = 1 / (1 + np.exp(-(z @ w + b)))
        grad = (2.0 / x.shape[1] * (out - x) * out * (1 - out)) @ w.T
        v = momentum * v + grad
        rate = lr * (factor if decay_step is not None and t >= decay_step else 1.0)
        z = z - rate * v
    return z


@pytest.mark.parametrize("decay", [False, True])
def test_matches_reference_momentum_descent(gen, decay):
    x = np.random.default_rng(3).uniform(size=(2, 28, 28, 1)).astype(np.float32)
    z_init = (np.random.default_rng(4).normal(size=(2, LATENT)) * 0.3).astype(np.float32)
    c = cfg(iterations=10, restarts=1, learning_rate=2.0, momentum=0.7, decay=decay,
            decay_factor=0.1, decay_at=0.5)
    got = project(gen, x, c, z_init=z_init).z.numpy()
    want = _reference_projection(gen, x, z_init, 10, 2.0, 0.7,
                                 decay_step=5 if decay else None, factor=0.1)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def _vjp(g, x, mode, iterations=2, z_init=None):
    x = tf.constant(x)
    upstream = tf.random.stateless_normal(x.shape, seed=[9, 9])
    with tf.GradientTape() as tape:
        tape.watch(x)
        r = project(g, x, cfg(iterations=iterations, restarts=1), z_init=z_init,
                    gradient=mode).reconstruction
        s = tf.reduce_sum(r * upstream)
    return tape.gradient(s, x), upstream


def test_bpda_gradient_is_identity_and_none_is_zero(gen):
    x = np.random.default_rng(5).uniform(size=(2, 28, 28, 1)).astype(np.float32)
    grad, upstream = _vjp(gen, x, "bpda", z_init=np.zeros((2, LATENT), np.float32))
    np.testing.assert_allclose(grad.numpy(), upstream.numpy())
    grad, _ = _vjp(gen, x, "none", z_init=np.zeros((2, LATENT), np.float32))
    assert grad is not None and not np.any(grad.numpy())


def test_full_gradient_matches_finite_differences(gen):
    rng = np.random.default_rng(6)
    x = rng.uniform(0.2, 0.8, size=(1, 28, 28, 1)).astype(np.float32)
    z_init = (rng.normal(size=(1, LATENT)) * 0.3).astype(np.float32)
    grad, upstream = _vjp(gen, x, "full", iterations=2, z_init=z_init)
    assert float(tf.norm(grad)) > 0

    def objective(xv):
        r = project(gen, xv, cfg(iterations=2, restarts=1), z_init=z_init).reconstruction
        return float(tf.reduce_sum(tf.cast(r, tf.float64) * tf.cast(upstream, tf.float64)))

    # Directional derivative along a random direction, by central differences.
    direction = rng.normal(size=x.shape).astype(np.float32)
    direction /= np.linalg.norm(direction)
    h = 1e-2
    numeric = (objective(x + h * direction) - objective(x - h * direction)) / (2 * h)
    analytic = float(np.sum(grad.numpy() * direction))
    assert analytic == pytest.approx(numeric, rel=0.05, abs=1e-4)


@pytest.mark.parametrize("bad,message", [
    (np.zeros((28, 28, 1), np.float32), "rank 4"),
    (np.zeros((2, 28, 28, 3), np.float32), "channel"),
    (np.zeros((2, 32, 32, 1), np.float32), "shape"),
    (np.zeros((2, 28, 28, 1), np.uint8), "floating point"),
    (np.full((2, 28, 28, 1), 1.5, np.float32), "outside the generator's range"),
    (np.full((2, 28, 28, 1), np.nan, np.float32), "NaN or Inf"),
    (np.full((2, 28, 28, 1), np.inf, np.float32), "NaN or Inf"),
])
def test_bad_inputs_raise_value_error(gen, bad, message):
    with pytest.raises(ValueError, match=message):
        project(gen, bad, cfg(iterations=1, restarts=1))


def test_bad_z_init_and_gradient_mode(gen):
    x = np.zeros((2, 28, 28, 1), np.float32)
    with pytest.raises(ValueError, match="z_init"):
        project(gen, x, cfg(iterations=1, restarts=2), z_init=np.zeros((2, LATENT)))
    with pytest.raises(ValueError, match="gradient"):
        project(gen, x, cfg(iterations=1, restarts=1), gradient="exact")


def test_graph_mode_inputs_are_checked_by_assertions(gen):
    @tf.function
    def run(x):
        return project(gen, x, cfg(iterations=1, restarts=1)).error

    assert run(tf.zeros([2, 28, 28, 1])).shape == (2,)
    with pytest.raises(tf.errors.InvalidArgumentError, match="above the generator range"):
        run(tf.fill([2, 28, 28, 1], 3.0))


def test_celeba_generator_in_minus_one_to_one():
    c = config_lib.override(config_lib.preset("celeba"), {"model.net_dim": 2,
                                                          "model.latent_dim": 4})
    g = models.build_generator(c, seed=0)
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 64, 64, 3)).astype(np.float32)
    p = project(g, x, cfg(iterations=2, restarts=2), seed=1)
    assert p.reconstruction.shape == (2, 64, 64, 3)
    assert float(tf.reduce_min(p.reconstruction)) >= -1.0
    with pytest.raises(ValueError, match="outside"):
        project(g, x * 0 - 1.5, cfg(iterations=1, restarts=1))


def test_seed_is_reproducible_and_batch_dimension_is_free(gen):
    x = np.random.default_rng(7).uniform(size=(5, 28, 28, 1)).astype(np.float32)
    c = cfg(iterations=5, restarts=3)
    a = project(gen, x, c, seed=11).z.numpy()
    np.testing.assert_array_equal(a, project(gen, x, c, seed=11).z.numpy())
    assert project(gen, x[:1], c, seed=1).z.shape == (1, LATENT)
    assert project(gen, np.zeros((0, 28, 28, 1), np.float32), c).z.shape == (0, LATENT)


def test_defended_classifier(gen):
    keras.utils.set_random_seed(0)
    clf = models.build_classifier("E")
    x, _ = targets(gen, n=6)
    defended = DefendedClassifier(clf, gen, cfg(iterations=20, restarts=2), seed=3)
    logits = defended(x)
    rec = defended.reconstruct(x)
    np.testing.assert_allclose(logits.numpy(), clf(rec).numpy(), rtol=1e-5, atol=1e-5)
    assert defended.reconstruction_error(x).shape == (6,)
    # Keras evaluate works on the defended model: agreement with the classifier's own labels.
    labels = np.argmax(clf(x).numpy(), axis=1)
    defended.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                     metrics=["accuracy"])
    _, accuracy = defended.evaluate(x, labels, batch_size=3, verbose=0)
    assert accuracy >= 0.5
    # BPDA: the input gradient is the classifier's gradient at the reconstruction.
    bpda = DefendedClassifier(clf, gen, cfg(iterations=20, restarts=2), gradient="bpda",
                              seed=3)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(bpda(xt)[:, 0])
    g_def = tape.gradient(loss, xt)
    r = tf.constant(bpda.reconstruct(x))
    with tf.GradientTape() as tape:
        tape.watch(r)
        loss = tf.reduce_sum(clf(r)[:, 0])
    np.testing.assert_allclose(g_def.numpy(), tape.gradient(loss, r).numpy(), rtol=1e-4,
                               atol=1e-6)


def test_seeded_defense_shares_its_starts_with_the_attacker(gen):
    """same_init (white-box revisited): a seed fixes the starts; no seed redraws them."""
    g = gen
    x, _ = targets(g, n=3)
    clf = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Flatten(),
                            keras.layers.Dense(2)])
    c = cfg(iterations=2, restarts=2)
    defender = DefendedClassifier(clf, g, c, seed=7)
    attacker = DefendedClassifier(clf, g, c, gradient="full", seed=7)
    first = defender.project(x)
    np.testing.assert_array_equal(first.z.numpy(), defender.project(x).z.numpy())
    np.testing.assert_array_equal(first.z.numpy(), attacker.project(x).z.numpy())
    other = DefendedClassifier(clf, g, c, seed=8).project(x)
    assert not np.allclose(first.z.numpy(), other.z.numpy())
    fresh = DefendedClassifier(clf, g, c)
    assert not np.allclose(fresh.project(x).z.numpy(), fresh.project(x).z.numpy())


def _two_drawing_defenses(gen):
    """Two images and two defenses drawing their starts from the same stream."""
    x, _ = targets(gen, n=2)
    clf = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Flatten(),
                            keras.layers.Dense(2)])
    c = cfg(iterations=2, restarts=2)
    return x, DefendedClassifier(clf, gen, c, draw_seed=4), DefendedClassifier(
        clf, gen, c, draw_seed=4)


def test_draw_seed_gives_fresh_but_reproducible_starts(gen):
    x, one, two = _two_drawing_defenses(gen)
    first, second = one.project(x).z.numpy(), one.project(x).z.numpy()
    assert not np.allclose(first, second)          # fresh starts on every call
    np.testing.assert_array_equal(first, two.project(x).z.numpy())   # the same stream
    np.testing.assert_array_equal(second, two.project(x).z.numpy())


def test_an_interrupted_projection_does_not_use_up_its_draw(gen):
    """A call stopped by a signal leaves the draw position where it was, so a resumed
    run draws what an uninterrupted one would (and the position it saves is right)."""
    x, interrupted, straight = _two_drawing_defenses(gen)
    real = interrupted.projector

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    interrupted.projector = stop
    with pytest.raises(KeyboardInterrupt):
        interrupted.project(x)
    assert interrupted.draws == 0
    interrupted.projector = real
    np.testing.assert_array_equal(interrupted.project(x).z.numpy(),
                                  straight.project(x).z.numpy())
    assert interrupted.draws == straight.draws == 1


def test_large_inputs_are_projected_in_chunks_with_the_same_results(gen, monkeypatch):
    from defense_gan_tf.defense.projection import Projector

    x, _ = targets(gen, n=7)
    c = cfg(iterations=5, restarts=2)
    whole = Projector(gen, c)(x, seed=3)
    chunked = Projector(gen, c)
    monkeypatch.setattr(chunked, "max_batch", 3)
    calls = []
    real = chunked._compiled

    def counting(images, z_init):
        calls.append(int(images.shape[0]))
        return real(images, z_init)

    monkeypatch.setattr(chunked, "_compiled", counting)
    parts = chunked(x, seed=3)
    assert calls == [3, 3, 1]
    for a, b in zip(whole[:3], parts[:3]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    assert int(parts.row_steps) == int(whole.row_steps)
    # The gradient flows through the chunks as through one call (BPDA: the identity).
    bpda = Projector(gen, c, gradient="bpda")
    monkeypatch.setattr(bpda, "max_batch", 3)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(bpda(xt, seed=3).reconstruction)
    np.testing.assert_allclose(tape.gradient(loss, xt).numpy(), np.ones_like(x))


def test_the_fused_loss_and_gradient_is_the_eager_tapes_and_draws_alike(monkeypatch):
    """DefendedClassifier.loss_and_input_gradient (loss and gradient in one compiled graph,
    the attacks' FGSM / PGD path) gives the eager tape's loss and input gradient around
    the defended logits, to float32 rounding: in full mode, where the unrolled loop
    recomputed in segments (L=7 in segments of 3, 3 and 1, the learning-rate decay at step
    4 inside a segment, a convolutional generator) gives the gradient that keeps every
    step; in BPDA. With a caller's seed, with the draw_seed stream (counted
    alike), over chunks of max_batch images, and refusing labels the classifier does not
    have."""
    from defense_gan_tf.attacks.common import loss_and_gradient
    from defense_gan_tf.config import override, preset

    g = models.build_generator(override(preset("mnist"), {"model.net_dim": 4,
                                                          "model.latent_dim": 8}), seed=0)
    clf = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(2, 5, 3),
                            keras.layers.Flatten(), keras.layers.Dense(3)])
    x = tf.constant(np.random.default_rng(2).uniform(0.1, 0.9, (3, 28, 28, 1)), tf.float32)
    y = tf.constant([0, 2, 1], tf.int64)
    c = cfg(iterations=7, restarts=2, decay=True, decay_at=0.5)

    def eager(defended, seed=None):  # the attacks' helper without the fused method
        return loss_and_gradient(lambda images, seed=None: defended(images, seed=seed),
                                 x, y, seed=seed)

    monkeypatch.setattr(Projector, "max_batch", 2)  # 3 images: chunks of 2 and 1
    fused = {}
    for gradient, segment in (("full", 3), ("full", 0), ("bpda", None)):
        defended = DefendedClassifier(clf, g, c, gradient=gradient,
                                      checkpoint_segment=segment)
        assert defended.projector.segment == (segment if gradient == "full" else 0)
        fused[gradient, segment] = loss_and_gradient(defended, x, y, seed=[5, 1])
        if segment == 0:
            continue  # the eager tape around the plain loop: as the segmented one
        loss, grad = eager(defended, seed=[5, 1])
        assert np.abs(grad.numpy()).max() > 0
        for ours, theirs in zip(fused[gradient, segment], (loss, grad)):
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4,
                                       atol=1e-5 * np.abs(theirs.numpy()).max())
    for ours, theirs in zip(fused["full", 3], fused["full", 0]):  # segments change nothing
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4,
                                   atol=1e-5 * np.abs(theirs.numpy()).max())
    # The default segment is about sqrt(L), in full mode only.
    assert Projector(g, cfg(iterations=200), gradient="full").segment == 15
    assert Projector(g, cfg(iterations=200), gradient="bpda").segment == 0
    # The draw_seed stream: the fused calls draw what eager calls would, and count them.
    a = defended  # BPDA: the same starts, a cheaper backward pass
    a.draw_seed = 9
    fused_losses = [a.loss_and_input_gradient(x, y)[0].numpy() for _ in range(2)]
    assert a.draws == 2
    a.draws = 0
    eager_losses = [eager(a)[0].numpy() for _ in range(2)]
    assert a.draws == 2
    assert not np.allclose(fused_losses[0], fused_losses[1])  # fresh starts per call
    np.testing.assert_allclose(fused_losses, eager_losses, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="y holds label 3, but the model has 3 classes"):
        a.loss_and_input_gradient(x, tf.constant([0, 3, 1]))
    with pytest.raises(ValueError, match="labels must be a vector of 3"):
        a.loss_and_input_gradient(x, y[:2])
    assert a.draws == 2
    empty_loss, empty_grad = a.loss_and_input_gradient(x[:0], y[:0])
    assert empty_loss.shape == (0,) and empty_grad.shape == (0, 28, 28, 1)


def test_a_projection_config_may_be_a_dict_of_its_fields(gen):
    x, _ = targets(gen, n=2)
    clf = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Flatten(),
                            keras.layers.Dense(2)])
    defended = DefendedClassifier(clf, gen, {"iterations": 3, "restarts": 2}, seed=1)
    assert defended.projection_config == cfg(iterations=3, restarts=2)
    assert defended(x).shape == (2, 2)
    with pytest.raises(ValueError, match="unknown projection setting.*'iters'"):
        DefendedClassifier(clf, gen, {"iters": 3})
    with pytest.raises(ValueError, match="projection.restarts"):
        project(gen, x, {"restarts": 0})
    with pytest.raises(TypeError, match="ProjectionConfig or a dict"):
        project(gen, x, 3)


def test_a_long_batch_reports_its_steps_from_inside_the_compiled_loop(gen, capfd,
                                                                      monkeypatch):
    """With ``Projector.progress_every`` set, the compiled loop prints its steps (and the
    full gradient's backward pass its segments) to standard error; the results do not
    change, and by default nothing is printed."""
    from defense_gan_tf.defense.projection import Projector

    x, _ = targets(gen, n=2)
    c = cfg(iterations=7, restarts=2)
    quiet = Projector(gen, c)(x, seed=3).reconstruction.numpy()
    assert "projection:" not in capfd.readouterr().err
    monkeypatch.setattr(Projector, "progress_every", 3)
    loud = Projector(gen, c)(x, seed=3).reconstruction.numpy()
    err = capfd.readouterr().err
    steps = [line for line in err.splitlines() if line.startswith("projection: step")]
    assert steps == ["projection: step 3 of 7", "projection: step 6 of 7",
                     "projection: step 7 of 7"], err
    np.testing.assert_array_equal(loud, quiet)
    full = Projector(gen, c, gradient="full", checkpoint_segment=2)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(full(xt, seed=3).reconstruction)
    assert tape.gradient(loss, xt) is not None
    err = capfd.readouterr().err
    assert "projection: step 7 of 7" in err
    assert "projection: gradient through steps 0-2 of 7 done" in err, err


def test_replicas_split_a_batch_and_give_one_devices_results(gen):
    """Two logical CPU devices (tests/conftest.py) each project a share of the images:
    every image keeps its own starts and gets what one device gives it, with the same
    restarts and generator passes; an odd batch, one image, and chunks per replica too."""
    from defense_gan_tf.training import make_strategy

    strategy = make_strategy("mirrored")
    if strategy.num_replicas_in_sync < 2:
        pytest.skip("needs two logical CPU devices")
    c = cfg(iterations=6, restarts=3)
    one = Projector(gen, c)
    replicated = Projector(gen, c, strategy=strategy)
    devices = []
    real = replicated._compiled

    def where(images, z_init):  # runs on each replica, under its device
        out = real(images, z_init)
        devices.append((out.reconstruction.device, int(images.shape[0])))
        return out

    replicated._compiled = where
    for n in (7, 1):
        x, _ = targets(gen, n=n)
        devices.clear()
        a, b = one(x, seed=5), replicated(x, seed=5)
        assert sorted(k for _, k in devices) == sorted([n // 2, n - n // 2])
        assert len({d for d, _ in devices}) == 2  # on both devices
        for u, v in zip(a[:3], b[:3]):
            np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-5, atol=1e-6)
        assert int(a.row_steps) == int(b.row_steps) and int(a.steps) == int(b.steps)
    replicated.max_batch = 2  # 2 per replica: chunks of 4 and 3, each split in two
    x, _ = targets(gen, n=7)
    devices.clear()
    b = replicated(x, seed=5)
    assert sorted(k for _, k in devices) == [1, 2, 2, 2]
    np.testing.assert_allclose(b.reconstruction.numpy(),
                               one(x, seed=5).reconstruction.numpy(), rtol=1e-5, atol=1e-6)
    # DefendedClassifier passes its strategy on: same logits as on one device.
    clf = keras.Sequential([keras.Input(gen.output_shape[1:]), keras.layers.Flatten(),
                            keras.layers.Dense(3)])
    np.testing.assert_allclose(
        DefendedClassifier(clf, gen, c, seed=5, strategy=strategy)(x).numpy(),
        DefendedClassifier(clf, gen, c, seed=5)(x).numpy(), rtol=1e-5, atol=1e-5)


def test_xla_compiled_projection_matches_the_plain_graph(gen):
    """jit_compile=True (XLA) gives the plain compiled projection's results within
    float32 rounding, an empty batch included, with the same starts and step counts."""
    c = cfg(iterations=8, restarts=3)
    x, _ = targets(gen, n=5)
    plain = Projector(gen, c)(x, seed=4)
    xla = Projector(gen, c, jit_compile=True)
    fast = xla(x, seed=4)
    for a, b in zip(plain[:3], fast[:3]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    assert int(plain.row_steps) == int(fast.row_steps) == 5 * 3 * 8
    assert xla(x[:0], seed=4).reconstruction.shape[0] == 0
    z0 = xla.initial_latents(5, seed=4)
    hlo = xla._compiled.experimental_get_compiler_ir(tf.constant(x), z0)(stage="hlo")
    assert "HloModule" in hlo and "while" in hlo  # the descent loop, compiled by XLA


def test_an_execution_block_sets_how_projectors_run_not_what_they_compute(gen):
    from defense_gan_tf.defense.projection import execution
    from defense_gan_tf.training import make_strategy

    strategy = make_strategy("mirrored")
    with execution(strategy=strategy, jit_compile=True):
        inside = Projector(gen, cfg(iterations=2, restarts=1))
        own = Projector(gen, cfg(iterations=2, restarts=1), jit_compile=False)
    outside = Projector(gen, cfg(iterations=2, restarts=1))
    assert inside.jit_compile and not own.jit_compile and not outside.jit_compile
    assert outside.strategy is None and own.strategy is inside.strategy
    assert inside.strategy is (strategy if strategy.num_replicas_in_sync > 1 else None)
