"""Training the projection's encoder E after the GAN (ProjectionConfig.encoder_start).

E is fitted to two things at once: pairs (G(z), z) with z from the generator's
prior N(0, I), so that E inverts G on its range, and the reconstruction error
of real training images, mean (G(E(x)) - x)^2, so that E(x) is a good start
for the projection of real (and perturbed) images.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple, Optional

import keras
import numpy as np
import tensorflow as tf

from defense_gan_tf.atomic import save_model
from defense_gan_tf.console import echo


class EncoderResult(NamedTuple):
    """A trained encoder and its final mean losses (over the last logged window)."""

    encoder: keras.Model
    latent_loss: float
    reconstruction_loss: float
    seconds: float


def train_encoder(encoder: keras.Model, generator: keras.Model, images: np.ndarray, *,
                  steps: int, batch_size: int = 64, learning_rate: float = 1e-3,
                  reconstruction_weight: float = 1.0, seed: int = 0, log_every: int = 100,
                  log: Optional[Callable[[str], None]] = None) -> EncoderResult:
    """Fits ``encoder`` to invert ``generator`` (the generator is not changed).

    Loss per step: mean_z ||E(G(z)) - z||^2 / latent_dim + reconstruction_weight *
    mean_x mean_pixels (G(E(x)) - x)^2, z ~ N(0, I), x a batch of real images.

    Args:
      encoder: images -> z (``models.build_encoder``).
      generator: z -> images, frozen.
      images: real training images in the generator's range.
      steps: Adam steps.
      batch_size: z draws and real images per step.
      learning_rate: Adam learning rate.
      reconstruction_weight: weight of the real-image reconstruction term.
      seed: seeds the z draws and the image batches (stateless).
      log_every: steps between progress lines.
      log: progress output.

    Returns:
      An :class:`EncoderResult`.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    log = log or echo
    images = np.asarray(images, np.float32)
    latent = int(generator.input_shape[-1])
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(encoder.trainable_variables)
    table = tf.constant(images)

    @tf.function
    def step(i):
        z = tf.random.stateless_normal([batch_size, latent], seed=[seed, 2 * i])
        idx = tf.random.stateless_uniform([batch_size], seed=[seed, 2 * i + 1], minval=0,
                                          maxval=len(images), dtype=tf.int32)
        real = tf.gather(table, idx)
        fake = generator(z, training=False)
        with tf.GradientTape() as tape:
            latent_loss = tf.reduce_mean(tf.square(encoder(fake, training=True) - z))
            rec = generator(encoder(real, training=True), training=False)
            rec_loss = tf.reduce_mean(tf.square(rec - real))
            loss = latent_loss + reconstruction_weight * rec_loss
        grads = tape.gradient(loss, encoder.trainable_variables)
        optimizer.apply_gradients(zip(grads, encoder.trainable_variables))
        return latent_loss, rec_loss

    t0 = time.monotonic()
    window = []
    for i in range(steps):
        window.append([float(v) for v in step(tf.constant(i, tf.int32))])
        if (i + 1) % log_every == 0 or i + 1 == steps:
            means = np.mean(window, axis=0)
            log(f"encoder step {i + 1}/{steps}: latent loss {means[0]:.4f}, "
                f"reconstruction error {means[1]:.5f}")
            if i + 1 < steps:
                window = []
    means = np.mean(window, axis=0)
    return EncoderResult(encoder, float(means[0]), float(means[1]), time.monotonic() - t0)


def fit_encoder_file(generator_path: str, images: np.ndarray, output_path: str, *,
                     model_config, steps: int, batch_size: int = 64,
                     learning_rate: float = 1e-3, reconstruction_weight: float = 1.0,
                     width: int = 32, seed: int = 0, command: str = "",
                     log: Optional[Callable[[str], None]] = None) -> dict:
    """Trains an encoder for the generator in ``generator_path`` and saves it.

    Writes ``output_path`` (``.keras``) and, beside it, ``<stem>.json``: the
    generator's sha256, the training settings, the final losses, the wall time and
    the command. Returns that record.
    """
    import hashlib
    import os

    from defense_gan_tf import jsonio
    from defense_gan_tf.models import build_encoder

    generator = keras.models.load_model(generator_path)
    encoder = build_encoder(model_config, seed=seed, width=width)
    result = train_encoder(encoder, generator, images, steps=steps, batch_size=batch_size,
                           learning_rate=learning_rate,
                           reconstruction_weight=reconstruction_weight, seed=seed, log=log)
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    save_model(encoder, output_path)
    with open(generator_path, "rb") as f:
        generator_sha = hashlib.sha256(f.read()).hexdigest()
    record = {
        "file": os.path.basename(output_path), "generator_sha256": generator_sha,
        "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate,
        "reconstruction_weight": reconstruction_weight, "width": width, "seed": seed,
        "latent_loss": round(result.latent_loss, 5),
        "reconstruction_error": round(result.reconstruction_loss, 6),
        "seconds": round(result.seconds, 1), "command": command,
    }
    jsonio.write_json(os.path.splitext(output_path)[0] + ".json", record)
    return record
