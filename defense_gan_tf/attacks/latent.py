"""The latent-space attack on Defense-GAN (Athalye, Carlini and Wagner, ICML 2018, 5.4.2).

Instead of perturbing x, search the generator's range: find z such that G(z) is
close to x (mean squared error per pixel within a budget; 0.005 on MNIST in the
paper) and the classifier labels G(z) differently from x's true label. Such a
G(z) is on the manifold the projection maps onto, so the defense has nothing to
remove; whether a fresh projection of it is still misclassified is checked
separately (the defense may project it to another z).

The search minimises, per image, mean_pixels (G(z) - x)^2 + c * max(Z_y - max_{i != y}
Z_i + confidence, 0) with Adam over z, keeping the closest misclassified G(z)
seen, and binary-searches c per image (as Carlini and Wagner's L2 attack does). The
result counts as found only within the budget; a caller scoring the attack should keep
the clean image where it was not found.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np
import tensorflow as tf

from defense_gan_tf.attacks.common import (ModelFn, check_labels_fit, check_range,
                                           labels_or_predictions)


class LatentAttackResult(NamedTuple):
    """Result of :func:`latent_attack`.

    Attributes:
      x_adv: per image, the closest misclassified G(z) found, else the last G(z).
      z: the latent vectors of ``x_adv``.
      distortion: mean squared error per pixel between ``x_adv`` and x.
      found: misclassified by the classifier and within the budget.
    """

    x_adv: np.ndarray
    z: np.ndarray
    distortion: np.ndarray
    found: np.ndarray


def latent_attack(generator: Callable, classifier_fn: ModelFn, x, *, y=None,
                  budget: float = 0.005, z_init=None, steps: int = 200,
                  learning_rate: float = 0.01, initial_const: float = 0.01,
                  search_steps: int = 5, confidence: float = 0.0,
                  clip_min: float = 0.0, clip_max: float = 1.0,
                  seed: Optional[int] = None) -> LatentAttackResult:
    """Searches the generator's range for misclassified images close to ``x``.

    Args:
      generator: z [B, d] -> images.
      classifier_fn: images -> logits (the undefended classifier; the defense is
        checked afterwards by projecting ``x_adv``).
      x: clean images in [clip_min, clip_max].
      y: true labels; None uses the classifier's predictions on x.
      budget: largest mean squared error per pixel that counts as found.
      z_init: starting z [B, d] (e.g. the projection's z* of x); default N(0, 1/d).
      steps: Adam steps per value of c.
      learning_rate: Adam learning rate on z.
      initial_const: the first c. Per image, a round that found a misclassified G(z)
        (at any distance) lowers c, one that found none raises it: bisection between
        the bounds known so far, or x10 while no success bounds it from above
        (``search_steps`` rounds; Carlini and Wagner's schedule).
      search_steps: rounds of the search over c.
      confidence: margin the misclassification must have.
      clip_min, clip_max: the data range.
      seed: seeds the default z_init.

    Returns:
      A :class:`LatentAttackResult`.
    """
    x = check_range(x, clip_min, clip_max)
    if steps < 1 or search_steps < 1 or learning_rate <= 0 or not budget > 0:
        raise ValueError("steps and search_steps must be >= 1, learning_rate and budget > 0")
    y = labels_or_predictions(classifier_fn, x, y)
    n = int(x.shape[0])
    z_init = _start(generator, n, seed) if z_init is None else z_init
    z_init = tf.convert_to_tensor(z_init, tf.float32)
    const = np.full(n, float(initial_const))
    lower, upper = np.zeros(n), np.full(n, np.inf)  # bounds on the c that succeeds
    best = {"dist": np.full(n, np.inf), "x": np.zeros(x.shape, np.float32),
            "z": z_init.numpy().copy()}
    last_x, last_z = None, None
    for _ in range(search_steps):
        succeeded, last_x, last_z = _search_round(
            generator, classifier_fn, x, y, z_init, tf.constant(const, tf.float32), best,
            steps=steps, learning_rate=learning_rate, confidence=confidence)
        # A success bounds c from above (a smaller c then trades misclassification for
        # distortion); a failure from below.
        upper = np.where(succeeded, np.minimum(upper, const), upper)
        lower = np.where(succeeded, lower, np.maximum(lower, const))
        const = np.where(np.isfinite(upper), (lower + upper) / 2.0, const * 10.0)
    best_x, best_z = best["x"], best["z"]
    missing = ~np.isfinite(best["dist"])
    best_x[missing], best_z[missing] = last_x[missing], last_z[missing]
    distortion = np.mean((best_x - x.numpy()) ** 2, axis=(1, 2, 3))
    found = (~missing) & (distortion <= budget)
    return LatentAttackResult(x_adv=best_x, z=best_z, distortion=distortion, found=found)


def _start(generator, n: int, seed: Optional[int]):
    """The default z_init: N(0, 1/d), seeded when ``seed`` is given."""
    latent = int(generator.input_shape[-1]) if hasattr(generator, "input_shape") else None
    if latent is None:
        raise ValueError("z_init is needed for a generator without an input_shape")
    shape, std = [n, latent], float(np.sqrt(1.0 / latent))
    return (tf.random.normal(shape, stddev=std) if seed is None else
            tf.random.stateless_normal(shape, seed=[seed, 7], stddev=std))


def _search_round(generator, classifier_fn, x, y, z_init, c, best: dict, *, steps: int,
                  learning_rate: float, confidence: float) -> tuple:
    """``steps`` Adam steps (Kingma and Ba 2015) on z from ``z_init`` of the distortion
    plus ``c`` times the misclassification margin; every misclassified G(z) closer than
    ``best`` holds replaces it there. Returns (misclassified at some step, the last
    G(z), the last z)."""
    y_np = y.numpy()
    z = tf.Variable(z_init)
    m, v = tf.zeros_like(z_init), tf.zeros_like(z_init)
    succeeded = np.zeros(len(y_np), bool)
    for step in range(1, steps + 1):
        with tf.GradientTape() as tape:
            images = generator(z)
            logits = classifier_fn(images)
            check_labels_fit(y, logits)
            onehot = tf.one_hot(y, tf.shape(logits)[-1])
            real = tf.reduce_sum(onehot * logits, axis=1)
            other = tf.reduce_max(logits - 1e9 * onehot, axis=1)
            distortion = tf.reduce_mean(tf.square(images - x), axis=[1, 2, 3])
            loss = tf.reduce_sum(distortion + c * tf.maximum(real - other + confidence, 0.0))
        grad = tape.gradient(loss, z)
        wrong = (np.argmax(logits.numpy(), 1) != y_np) & (
            (real - other + confidence).numpy() <= 0)
        dist = distortion.numpy()
        better = wrong & (dist < best["dist"])
        if better.any():
            best["dist"][better] = dist[better]
            best["x"][better] = images.numpy()[better]
            best["z"][better] = z.numpy()[better]
        succeeded |= wrong
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * tf.square(grad)
        m_hat, v_hat = m / (1 - 0.9 ** step), v / (1 - 0.999 ** step)
        z.assign_sub(learning_rate * m_hat / (tf.sqrt(v_hat) + 1e-8))
    return succeeded, generator(z).numpy(), z.numpy()
