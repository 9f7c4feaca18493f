import keras
import numpy as np
import pytest

from defense_gan_tf import config as config_lib
from defense_gan_tf import metrics, models, training


def test_classifier_score_bounds():
    # Identical predictions for every x: p(y|x) = p(y), KL = 0, score 1.
    same = np.tile([[0.2, 0.3, 0.5]], (6, 1))
    assert metrics.classifier_score(same) == pytest.approx(1.0)
    # Confident predictions spread evenly over K classes: KL = log K, score K.
    onehot = np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]]
    assert metrics.classifier_score(onehot) == pytest.approx(4.0, rel=1e-6)
    # Confident but always the same class (mode collapse): score 1.
    assert metrics.classifier_score(np.eye(4)[[2] * 8]) == pytest.approx(1.0)


def test_frechet_distance_analytic():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    sigma = a @ a.T + np.eye(5)
    mu = rng.normal(size=5)
    assert metrics.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    # Diagonal covariances: sum (mu1 - mu2)^2 + sum (s1 + s2 - 2 sqrt(s1 s2)).
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    m1, m2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    expected = 5.0 + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = metrics.frechet_distance(m1, np.diag(s1), m2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-9)
    # Non-commuting full covariances: compare with the definition via eigen-decomposition.
    b = rng.normal(size=(5, 5))
    sigma2 = b @ b.T + 0.5 * np.eye(5)
    prod = sigma @ sigma2
    trace_sqrt = np.sum(np.sqrt(np.linalg.eigvals(prod).real))
    expected = np.trace(sigma) + np.trace(sigma2) - 2 * trace_sqrt
    assert metrics.frechet_distance(mu, sigma, mu, sigma2) == pytest.approx(expected,
                                                                                rel=1e-6)


def test_quality_separates_good_and_bad_generators():
    # Two-class toy data: bright squares in opposite corners. A "generator" that
    # reproduces the data distribution scores better than one emitting noise.
    rng = np.random.default_rng(0)

    def data(n):
        x = np.zeros((n, 28, 28, 1), np.float32)
        y = rng.integers(0, 2, n)
        for i, label in enumerate(y):
            r = slice(2, 12) if label == 0 else slice(16, 26)
            x[i, r, r] = 1.0
        return x + rng.uniform(0, 0.1, x.shape).astype(np.float32), y

    x, y = data(400)
    clf = training.train_classifier(x, y, config_lib.ClassifierConfig(model="E"),
                                    epochs=3, verbose=0)
    real, _ = data(300)
    z = keras.Input(shape=(2,))
    # Good: picks a corner from the sign of z[0]; bad: ignores z, outputs grey.
    corner = keras.layers.Lambda(lambda t: keras.ops.cast(t[:, :1] > 0, "float32"))(z)
    masks = np.zeros((2, 28, 28, 1), np.float32)
    masks[0, 2:12, 2:12] = 1.0
    masks[1, 16:26, 16:26] = 1.0
    good_out = keras.layers.Lambda(
        lambda c: keras.ops.reshape(c, (-1, 1, 1, 1)) * masks[1] +
        (1 - keras.ops.reshape(c, (-1, 1, 1, 1))) * masks[0])(corner)
    good = keras.Model(z, good_out)
    bad = keras.Model(z, keras.layers.Lambda(
        lambda t: keras.ops.zeros((keras.ops.shape(t)[0], 28, 28, 1)) + 0.5)(z))
    q_good = metrics.generator_quality(good, clf, real, num_samples=300,
                                          reference_images=data(300)[0])
    q_bad = metrics.generator_quality(bad, clf, real, num_samples=300)
    assert q_good["classifier_score"] > 1.8 > q_bad["classifier_score"]
    assert q_good["frechet_distance"] < q_bad["frechet_distance"]
    assert q_good["real_frechet_distance"] < q_bad["frechet_distance"]


def test_sample_is_reproducible():
    g = models.build_generator(config_lib.override(
        config_lib.preset("mnist"), {"model.net_dim": 4, "model.latent_dim": 8}))
    a = metrics.sample(g, 7, seed=3, batch_size=4)
    b = metrics.sample(g, 7, seed=3, batch_size=4)
    assert a.shape == (7, 28, 28, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, metrics.sample(g, 7, seed=4, batch_size=4))
