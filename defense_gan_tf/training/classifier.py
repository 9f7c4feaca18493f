"""Classifier training (paper section 4: Adam 1e-3, batch 128, 10 epochs).

Three variants, as in the paper's tables:
- on original images (Defense-GAN-Orig uses this classifier behind the projection);
- on reconstructions G(z*) of the training set (Defense-GAN-Rec), computed once
  and cached on disk, keyed by the generator's weights and the projection config;
- FGSM adversarial training (Goodfellow et al. 2015): loss = 0.5 CE(x) + 0.5 CE(x_adv).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from defense_gan_tf.atomic import save_model
from defense_gan_tf.batch_cache import load_batch, save_batch
from defense_gan_tf.config import ClassifierConfig, ProjectionConfig
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


def weights_digest(model: keras.Model) -> str:
    """sha256 of a model's weights (shapes and values), for cache keys."""
    digest = hashlib.sha256()
    for w in model.weights:
        value = np.asarray(w.numpy())
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def reconstruct_dataset(project_fn: Callable, images: np.ndarray, *, cache_key: str,
                        cache_dir: Optional[str] = None, batch_size: int = 64,
                        log: Optional[Callable[[str], None]] = None,
                        checkpoint_seconds: float = 120.0) -> np.ndarray:
    """G(z*) of every image, computed in batches and cached as .npz.

    Reconstructing a training set takes hours on a CPU, so the batches done so
    far are written to a partial file every ``checkpoint_seconds`` and when the
    loop is interrupted (an exception or Ctrl-C); the next call with the same
    key continues after the last saved batch. Batches start at the same
    offsets either way, so a resumed run gives the same reconstructions as an
    uninterrupted one when ``project_fn`` is deterministic per batch.

    Args:
      project_fn: images -> reconstructions (e.g. ``DefendedClassifier.reconstruct``).
      images: [N, H, W, C].
      cache_key: identifies the generator and projection config (see
        :func:`reconstruction_cache_key`); the images' digest is added to it.
      cache_dir: folder of the cache; None disables caching (and resuming).
      batch_size: images per projection call.
      log: progress output.
      checkpoint_seconds: how often the partial result is written.

    Returns:
      float32 reconstructions [N, H, W, C].
    """
    log = log or echo
    images = np.asarray(images, np.float32)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    path = reconstruction_cache_path(cache_dir, cache_key, images) if cache_dir else None
    partial = partial_reconstruction_path(path) if path else None
    cached = load_batch(path, required=("reconstructions",)) if path else None
    if cached is not None:
        recs = cached["reconstructions"]
        if recs.shape == images.shape:
            log(f"loaded {len(recs)} cached reconstructions from {path}")
            return recs
        log(f"ignoring cache {path}: shape {recs.shape} != {images.shape}")
    out = _load_partial(partial, images.shape, batch_size, log)
    resumed = done = sum(len(r) for r in out)
    t0 = last_save = time.monotonic()
    try:
        for start in range(resumed, len(images), batch_size):
            out.append(np.asarray(project_fn(images[start:start + batch_size]), np.float32))
            done += len(out[-1])
            rate = (done - resumed) / max(time.monotonic() - t0, 1e-9)
            log(f"reconstructing {done}/{len(images)}  {rate:.2f} img/s  "
                f"ETA {(len(images) - done) / max(rate, 1e-9):.0f} s")
            if partial and done < len(images) and \
                    time.monotonic() - last_save >= checkpoint_seconds:
                save_batch(partial, reconstructions=np.concatenate(out), batch_size=batch_size)
                last_save = time.monotonic()
    except BaseException:
        if partial and done > resumed:
            save_batch(partial, reconstructions=np.concatenate(out), batch_size=batch_size)
            log(f"interrupted: {done}/{len(images)} reconstructions kept in {partial}; "
                "the same call resumes from there")
        raise
    recs = np.concatenate(out) if out else np.zeros_like(images)
    if path:
        save_batch(path, reconstructions=recs)
        if os.path.exists(partial):
            os.remove(partial)
    return recs


def _load_partial(partial: Optional[str], shape: tuple, batch_size: int,
                  log: Callable[[str], None]) -> list:
    """The batches a previous, interrupted :func:`reconstruct_dataset` saved."""
    saved = load_batch(partial, required=("reconstructions", "batch_size")) if partial else None
    if saved is None:
        return []
    recs, saved_batch = saved["reconstructions"], int(saved["batch_size"])
    if (saved_batch != batch_size or recs.shape[1:] != shape[1:]
            or len(recs) > shape[0]
            or (len(recs) % batch_size and len(recs) != shape[0])):
        log(f"ignoring partial reconstructions {partial}: {recs.shape} in batches of "
            f"{saved_batch} do not continue {shape} in batches of {batch_size}")
        return []
    log(f"resuming from {len(recs)}/{shape[0]} reconstructions in {partial}")
    return [recs] if len(recs) else []


def reconstruction_cache_key(generator: keras.Model, config: ProjectionConfig,
                             seed: Optional[int]) -> str:
    """Cache key of reconstructions: generator weights, projection config and seed."""
    return json.dumps({"generator": weights_digest(generator),
                       "projection": dataclasses.asdict(config), "seed": seed},
                      sort_keys=True)


def reconstruction_cache_path(cache_dir: str, cache_key: str, images: np.ndarray) -> str:
    """Where :func:`reconstruct_dataset` caches the reconstructions of ``images``."""
    digest = hashlib.sha256(np.asarray(images, np.float32).tobytes()).hexdigest()
    key = hashlib.sha256((cache_key + digest).encode()).hexdigest()[:24]
    return os.path.join(cache_dir, f"recs_{key}.npz")


def partial_reconstruction_path(path: str) -> str:
    """Where :func:`reconstruct_dataset` keeps the batches done so far of the cache
    ``path`` (:func:`reconstruction_cache_path`) until all are."""
    return path[:-len(".npz")] + ".partial.npz"


def save_without_optimizer(model: keras.Model, path: str) -> str:
    """Saves ``model`` as ``.keras`` with its weights but no optimizer state.

    A compiled model's ``.keras`` file carries the Adam moments (twice the
    weights); shipped models do not need them.
    """
    fresh = model.__class__.from_config(model.get_config())
    fresh.set_weights(model.get_weights())
    return save_model(fresh, path)
