"""Shared fixtures. Splits the CPU into two logical devices (for tf.distribute tests)
before TensorFlow initialises, and finds the offline data folder."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

from defense_gan_tf import config as config_lib  # noqa: E402

DENSE_LATENT = 8


def _file_seconds() -> dict:
    """Measured seconds per test file (tests/file_seconds.json, from .ci/file_seconds.py)."""
    import json

    try:
        with open(os.path.join(ROOT, "tests", "file_seconds.json")) as f:
            return {str(k): float(v) for k, v in json.load(f).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def pytest_collection_modifyitems(config, items):
    """The heaviest files first (longest processing time first): .ci/test gives whole
    files to two workers in this order, so the last files to start are short ones. A file
    not yet measured counts as a median one. Order inside a file is kept."""
    seconds = _file_seconds()
    typical = float(np.median(list(seconds.values()))) if seconds else 0.0
    items.sort(key=lambda item: -seconds.get(item.path.name, typical))


def _dense_generator(latent=DENSE_LATENT, seed=0):
    """G(z) = sigmoid(W z + b) reshaped to 28x28x1: tiny, with strongly varying outputs."""
    import keras

    z = keras.Input((latent,))
    x = keras.layers.Dense(
        784, activation="sigmoid",
        kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=seed + 1))(z)
    return keras.Model(z, keras.layers.Reshape((28, 28, 1))(x))


@pytest.fixture(scope="session")
def dense_generator():
    """A factory of tiny dense generators: ``dense_generator(latent=8, seed=0)``."""
    return _dense_generator


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """(root folder, generator path, train, test): data on a dense generator's range,
    labelled by the sign of z[0], so it is learnable and projectable."""
    root = tmp_path_factory.mktemp("world")
    g = _dense_generator()
    gen_path = str(root / "generator.keras")
    g.save(gen_path)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(260, 8)).astype(np.float32) * 0.35
    x = g(z).numpy()
    y = (z[:, 0] > 0).astype(np.int64)
    return root, gen_path, (x[:200], y[:200]), (x[200:], y[200:])


def _shared_data_dir():
    env = os.environ.get("DEFENSE_GAN_DATA_DIR")
    if env:
        return env
    candidate = os.path.join(ROOT, "..", "shared", "data")
    return os.path.abspath(candidate) if os.path.isdir(candidate) else None


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder holding the real MNIST IDX files (CI provides ../shared/data)."""
    path = _shared_data_dir()
    if not path or not os.path.isdir(os.path.join(path, "mnist")):
        pytest.skip("real MNIST files not available (set DEFENSE_GAN_DATA_DIR)")
    return path


@pytest.fixture
def tiny_config():
    """MNIST-shaped config with tiny widths and batches for fast tests; one critic step
    per generator step (tests of the critic loop and of exact resumes set two)."""
    return config_lib.override(config_lib.preset("mnist"), {
        "model.net_dim": 4, "model.latent_dim": 8, "gan.batch_size": 4,
        "gan.critic_steps": 1, "gan.log_every": 1, "gan.checkpoint_every": 2,
        "gan.sample_every": 2,
    })


def _left_right_images(n, seed=0):
    """Two classes: the left half (class 0) or the right half (class 1) is brighter."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.uniform(0.3, 0.5, size=(n, 28, 28, 1)).astype(np.float32)
    x[y == 0, :, :14] += 0.2
    x[y == 1, :, 14:] += 0.2
    return x, y


@pytest.fixture(scope="session")
def left_right_images():
    """A factory of two-class toy images: ``left_right_images(n, seed=0) -> (x, y)``."""
    return _left_right_images


@pytest.fixture(scope="session")
def toy():
    """(model, x, y): a small MLP that separates brighter-left from brighter-right images
    almost perfectly, with 64 of its training images."""
    from defense_gan_tf import training

    x, y = _left_right_images(400)
    model = training.train_classifier(x, y, config_lib.ClassifierConfig(model="E"),
                                      epochs=8, verbose=0, seed=1)
    return model, x[:64], y[:64]


@pytest.fixture(scope="module")
def images_and_classifier():
    """16 random images and a 1-epoch classifier E on random labels (for quality figures)."""
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(16, 28, 28, 1)).astype(np.float32)
    from defense_gan_tf import training

    clf = training.train_classifier(images, rng.integers(0, 10, 16),
                                    config_lib.ClassifierConfig(model="E"), epochs=1,
                                    verbose=0)
    return images, clf


def make_tiny_package(tmp_path, tiny_config, images_and_classifier, *, iterations=2,
                      name="package"):
    """A package (bin/package_generator.py's) of a tiny run trained ``iterations`` steps."""
    from defense_gan_tf import training
    from defense_gan_tf.generators.package import package_generator

    images, clf = images_and_classifier
    run, dest = str(tmp_path / "run"), str(tmp_path / name)
    training.train_gan(config_lib.override(tiny_config, {"gan.train_iters": iterations}),
                       run, images=images, log=lambda m: None)
    package_generator(run, dest, classifier=clf, test_images=images[:8],
                      reference_images=None, num_samples=10)
    return dest


def shipped_measurement(manifest: dict) -> dict:
    """A package's headline Defense-GAN figures, or, for a package not measured yet, its
    run's last in-run evaluation made into a measurement (the same fields): what tests
    that edit a measurement start from, whichever state the shipped package is in."""
    if manifest.get("defense"):
        return manifest["defense"]
    return dict({k: v for k, v in manifest["quality_curve_last"].items()
                 if k not in ("iteration", "train_seconds", "eval_seconds", "average")},
                command="python bin/measure_generator.py (stand-in)")
