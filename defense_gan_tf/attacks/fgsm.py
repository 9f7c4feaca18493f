"""Fast gradient sign method (Goodfellow, Shlens, Szegedy 2015); Defense-GAN section 4."""

from __future__ import annotations

import tensorflow as tf

from defense_gan_tf.attacks.common import (ModelFn, check_range, labels_or_predictions,
                                           loss_and_gradient)


def fgsm(model_fn: ModelFn, x, *, eps: float, y=None, clip_min: float = 0.0,
         clip_max: float = 1.0) -> tf.Tensor:
    """x_adv = clip(x + eps * sign(grad_x loss(f(x), y))).

    Args:
      model_fn: images -> logits.
      x: clean images.
      eps: L-infinity size of the step.
      y: true labels (ints or one-hot); None uses the model's predictions.
      clip_min, clip_max: the data range.

    Returns:
      Adversarial images with ||x_adv - x||_inf <= eps, inside [clip_min, clip_max].
    """
    x = check_range(x, clip_min, clip_max, eps)
    y = labels_or_predictions(model_fn, x, y)
    _, grad = loss_and_gradient(model_fn, x, y)
    return tf.clip_by_value(x + eps * tf.sign(grad), clip_min, clip_max)
