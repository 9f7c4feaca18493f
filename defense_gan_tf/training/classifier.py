"""Classifier training (paper section 4: Adam 1e-3, batch 128, 10 epochs).

Three variants, as in the paper's tables:
- on original images (Defense-GAN-Orig uses this classifier behind the projection);
- on reconstructions G(z*) of the training set (Defense-GAN-Rec; the caller passes
  them, ``defense.reconstruction`` computes and caches them);
- FGSM adversarial training (Goodfellow et al. 2015): loss = 0.5 CE(x) + 0.5 CE(x_adv).
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from defense_gan_tf.config import ClassifierConfig
from defense_gan_tf.console import echo
from defense_gan_tf.models import build_classifier


def _check(images, labels):
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"images must be [N, H, W, C] with one label each; got "
                         f"{images.shape} and {labels.shape}")
    return images, labels


def _compiled_classifier(config: ClassifierConfig, input_shape, num_classes: int, seed: int):
    model = build_classifier(config.model, input_shape=input_shape, num_classes=num_classes,
                             seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def train_classifier(images: np.ndarray, labels: np.ndarray,
                     config: Optional[ClassifierConfig] = None, *, epochs: Optional[int] = None,
                     seed: int = 0, validation: Optional[tuple] = None,
                     adversarial_eps: Optional[float] = None, clip_min: float = 0.0,
                     clip_max: float = 1.0, num_classes: int = 10,
                     verbose: int = 2,
                     log: Optional[Callable[[str], None]] = None) -> keras.Model:
    """Trains classifier ``config.model`` (A-F) with cross-entropy on logits.

    Args:
      images: [N, H, W, C] float32 in the data range (originals or reconstructions).
      labels: [N] integer class labels.
      config: learning rate, batch size, epochs and architecture.
      epochs: overrides ``config.epochs``.
      seed: seeds initialisation, dropout and shuffling (the model's own seeds and a
        local generator: the process's random state is left alone).
      validation: optional (images, labels) evaluated after each epoch.
      adversarial_eps: when set, FGSM adversarial training with this epsilon:
        each batch's loss is 0.5 CE(x) + 0.5 CE(clip(x + eps sign grad_x CE(x))).
      clip_min, clip_max: the data range (for adversarial examples).
      num_classes: number of logits.
      verbose: 0 for silence, else one progress line per epoch through ``log``.
      log: where progress lines go (default: flushed prints).

    Returns:
      The trained model (outputs logits), compiled with an accuracy metric.
    """
    config = config or ClassifierConfig()
    images, labels = _check(images, labels)
    model = _compiled_classifier(config, images.shape[1:], num_classes, seed)
    epochs = config.epochs if epochs is None else epochs
    log = log or echo
    if adversarial_eps is None:
        fit_shuffled(model, images, labels, batch_size=config.batch_size, epochs=epochs,
                     seed=seed, validation=validation,
                     callbacks=[_EpochLog(log, epochs)] if verbose else [])
        return model
    if not 0 <= adversarial_eps <= clip_max - clip_min:
        raise ValueError(f"adversarial_eps must be in [0, {clip_max - clip_min}], "
                         f"got {adversarial_eps}")
    _adversarial_fit(model, images, labels, config, epochs, adversarial_eps, clip_min,
                     clip_max, seed, validation, log if verbose else None)
    return model


def fit_shuffled(model: keras.Model, images: np.ndarray, labels: np.ndarray, *,
                 batch_size: int, epochs: int, seed: int, validation=None,
                 callbacks=()) -> None:
    """``model.fit`` with each epoch's order drawn from a local generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(images))
        model.fit(images[order], labels[order], batch_size=batch_size, epochs=epoch + 1,
                  initial_epoch=epoch, shuffle=False, validation_data=validation, verbose=0,
                  callbacks=list(callbacks))


class _EpochLog(keras.callbacks.Callback):
    """One line per epoch (loss, accuracy, validation accuracy) through ``log``."""

    def __init__(self, log, epochs: int):
        super().__init__()
        self.log, self.epochs = log, epochs
        self.t0 = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"{k} {v:.4f}" for k, v in sorted(logs.items())
                 if isinstance(v, (int, float))]
        self.log(f"classifier epoch {epoch + 1}/{self.epochs}: " + ", ".join(parts)
                 + f" ({time.monotonic() - self.t0:.0f} s)")


def _adversarial_fit(model, images, labels, config, epochs, eps, clip_min, clip_max, seed,
                     validation, log):
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = model.optimizer

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            clean_loss = ce(y, model(x, training=False))
        x_adv = tf.stop_gradient(tf.clip_by_value(
            x + eps * tf.sign(tape.gradient(clean_loss, x)), clip_min, clip_max))
        with tf.GradientTape() as tape:
            loss = 0.5 * ce(y, model(x, training=True)) + 0.5 * ce(y, model(x_adv,
                                                                            training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))
        return loss

    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(images))
        t0, losses = time.monotonic(), []
        for start in range(0, len(images), config.batch_size):
            idx = order[start:start + config.batch_size]
            losses.append(float(step(tf.constant(images[idx]), tf.constant(labels[idx]))))
        if log is not None:
            msg = (f"adversarial training epoch {epoch + 1}/{epochs}: loss "
                   f"{np.mean(losses):.4f} ({time.monotonic() - t0:.0f} s)")
            if validation is not None:
                _, acc = model.evaluate(*validation, verbose=0)
                msg += f", validation accuracy {acc:.4f}"
            log(msg)
