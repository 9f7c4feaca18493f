"""RAND+FGSM (Tramer et al. 2018): a random sign step, then FGSM; Defense-GAN section 4."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from defense_gan_tf.attacks.common import ModelFn, check_range, labels_or_predictions
from defense_gan_tf.attacks.fgsm import fgsm


def rand_fgsm(model_fn: ModelFn, x, *, eps: float, alpha: float, y=None,
              clip_min: float = 0.0, clip_max: float = 1.0,
              seed: Optional[int] = None) -> tf.Tensor:
    """x' = x + alpha * sign(N(0, I)); x_adv = FGSM(x') with step eps - alpha.

    Returns:
      Adversarial images with ||x_adv - x||_inf <= eps, inside the data range.

    Raises:
      ValueError: alpha outside [0, eps] or bad eps / range.
    """
    x = check_range(x, clip_min, clip_max, eps)
    if not 0 <= alpha <= eps:
        raise ValueError(f"alpha must be in [0, eps={eps}], got {alpha}")
    y = labels_or_predictions(model_fn, x, y)
    noise = (tf.random.normal(tf.shape(x)) if seed is None else
             tf.random.stateless_normal(tf.shape(x), seed=[seed, 0]))
    x_rand = tf.clip_by_value(x + alpha * tf.sign(noise), clip_min, clip_max)
    return fgsm(model_fn, x_rand, eps=eps - alpha, y=y, clip_min=clip_min,
                clip_max=clip_max)
