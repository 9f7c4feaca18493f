"""Projected gradient descent in L-infinity and L2 (Madry et al. 2018)."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from defense_gan_tf.attacks.common import (ModelFn, check_range, expected_loss_and_gradient,
                                           gradient_sign, labels_or_predictions,
                                           unit_l2_direction)


def pgd_linf(model_fn: ModelFn, x, *, eps: float, step_size: float, iterations: int,
             y=None, random_start: bool = True, clip_min: float = 0.0,
             clip_max: float = 1.0, seed: Optional[int] = None,
             eot_samples: int = 1) -> tf.Tensor:
    """Iterated FGSM steps of ``step_size``, projected onto the eps-ball around x.

    With ``eot_samples`` > 1 each step's gradient is averaged over that many calls of
    a randomized ``model_fn`` (EOT); ``seed`` fixes the random start and, for a model
    taking a ``seed`` keyword, its draws.

    Returns:
      Adversarial images with ||x_adv - x||_inf <= eps, inside the data range.

    Raises:
      ValueError: bad eps, step_size or iterations.
    """
    x = check_range(x, clip_min, clip_max, eps)
    if step_size <= 0 or iterations < 0:
        raise ValueError(f"step_size must be > 0 and iterations >= 0, got {step_size}, "
                         f"{iterations}")
    y = labels_or_predictions(model_fn, x, y)
    x_adv = x
    if random_start:
        shape = tf.shape(x)
        start = (tf.random.uniform(shape, -eps, eps) if seed is None else
                 tf.random.stateless_uniform(shape, seed=[seed, 1], minval=-eps, maxval=eps))
        x_adv = tf.clip_by_value(x + start, clip_min, clip_max)
    for step in range(iterations):
        _, grad = expected_loss_and_gradient(model_fn, x_adv, y, samples=eot_samples,
                                             seed=seed, draw=step * eot_samples)
        x_adv = x_adv + step_size * gradient_sign(grad)
        x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), clip_min, clip_max)
    return x_adv


def _l2_norms(t: tf.Tensor) -> tf.Tensor:
    """Per-example L2 norms, shaped to broadcast against ``t``."""
    flat = tf.reshape(t, [tf.shape(t)[0], -1])
    return tf.reshape(tf.norm(flat, axis=1), [-1] + [1] * (len(t.shape) - 1))


def pgd_l2(model_fn: ModelFn, x, *, eps: float, step_size: float, iterations: int,
           y=None, random_start: bool = True, clip_min: float = 0.0,
           clip_max: float = 1.0, seed: Optional[int] = None,
           eot_samples: int = 1) -> tf.Tensor:
    """PGD in L2: steps of L2 length ``step_size`` along the loss gradient, projected
    onto the L2 ball of radius ``eps`` around x and into the data range.

    The random start is uniform in direction with a radius uniform in [0, eps].
    EOT and seeds as in :func:`pgd_linf`.

    Returns:
      Adversarial images with ||x_adv - x||_2 <= eps (per image), inside the data range.

    Raises:
      ValueError: bad eps, step_size or iterations; images of the wrong range or dtype.
    """
    x = check_range(x, clip_min, clip_max)
    if not eps >= 0 or step_size <= 0 or iterations < 0:
        raise ValueError(f"eps must be >= 0, step_size > 0 and iterations >= 0, got {eps}, "
                         f"{step_size}, {iterations}")
    y = labels_or_predictions(model_fn, x, y)

    def project(x_adv):
        delta = x_adv - x
        scale = tf.minimum(1.0, eps / tf.maximum(_l2_norms(delta), 1e-12))
        return tf.clip_by_value(x + delta * scale, clip_min, clip_max)

    x_adv = x
    if random_start and eps > 0:
        shape = tf.shape(x)
        direction = (tf.random.normal(shape) if seed is None else
                     tf.random.stateless_normal(shape, seed=[seed, 2]))
        radius = (tf.random.uniform([shape[0]]) if seed is None else
                  tf.random.stateless_uniform([shape[0]], seed=[seed, 3])) * eps
        radius = tf.reshape(radius, [-1] + [1] * (len(x.shape) - 1))
        x_adv = project(x + direction / tf.maximum(_l2_norms(direction), 1e-12) * radius)
    for step in range(iterations):
        _, grad = expected_loss_and_gradient(model_fn, x_adv, y, samples=eot_samples,
                                             seed=seed, draw=step * eot_samples)
        x_adv = project(x_adv + step_size * unit_l2_direction(grad))
    return x_adv
