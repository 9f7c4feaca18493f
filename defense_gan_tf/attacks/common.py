"""Helpers shared by the attacks: labels, loss gradients, clipping.

Attacks see only a ``model_fn``: a callable from images to logits (a Keras
classifier, a DefendedClassifier, a loaded SavedModel's function...). They
never import the defense.
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

ModelFn = Callable[[tf.Tensor], tf.Tensor]


def check_range(x, clip_min: float, clip_max: float, eps: Optional[float] = None,
                eps_name: str = "eps") -> tf.Tensor:
    """Converts ``x`` to float32 and checks the attack's arguments.

    Raises:
      ValueError: clip_min >= clip_max, eps < 0 or larger than the data range.
    """
    if not clip_min < clip_max:
        raise ValueError(f"clip_min ({clip_min}) must be below clip_max ({clip_max})")
    if eps is not None and not 0 <= eps <= clip_max - clip_min:
        raise ValueError(f"{eps_name} must be in [0, {clip_max - clip_min}] (the data "
                         f"range), got {eps}")
    return tf.convert_to_tensor(x, tf.float32)


def labels_or_predictions(model_fn: ModelFn, x: tf.Tensor, y=None) -> tf.Tensor:
    """``y`` as int64 labels, or the model's own predictions when ``y`` is None."""
    if y is None:
        return tf.argmax(model_fn(x), axis=-1)
    y = tf.convert_to_tensor(y)
    if y.dtype.is_floating:  # one-hot
        return tf.argmax(y, axis=-1)
    return tf.cast(y, tf.int64)


def loss_and_gradient(model_fn: ModelFn, x: tf.Tensor, y: tf.Tensor):
    """Per-example cross-entropy of the logits and its gradient with respect to ``x``.

    The gradient of the *summed* loss is returned, so each example's gradient
    does not depend on the batch size.
    """
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model_fn(x)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        total = tf.reduce_sum(loss)
    grad = tape.gradient(total, x)
    if grad is None:  # No path from x to the loss (e.g. a stop_gradient defense).
        grad = tf.zeros_like(x)
    return loss, grad


def input_gradient_norm(model_fn: ModelFn, x, y=None) -> tf.Tensor:
    """L2 norm, per example, of the loss gradient reaching the input.

    Reported next to attack results so that gradient masking is visible: a
    defense whose gradients vanish makes gradient attacks look weaker than
    the defense is (Athalye, Carlini, Wagner 2018).
    """
    x = tf.convert_to_tensor(x, tf.float32)
    y = labels_or_predictions(model_fn, x, y)
    _, grad = loss_and_gradient(model_fn, x, y)
    return tf.norm(tf.reshape(grad, [tf.shape(grad)[0], -1]), axis=1)
