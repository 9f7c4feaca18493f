import numpy as np
import tensorflow as tf

from defense_gan_tf import attacks, models


def test_augmentation_doubles_and_steps_along_the_jacobian_row():
    rng = np.random.default_rng(0)
    w = tf.constant(rng.normal(size=(784, 10)).astype(np.float32))
    substitute = lambda x: tf.matmul(tf.reshape(x, [-1, 784]), w)
    x = rng.uniform(0.2, 0.8, size=(6, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 6)
    grown = attacks.jacobian_augmentation(substitute, x, labels, 0.1)
    assert grown.shape == (12, 28, 28, 1)
    np.testing.assert_array_equal(grown[:6], x)
    # For a linear substitute, d F(x)[y] / dx = W[:, y]: each point moves by 0.1 sign(W[:, y]).
    expected = x + 0.1 * np.sign(w.numpy()[:, labels].T).reshape(x.shape)
    np.testing.assert_allclose(grown[6:], np.clip(expected, 0, 1), atol=1e-6)
    # A negative lambda steps the other way.
    back = attacks.jacobian_augmentation(substitute, x, labels, -0.1)
    np.testing.assert_allclose(back[6:], np.clip(x - 0.1 * np.sign(
        w.numpy()[:, labels].T).reshape(x.shape), 0, 1), atol=1e-6)


def test_substitute_learns_a_simple_oracle_and_counts_queries():
    # Oracle: class 1 when the left half is brighter than the right half.
    def oracle(x):
        x = np.asarray(x)
        return (x[:, :, :14].mean(axis=(1, 2, 3)) > x[:, :, 14:].mean(axis=(1, 2, 3))
                ).astype(np.int64)

    calls = []
    counted = lambda x: (calls.append(len(x)), oracle(x))[1]
    rng = np.random.default_rng(1)
    seed = rng.uniform(size=(40, 28, 28, 1)).astype(np.float32)
    seed[:20, :, :14] *= 0.5
    seed[20:, :, 14:] *= 0.5
    result = attacks.train_substitute(counted, seed, lambda: models.build_classifier("E"),
                                      rounds=3, epochs=15, lmbda=0.1, log=lambda m: None)
    assert result.set_sizes == [40, 80, 160]
    assert result.queries == sum(calls) == 160
    test = rng.uniform(size=(300, 28, 28, 1)).astype(np.float32)
    test[:150, :, :14] *= 0.6
    test[150:, :, 14:] *= 0.6
    pred = np.argmax(result.substitute.predict(test, verbose=0), axis=1)
    assert np.mean(pred == oracle(test)) > 0.8  # chance is 0.5
