import os

import numpy as np
import pytest
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


class _Oracle:
    """A deterministic oracle with a position (like a randomised defence's draw counter)
    that can be made to stop, as Ctrl-C would, before its ``stop_at``-th call."""

    def __init__(self, stop_at=None):
        self.calls, self.images, self.position, self.stop_at = 0, 0, 0, stop_at

    def __call__(self, x):
        if self.stop_at is not None and self.calls == self.stop_at:
            raise KeyboardInterrupt
        self.calls += 1
        self.images += len(x)
        self.position += 1
        x = np.asarray(x)
        return (x[:, :, :14].mean(axis=(1, 2, 3)) > x[:, :, 14:].mean(axis=(1, 2, 3))
                ).astype(np.int64) + 2 * (x.mean(axis=(1, 2, 3)) > 0.45)

    def hooks(self):
        return (lambda: self.position, lambda n: setattr(self, "position", n))


def _train(oracle, seed, path):
    # Model B has dropout layers: their seed-generator state must resume too.
    return attacks.train_substitute(
        oracle, seed, lambda: models.build_classifier("B", seed=3), rounds=3, epochs=2,
        seed=5, progress_path=path, checkpoint_seconds=0.0, label_chunk=8,
        oracle_position=oracle.hooks(), log=lambda m: None)


def _resume_seed():
    return np.random.default_rng(2).uniform(size=(12, 28, 28, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(result, oracle) of the training that the interrupted ones below must give."""
    oracle = _Oracle()
    whole = _train(oracle, _resume_seed(), str(tmp_path_factory.mktemp("whole") / "p.npz"))
    assert whole.set_sizes == [12, 24, 48] and whole.queries == oracle.images == 48
    return whole, oracle


@pytest.mark.parametrize("stop_at", [1, 3, 5])  # calls: 2 seed, 2 round-2, 3 round-3
def test_an_interrupted_substitute_training_resumes_to_the_same_substitute(
        tmp_path, stop_at, uninterrupted):
    seed = _resume_seed()
    whole, whole_oracle = uninterrupted
    path = str(tmp_path / "progress.npz")
    first = _Oracle(stop_at=stop_at)
    with pytest.raises(KeyboardInterrupt):
        _train(first, seed, path)
    assert os.path.isfile(path)
    second = _Oracle()
    resumed = _train(second, seed, path)
    # No image is labelled twice, the oracle continues from where it stopped, and the
    # substitute is the one an uninterrupted run trains, variable for variable.
    assert first.images + second.images == 48
    assert second.position == whole_oracle.position
    assert (resumed.queries, resumed.set_sizes, resumed.agreement) == \
        (whole.queries, whole.set_sizes, whole.agreement)
    for a, b in zip(whole.substitute.variables, resumed.substitute.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not os.path.exists(path)  # finished: nothing left to resume
    # The time of the interrupted call is counted in the resumed one's.
    assert whole.earlier_seconds == 0.0 and resumed.earlier_seconds > 0.0


def test_substitute_progress_of_other_seed_images_is_not_resumed(tmp_path):
    rng = np.random.default_rng(4)
    seed = rng.uniform(size=(12, 28, 28, 1)).astype(np.float32)
    path = str(tmp_path / "progress.npz")
    with pytest.raises(KeyboardInterrupt):
        _train(_Oracle(stop_at=3), seed, path)
    other = _Oracle()
    _train(other, rng.uniform(size=(12, 28, 28, 1)).astype(np.float32), path)
    assert other.images == 48  # everything labelled afresh
