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

from defense_gan_tf import config as config_lib  # noqa: E402


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
    """MNIST-shaped config with tiny widths and batches for fast tests."""
    return config_lib.override(config_lib.preset("mnist"), {
        "model.net_dim": 4, "model.latent_dim": 8, "gan.batch_size": 4,
        "gan.critic_steps": 2, "gan.log_every": 1, "gan.checkpoint_every": 2,
        "gan.sample_every": 2,
    })
