import numpy as np
import pytest
import tensorflow as tf

from defense_gan_tf import attacks, config as config_lib, training


def linear_model(seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(784, 10)).astype(np.float32) * 0.1
    b = rng.normal(size=(10,)).astype(np.float32) * 0.1
    fn = lambda x: tf.matmul(tf.reshape(x, [-1, 784]), w) + b
    return fn, w, b


def test_fgsm_on_linear_model_is_the_analytic_perturbation():
    fn, w, b = linear_model()
    rng = np.random.default_rng(1)
    x = rng.uniform(0.2, 0.8, size=(5, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 5)
    # d CE / d x = W (softmax(xW + b) - onehot(y)), so x_adv = clip(x + eps sign(.)).
    logits = x.reshape(5, -1) @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(10)[y]) @ w.T
    expected = np.clip(x.reshape(5, -1) + 0.1 * np.sign(grad), 0, 1).reshape(x.shape)
    got = attacks.fgsm(fn, x, eps=0.1, y=y).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # y=None attacks the model's own predictions.
    got_pred = attacks.fgsm(fn, x, eps=0.1).numpy()
    np.testing.assert_allclose(got_pred, attacks.fgsm(fn, x, eps=0.1,
                                                      y=logits.argmax(1)).numpy())


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model(x).numpy(), axis=1) == y))


@pytest.mark.parametrize("name", ["fgsm", "rand_fgsm", "pgd"])
def test_linf_attacks_respect_bound_and_range(toy, name):
    model, x, y = toy
    eps = 0.1
    if name == "fgsm":
        adv = attacks.fgsm(model, x, eps=eps, y=y)
    elif name == "rand_fgsm":
        adv = attacks.rand_fgsm(model, x, eps=eps, alpha=0.05, y=y, seed=0)
    else:
        adv = attacks.pgd_linf(model, x, eps=eps, step_size=0.02, iterations=10, y=y, seed=0)
    adv = adv.numpy()
    assert np.max(np.abs(adv - x)) <= eps + 1e-6
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert np.max(np.abs(adv - x)) > eps / 2  # it did move


def test_pgd_and_cw_lower_accuracy(toy):
    model, x, y = toy
    clean = _accuracy(model, x, y)
    assert clean > 0.95
    pgd = attacks.pgd_linf(model, x, eps=0.15, step_size=0.03, iterations=20, y=y, seed=0)
    assert _accuracy(model, pgd, y) < 0.2
    fgsm_acc = _accuracy(model, attacks.fgsm(model, x, eps=0.15, y=y), y)
    assert _accuracy(model, pgd, y) <= fgsm_acc + 1e-9
    cw = attacks.cw_l2(model, x[:16], y=y[:16], binary_search_steps=2, max_iterations=50,
                       learning_rate=0.05, initial_const=10.0)
    cw = cw.numpy()
    assert cw.min() >= 0.0 and cw.max() <= 1.0
    assert _accuracy(model, cw, y[:16]) < 0.2
    # CW looks for small perturbations: far below the L2 size of an eps=0.15 L-inf step.
    l2 = np.sqrt(np.sum((cw - x[:16]) ** 2, axis=(1, 2, 3)))
    assert np.median(l2) < 0.15 * 28


def test_argument_errors(toy):
    model, x, y = toy
    with pytest.raises(ValueError, match="eps"):
        attacks.fgsm(model, x, eps=-0.1)
    with pytest.raises(ValueError, match="eps"):
        attacks.fgsm(model, x, eps=1.5)
    with pytest.raises(ValueError, match="alpha"):
        attacks.rand_fgsm(model, x, eps=0.1, alpha=0.2)
    with pytest.raises(ValueError, match="clip_min"):
        attacks.fgsm(model, x, eps=0.1, clip_min=1.0, clip_max=0.0)


def test_input_gradient_norm_sees_masking(toy):
    model, x, y = toy
    norms = attacks.input_gradient_norm(model, x, y).numpy()
    assert norms.shape == (64,) and np.all(norms >= 0) and norms.mean() > 0
    masked = lambda t: model(tf.stop_gradient(t))
    assert not np.any(attacks.input_gradient_norm(masked, x, y).numpy())
    # An attack on a masked model does nothing: the honest report shows a zero gradient.
    np.testing.assert_array_equal(attacks.fgsm(masked, x, eps=0.1, y=y).numpy(), x)


def test_adversarial_training_raises_fgsm_accuracy(left_right_images):
    x, y = left_right_images(600)
    cfg = config_lib.ClassifierConfig(model="E")
    plain = training.train_classifier(x[:500], y[:500], cfg, epochs=6, verbose=0, seed=1)
    robust = training.train_classifier(x[:500], y[:500], cfg, epochs=6, verbose=0, seed=1,
                                       adversarial_eps=0.1)
    xt, yt = x[500:], y[500:]
    acc = {name: _accuracy(m, attacks.fgsm(m, xt, eps=0.1, y=yt), yt)
           for name, m in (("plain", plain), ("robust", robust))}
    assert _accuracy(robust, xt, yt) > 0.9
    assert acc["robust"] > acc["plain"] + 0.2, acc


_ATTACKS = {
    "fgsm": lambda fn, x, y: attacks.fgsm(fn, x, eps=0.1, y=y),
    "rand_fgsm": lambda fn, x, y: attacks.rand_fgsm(fn, x, eps=0.1, alpha=0.05, y=y, seed=0),
    "pgd": lambda fn, x, y: attacks.pgd_linf(fn, x, eps=0.1, step_size=0.02, iterations=2,
                                             y=y, seed=0),
    "cw": lambda fn, x, y: attacks.cw_l2(fn, x, y=y, max_iterations=2),
}


@pytest.mark.parametrize("name", sorted(_ATTACKS))
def test_attacks_refuse_images_of_the_wrong_scale_or_with_nan(name):
    fn, _, _ = linear_model()
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, size=(3, 28, 28, 1)).astype(np.float32)
    y = np.array([1, 2, 3])
    attack = _ATTACKS[name]
    with pytest.raises(ValueError, match="floating point"):
        attack(fn, (x * 255).astype(np.uint8), y)
    with pytest.raises(ValueError, match="outside the data range"):
        attack(fn, x * 255.0, y)
    nan = x.copy()
    nan[0, 3, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        attack(fn, nan, y)
    with pytest.raises(ValueError, match="y holds label 12"):
        attack(fn, x, np.array([1, 12, 3]))
    with pytest.raises(ValueError, match="y has 2 labels for 3 images"):
        attack(fn, x, np.array([1, 2]))
    with pytest.raises(ValueError, match="negative"):
        attack(fn, x, np.array([1, -1, 3]))
    with pytest.raises(ValueError, match="eps"):
        attacks.fgsm(fn, x, eps=float("nan"), y=y)


@pytest.mark.parametrize("adversarial_eps", [None, 0.1])
def test_classifier_training_reports_through_the_given_log_only(capsys, adversarial_eps,
                                                                left_right_images):
    x, y = left_right_images(64)
    messages = []
    training.train_classifier(x, y, config_lib.ClassifierConfig(model="E"), epochs=2,
                              seed=0, adversarial_eps=adversarial_eps, log=messages.append)
    assert len(messages) == 2 and "epoch 2/2" in messages[-1]
    assert capsys.readouterr().out == ""
    training.train_classifier(x, y, config_lib.ClassifierConfig(model="E"), epochs=1,
                              verbose=0, adversarial_eps=adversarial_eps, log=messages.append)
    assert len(messages) == 2 and capsys.readouterr().out == ""


def test_seeded_training_is_reproducible_and_leaves_global_random_state_alone(
        left_right_images):
    import random

    x, y = left_right_images(64)
    cfg = config_lib.ClassifierConfig(model="D")  # has dropout
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    a = training.train_classifier(x, y, cfg, epochs=2, seed=5, verbose=0)
    assert (np.random.rand(), random.random()) == expected  # not reseeded, not drawn from
    b = training.train_classifier(x, y, cfg, epochs=2, seed=5, verbose=0)
    c = training.train_classifier(x, y, cfg, epochs=2, seed=6, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(a.get_weights(), c.get_weights()))


def _gradient_rewritten(fn, rewrite):
    """fn with the gradient reaching its input replaced by rewrite(gradient)."""
    @tf.custom_gradient
    def gate(x):
        return tf.identity(x), lambda dy: rewrite(dy)

    return lambda x: fn(gate(x))


def _nan_and_inf(grad):
    flat = tf.reshape(grad, [tf.shape(grad)[0], -1])
    index = tf.range(tf.shape(flat)[1])
    flat = tf.where(index % 4 == 0, np.float32(np.nan), flat)  # every 4th pixel NaN
    flat = tf.where(index == 1, np.float32(np.inf), flat)  # one pixel +Inf
    return tf.reshape(flat, tf.shape(grad))


def test_nan_and_inf_gradients_give_finite_adversarial_images():
    fn, _, _ = linear_model()
    poisoned = _gradient_rewritten(fn, _nan_and_inf)
    x = np.full((3, 28, 28, 1), 0.5, np.float32)
    y = np.array([0, 1, 2])
    flat = attacks.fgsm(poisoned, x, eps=0.1, y=y).numpy().reshape(3, -1)
    assert np.all(np.isfinite(flat))
    nan_pixels = np.arange(784) % 4 == 0
    np.testing.assert_allclose(flat[:, nan_pixels], 0.5)  # no direction: unmoved
    np.testing.assert_allclose(flat[:, 1], 0.6, atol=1e-6)  # +Inf: a + step
    assert np.all(np.abs(flat[:, ~nan_pixels] - 0.5) > 0.09)
    pgd = attacks.pgd_linf(poisoned, x, y=y, eps=0.1, step_size=0.02, iterations=3,
                           seed=0).numpy()
    assert np.all(np.isfinite(pgd)) and np.abs(pgd - x).max() <= 0.1 + 1e-6
    l2 = attacks.pgd_l2(poisoned, x, y=y, eps=1.0, step_size=0.5, iterations=2,
                        random_start=False).numpy().reshape(3, -1)
    assert np.all(np.isfinite(l2))
    # With an Inf component the step follows it alone: that pixel moves, no other.
    np.testing.assert_allclose(l2[:, 1], 1.0, atol=1e-6)
    np.testing.assert_allclose(np.delete(l2, 1, axis=1), 0.5, atol=1e-6)


def test_pgd_l2_step_survives_gradients_whose_squares_overflow():
    fn, _, _ = linear_model()
    huge = _gradient_rewritten(fn, lambda g: g * 1e30)  # finite; squares overflow float32
    x = np.full((2, 28, 28, 1), 0.5, np.float32)
    y = np.array([3, 4])
    kwargs = dict(y=y, eps=1.0, step_size=0.25, iterations=2, random_start=False)
    plain = attacks.pgd_l2(fn, x, **kwargs).numpy()
    scaled = attacks.pgd_l2(huge, x, **kwargs).numpy()
    moved = np.linalg.norm((plain - x).reshape(2, -1), axis=1)
    assert np.all((moved > 0.45) & (moved <= 0.5 + 1e-5))  # two steps of 0.25
    np.testing.assert_allclose(scaled, plain, atol=1e-5)
