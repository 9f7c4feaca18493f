"""Fast gradient sign method (Goodfellow, Shlens, Szegedy 2015); Defense-GAN section 4."""

from __future__ import annotations

import tensorflow as tf

from typing import Optional

from defense_gan_tf.attacks.common import (ModelFn, check_range, expected_loss_and_gradient,
                                           gradient_sign, labels_or_predictions)


def fgsm(model_fn: ModelFn, x, *, eps: float, y=None, clip_min: float = 0.0,
         clip_max: float = 1.0, eot_samples: int = 1,
         seed: Optional[int] = None) -> tf.Tensor:
    """x_adv = clip(x + eps * sign(grad_x loss(f(x), y))).

    Args:
      model_fn: images -> logits (may take a ``seed`` keyword if randomized).
      x: clean images.
      eps: L-infinity size of the step.
      y: true labels (ints or one-hot); None uses the model's predictions.
      clip_min, clip_max: the data range.
      eot_samples: the gradient is averaged over this many calls of ``model_fn``
        (expectation over its randomness; 1 is plain FGSM).
      seed: seeds the model's draws when it takes a ``seed`` keyword.

    Returns:
      Adversarial images with ||x_adv - x||_inf <= eps, inside [clip_min, clip_max]
      (a pixel whose gradient is NaN does not move).
    """
    x = check_range(x, clip_min, clip_max, eps)
    direction = fgsm_direction(model_fn, x, y=y, eot_samples=eot_samples, seed=seed)
    return tf.clip_by_value(x + eps * direction, clip_min, clip_max)


def fgsm_direction(model_fn: ModelFn, x, *, y=None, eot_samples: int = 1,
                   seed: Optional[int] = None) -> tf.Tensor:
    """sign(grad_x loss(f(x), y)), FGSM's step before scaling by eps (NaN components 0):
    it does not depend on eps, so one gradient serves every budget. Arguments as
    :func:`fgsm`."""
    x = tf.convert_to_tensor(x, tf.float32)
    y = labels_or_predictions(model_fn, x, y)
    _, grad = expected_loss_and_gradient(model_fn, x, y, samples=eot_samples, seed=seed)
    return gradient_sign(grad)
