"""MagNet (Meng and Chen, CCS 2017), the Defense-GAN paper's comparison row.

Two prongs in front of a classifier:
- detectors: autoencoders trained on clean images; an input whose reconstruction
  error (mean |AE(x) - x|^p over pixels) exceeds a threshold is rejected. Thresholds
  are set on clean validation images for a stated total false-positive rate, split
  evenly between the detectors;
- a reformer: an autoencoder whose output AE(x) replaces x before classification.

MNIST architectures of the MagNet paper (Table 1), all convolutions 3x3 with sigmoid:
autoencoder I (detector I and the reformer): conv 3, average-pool 2x2, conv 3, conv 3,
upsample 2x2, conv 3, conv C; autoencoder II (detector II): conv 3, conv 3, conv C.
Trained on images with Gaussian noise of standard deviation ``noise`` added, mean
squared error, L2 weight regularisation. Detector I uses the L2 reconstruction error and
detector II the L1 error.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, NamedTuple, Optional

import keras
import numpy as np
import tensorflow as tf

from defense_gan_tf import jsonio
from defense_gan_tf.atomic import save_model
from defense_gan_tf.errors import ConfigError, InputError
from defense_gan_tf.models.checks import check_classifier

MAGNET_FILE = "magnet.json"


@dataclasses.dataclass(frozen=True)
class MagNetConfig:
    """MagNet training settings (the MagNet paper's MNIST values by default, except epochs).

    Attributes:
      false_positive_rate: total share of clean validation images the detectors may
        reject (the MagNet paper: 0.001 on MNIST), split evenly between them.
      noise: standard deviation of the Gaussian noise added to training inputs.
      l2: L2 weight regularisation.
      epochs, batch_size, learning_rate: Adam training of each autoencoder.
    """

    false_positive_rate: float = 0.001
    noise: float = 0.1
    l2: float = 1e-9
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3

    def __post_init__(self):
        if not 0 < self.false_positive_rate < 1:
            raise ConfigError(
                "magnet.false_positive_rate",
                "magnet.false_positive_rate must be in (0, 1), got "
                f"{self.false_positive_rate}")
        if self.noise < 0 or self.l2 < 0 or self.epochs < 1 or self.batch_size < 1 or \
                not self.learning_rate > 0:
            raise ConfigError(("noise", "l2", "epochs", "batch_size", "learning_rate"),
                              "magnet: noise and l2 must be >= 0, epochs and batch_size >= 1, "
                              "learning_rate > 0")


def build_autoencoder(kind: str, image_shape=(28, 28, 1), l2: float = 1e-9,
                      seed: Optional[int] = None) -> keras.Model:
    """MagNet's MNIST autoencoder ``I`` (with pooling; the reformer) or ``II``."""
    if kind not in ("I", "II"):
        raise ConfigError("kind", f"kind must be 'I' or 'II', got {kind!r}")
    counter = iter(range(100))

    def conv(filters):
        seed_i = None if seed is None else int(seed) * 100 + next(counter)
        return keras.layers.Conv2D(
            filters, 3, padding="same", activation="sigmoid",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed_i),
            kernel_regularizer=keras.regularizers.L2(l2))

    channels = image_shape[-1]
    stack = ([conv(3), keras.layers.AveragePooling2D(2), conv(3), conv(3),
              keras.layers.UpSampling2D(2), conv(3), conv(channels)] if kind == "I" else
             [conv(3), conv(3), conv(channels)])
    return keras.Sequential([keras.Input(image_shape)] + stack, name=f"magnet_ae_{kind}")


def reconstruction_errors(autoencoder: keras.Model, images, p: int,
                          batch_size: int = 500) -> np.ndarray:
    """Per image, mean over pixels of |AE(x) - x|^p."""
    out = []
    for i in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(images[i:i + batch_size], tf.float32)
        diff = tf.abs(autoencoder(x, training=False) - x)
        out.append(tf.reduce_mean(diff ** p, axis=[1, 2, 3]).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


class Detector(NamedTuple):
    """A reconstruction-error detector: rejects when the error exceeds ``threshold``."""

    autoencoder: keras.Model
    p: int
    threshold: float


class MagNet:
    """A classifier behind MagNet's detectors and reformer.

    Calling it returns the classifier's logits on the reformed images (a
    differentiable ``model_fn`` for attacks); :meth:`rejected` says which inputs
    the detectors turn away.
    """

    def __init__(self, classifier: keras.Model, detectors: list, reformer: keras.Model):
        self.classifier = check_classifier(classifier, "MagNet's classifier",
                                           image_shape=reformer.input_shape[1:])
        self.detectors = list(detectors)
        self.reformer = reformer

    def __call__(self, images, training=False):
        return self.classifier(self.reformer(images, training=False), training=False)

    def rejected(self, images) -> np.ndarray:
        """Boolean [B]: whether any detector's error exceeds its threshold."""
        return rejected_by(self.detectors, images)


def rejected_by(detectors: list, images) -> np.ndarray:
    """Boolean [B]: whether any of ``detectors`` rejects each image."""
    images = np.asarray(images, np.float32)
    out = np.zeros(len(images), bool)
    for d in detectors:
        out |= reconstruction_errors(d.autoencoder, images, d.p) > d.threshold
    return out


def fit_thresholds(autoencoders: list, norms: list, validation: np.ndarray,
                   false_positive_rate: float) -> list:
    """Detectors whose thresholds reject ``false_positive_rate / len(autoencoders)`` of the
    clean validation images each (the (1 - rate) quantile of their errors)."""
    share = false_positive_rate / len(autoencoders)
    return [Detector(ae, p, float(np.quantile(reconstruction_errors(ae, validation, p),
                                              1.0 - share)))
            for ae, p in zip(autoencoders, norms)]


def train_magnet(images: np.ndarray, validation: np.ndarray,
                 config: Optional[MagNetConfig] = None, *, seed: int = 0,
                 log: Optional[Callable[[str], None]] = None) -> tuple:
    """Trains autoencoders I and II on ``images`` and sets the thresholds on ``validation``.

    Returns:
      (detectors, reformer): the two detectors (I with L2 error, II with L1) and the
      reformer (autoencoder I).
    """
    from defense_gan_tf.console import echo

    config = config or MagNetConfig()
    log = log or echo
    images = np.asarray(images, np.float32)
    rng = np.random.default_rng(seed)
    autoencoders = []
    for kind in ("I", "II"):
        ae = build_autoencoder(kind, images.shape[1:], config.l2, seed=seed)
        ae.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
        for epoch in range(config.epochs):
            order = rng.permutation(len(images))
            clean = images[order]
            noisy = np.clip(clean + config.noise * rng.standard_normal(clean.shape), 0.0,
                            1.0).astype(np.float32)
            history = ae.fit(noisy, clean, batch_size=config.batch_size, epochs=1,
                             shuffle=False, verbose=0)
            log(f"MagNet autoencoder {kind} epoch {epoch + 1}/{config.epochs}: "
                f"loss {history.history['loss'][-1]:.5f}")
        autoencoders.append(ae)
    detectors = fit_thresholds(autoencoders, [2, 1], validation, config.false_positive_rate)
    return detectors, autoencoders[0]


def save_magnet(folder: str, detectors: list, config: MagNetConfig, *, command: str = "",
                extra: Optional[dict] = None) -> str:
    """Writes the autoencoders and ``magnet.json`` (thresholds, norms, settings) to ``folder``;
    the reformer is the first detector's autoencoder."""
    os.makedirs(folder, exist_ok=True)
    entries = []
    for i, d in enumerate(detectors):
        name = f"autoencoder_{'I' * (i + 1)}.keras"
        save_model(d.autoencoder, os.path.join(folder, name))
        entries.append({"file": name, "p": d.p, "threshold": d.threshold})
    jsonio.write_json(os.path.join(folder, MAGNET_FILE),
                      {"detectors": entries, "reformer": entries[0]["file"],
                       "config": dataclasses.asdict(config), "command": command,
                       **(extra or {})})
    return folder


def load_magnet(folder: str, classifier: keras.Model) -> MagNet:
    """A :class:`MagNet` around ``classifier`` from a folder written by :func:`save_magnet`.

    Raises:
      InputError: the folder lacks magnet.json or an autoencoder file.
    """
    path = os.path.join(folder, MAGNET_FILE)
    if not os.path.isfile(path):
        raise InputError(f"MagNet folder {folder} has no {MAGNET_FILE}")
    with open(path) as f:
        record = json.load(f)
    models = {}
    for entry in record["detectors"]:
        file = os.path.join(folder, entry["file"])
        if not os.path.isfile(file):
            raise InputError(f"MagNet folder {folder} has no {entry['file']}")
        models[entry["file"]] = keras.models.load_model(file)
    detectors = [Detector(models[e["file"]], int(e["p"]), float(e["threshold"]))
                 for e in record["detectors"]]
    return MagNet(classifier, detectors, models[record["reformer"]])
