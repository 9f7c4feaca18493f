import keras
import numpy as np
import pytest
import tensorflow as tf

from defense_gan_tf import config as config_lib
from defense_gan_tf import models, training
from defense_gan_tf.training.wgan_gp import gradient_penalty, safe_norm


def test_penalty_of_linear_critic():
    # D(x) = <w, x> has grad_x D = w everywhere, so every penalty is (||w|| - 1)^2.
    rng = np.random.default_rng(0)
    w = tf.constant(rng.normal(size=(1, 6, 6, 1)).astype(np.float32))
    critic = lambda x, training=False: tf.reduce_sum(w * x, axis=[1, 2, 3])
    real = tf.constant(rng.uniform(size=(4, 6, 6, 1)).astype(np.float32))
    fake = tf.constant(rng.uniform(size=(4, 6, 6, 1)).astype(np.float32))
    gp = gradient_penalty(critic, real, fake, tf.constant([0.0, 0.3, 0.7, 1.0]))
    expected = (np.linalg.norm(w.numpy()) - 1.0) ** 2
    np.testing.assert_allclose(gp.numpy(), [expected] * 4, rtol=1e-5)


def test_penalty_of_quadratic_critic_uses_the_interpolate():
    # D(x) = ||x||^2 / 2 has grad = x, so the penalty is (||a r + (1-a) f|| - 1)^2.
    critic = lambda x, training=False: 0.5 * tf.reduce_sum(x * x, axis=[1, 2, 3])
    rng = np.random.default_rng(1)
    real = rng.uniform(size=(3, 4, 4, 1)).astype(np.float32)
    fake = rng.uniform(size=(3, 4, 4, 1)).astype(np.float32)
    alpha = np.array([0.1, 0.5, 0.9], np.float32)
    gp = gradient_penalty(critic, tf.constant(real), tf.constant(fake), tf.constant(alpha))
    x_hat = alpha[:, None, None, None] * real + (1 - alpha[:, None, None, None]) * fake
    expected = (np.linalg.norm(x_hat.reshape(3, -1), axis=1) - 1.0) ** 2
    np.testing.assert_allclose(gp.numpy(), expected, rtol=1e-5)


def test_safe_norm_has_finite_gradient_at_zero():
    x = tf.zeros([2, 3])
    with tf.GradientTape() as tape:
        tape.watch(x)
        n = safe_norm(x, axis=1)
    g = tape.gradient(n, x)
    assert np.all(np.isfinite(g.numpy()))
    np.testing.assert_allclose(n.numpy(), 1e-6, rtol=1e-3)


@pytest.fixture
def tiny_config(tiny_config):
    """Two critic steps per generator step: the critic loop runs more than once."""
    return config_lib.override(tiny_config, {"gan.critic_steps": 2})


def _model(tiny_config, seed=0):
    keras.utils.set_random_seed(seed)
    g = models.build_generator(tiny_config)
    d = models.build_critic(tiny_config)
    m = training.WGANGP(g, d, tiny_config.gan)
    m.compile()
    m.build_optimizers()
    return m


def _real(tiny_config, n=None):
    rng = np.random.default_rng(3)
    n = n or tiny_config.gan.batch_size
    return rng.uniform(size=(n, tiny_config.gan.critic_steps, 28, 28, 1)).astype(np.float32)


def test_train_step_updates_critic_k_times_per_generator_step(tiny_config):
    m = _model(tiny_config)
    before = [v.numpy().copy() for v in m.generator.trainable_variables]
    logs = m.train_step(tf.constant(_real(tiny_config)))
    assert int(m.g_optimizer.iterations) == 1
    assert int(m.d_optimizer.iterations) == tiny_config.gan.critic_steps
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert set(logs) == {"critic_loss", "generator_loss", "gradient_penalty", "wasserstein"}
    after = [v.numpy() for v in m.generator.trainable_variables]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_train_step_rejects_wrong_layout(tiny_config):
    m = _model(tiny_config)
    with pytest.raises(ValueError, match="critic_steps"):
        m.train_step(tf.zeros([4, 28, 28, 1]))


def test_critic_learns_to_separate_real_from_fake(tiny_config):
    # Real images are all ones; after some steps the critic scores them above fakes.
    m = _model(tiny_config)
    real = tf.ones([4, tiny_config.gan.critic_steps, 28, 28, 1])
    step = tf.function(m.train_step)
    first = float(step(real)["wasserstein"])
    for _ in range(15):
        last = float(step(real)["wasserstein"])
    assert last > first and last > 0


def test_mirrored_strategy_matches_default(tiny_config):
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) < 2:
        pytest.skip("needs two logical CPU devices")
    real = _real(tiny_config)

    def run(strategy):
        with strategy.scope():
            m = _model(tiny_config, seed=7)
        ds = tf.data.Dataset.from_tensors(real).repeat(3)
        iterator = iter(strategy.experimental_distribute_dataset(ds))

        @tf.function
        def step(batch):
            out = strategy.run(m.train_step, args=(batch,))
            return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                    for k, v in out.items()}

        logs = [step(next(iterator)) for _ in range(3)]
        weights = [v.numpy() for v in m.generator.weights + m.critic.weights]
        return [{k: float(v) for k, v in l.items()} for l in logs], weights

    mirrored = training.make_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    logs_m, weights_m = run(mirrored)
    logs_d, weights_d = run(tf.distribute.get_strategy())
    for a, b in zip(logs_m, logs_d):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)
    for a, b in zip(weights_m, weights_d):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
