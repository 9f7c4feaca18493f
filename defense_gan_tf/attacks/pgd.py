"""Projected gradient descent in L-infinity (Madry et al. 2018)."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from defense_gan_tf.attacks.common import (ModelFn, check_range, labels_or_predictions,
                                           loss_and_gradient)


def pgd_linf(model_fn: ModelFn, x, *, eps: float, step_size: float, iterations: int,
             y=None, random_start: bool = True, clip_min: float = 0.0,
             clip_max: float = 1.0, seed: Optional[int] = None) -> tf.Tensor:
    """Iterated FGSM steps of ``step_size``, projected onto the eps-ball around x.

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
    for _ in range(iterations):
        _, grad = loss_and_gradient(model_fn, x_adv, y)
        x_adv = x_adv + step_size * tf.sign(grad)
        x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), clip_min, clip_max)
    return x_adv
