"""Helpers shared by the attacks: labels, loss gradients, clipping.

Attacks see only a ``model_fn``: a callable from images to logits (a Keras
classifier, a DefendedClassifier, a loaded SavedModel's function...). They
never import the defense.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

ModelFn = Callable[[tf.Tensor], tf.Tensor]

# Pixels may exceed the data range by this much (float round-off of preprocessing).
RANGE_TOLERANCE = 1e-4


def check_range(x, clip_min: float, clip_max: float, eps: Optional[float] = None,
                eps_name: str = "eps") -> tf.Tensor:
    """Converts ``x`` to float32 and checks the attack's arguments.

    An attack on images of the wrong scale (uint8, or floats in [0, 255]) would
    clip them to the data range and report the result as a tiny perturbation,
    so such input is refused, as is NaN or Inf.

    Raises:
      ValueError: clip_min >= clip_max; eps < 0 or larger than the data range;
        ``x`` not floating point, holding NaN / Inf, or outside [clip_min, clip_max].
    """
    if not clip_min < clip_max:
        raise ValueError(f"clip_min ({clip_min}) must be below clip_max ({clip_max})")
    if eps is not None and not (math.isfinite(eps) and 0 <= eps <= clip_max - clip_min):
        raise ValueError(f"{eps_name} must be in [0, {clip_max - clip_min}] (the data "
                         f"range), got {eps}")
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        x = np.asarray(x)
        dtype = x.dtype
    if not tf.as_dtype(dtype).is_floating:
        raise ValueError(f"x must be floating point in [{clip_min}, {clip_max}], got "
                         f"{tf.as_dtype(dtype).name}; convert integer images (e.g. uint8 / "
                         "255.0) first")
    x = tf.convert_to_tensor(x, tf.float32)
    if tf.executing_eagerly() and tf.size(x) > 0:
        values = x.numpy()
        if not np.all(np.isfinite(values)):
            raise ValueError("x contains NaN or Inf")
        low, high = float(values.min()), float(values.max())
        if low < clip_min - RANGE_TOLERANCE or high > clip_max + RANGE_TOLERANCE:
            raise ValueError(f"x has values in [{low:.4g}, {high:.4g}], outside the data "
                             f"range [clip_min={clip_min}, clip_max={clip_max}]")
    return x


def labels_or_predictions(model_fn: ModelFn, x: tf.Tensor, y=None) -> tf.Tensor:
    """``y`` as int64 labels, or the model's own predictions when ``y`` is None.

    Raises:
      ValueError: ``y`` has another length than ``x``, is not a vector of
        integer labels or a [batch, classes] one-hot array, or holds negative labels.
    """
    if y is None:
        return tf.argmax(model_fn(x), axis=-1)
    y = tf.convert_to_tensor(y)
    if y.dtype.is_floating:  # one-hot
        if y.shape.rank != 2:
            raise ValueError(f"y: float labels must be one-hot [batch, classes], got shape "
                             f"{y.shape}")
        y = tf.argmax(y, axis=-1)
    elif not y.dtype.is_integer:
        raise ValueError(f"y must hold integer labels or one-hot rows, got {y.dtype.name}")
    elif y.shape.rank != 1:
        raise ValueError(f"y must be a vector of labels [batch], got shape {y.shape}")
    if x.shape.rank and y.shape[0] is not None and x.shape[0] is not None and \
            y.shape[0] != x.shape[0]:
        raise ValueError(f"y has {y.shape[0]} labels for {x.shape[0]} images")
    y = tf.cast(y, tf.int64)
    if tf.executing_eagerly() and tf.size(y) > 0 and int(tf.reduce_min(y)) < 0:
        raise ValueError(f"y holds a negative label ({int(tf.reduce_min(y))})")
    return y


def check_labels_fit(y: tf.Tensor, logits: tf.Tensor) -> None:
    """Raises ValueError naming ``y`` when a label is not below the number of logits."""
    if tf.executing_eagerly() and tf.size(y) > 0:
        classes = int(logits.shape[-1])
        top = int(tf.reduce_max(y))
        if top >= classes:
            raise ValueError(f"y holds label {top}, but the model has {classes} classes")


def loss_and_gradient(model_fn: ModelFn, x: tf.Tensor, y: tf.Tensor, seed=None):
    """Per-example cross-entropy of the logits and its gradient with respect to ``x``.

    The gradient of the *summed* loss is returned, so each example's gradient
    does not depend on the batch size. A model with a ``draw_logits`` method (logits of
    K random draws in one call, [K, B, classes], such as an EOT
    :class:`~defense_gan_tf.attacks.TrackingBPDA`) has its loss averaged over the draws
    (EOT: the gradient is the mean of the draws' gradients). A model with a
    ``loss_and_input_gradient(x, y, seed=...)`` method computes both itself (a
    ``DefendedClassifier`` does, in one compiled graph: far less memory through the
    unrolled projection); any other is differentiated with an eager tape. ``seed``, when
    given, fixes a randomized model's draws (see :func:`accepts_seed`).
    """
    draws = getattr(model_fn, "draw_logits", None)
    fused = getattr(model_fn, "loss_and_input_gradient", None)
    if draws is None and callable(fused):
        return fused(x, y, seed=seed)
    model_fn = _seeded(model_fn, seed)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model_fn(x) if draws is None else draws(x)  # [B, C] or [K, B, C]
        check_labels_fit(y, logits)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.broadcast_to(y, tf.shape(logits)[:-1]), logits=logits)
        if draws is not None:
            loss = tf.reduce_mean(loss, axis=0)
        total = tf.reduce_sum(loss)
    grad = tape.gradient(total, x)
    if grad is None:  # No path from x to the loss (e.g. a stop_gradient defense).
        grad = tf.zeros_like(x)
    return loss, grad


def accepts_seed(model_fn) -> bool:
    """Whether ``model_fn`` takes a ``seed`` keyword (a randomized model that can be seeded,
    such as ``DefendedClassifier``, whose random projection starts it fixes)."""
    target = getattr(model_fn, "call", model_fn)
    try:
        return "seed" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def _seeded(model_fn: ModelFn, seed) -> ModelFn:
    """``model_fn`` with its draws fixed by ``seed`` when one is given and it takes one."""
    if seed is not None and accepts_seed(model_fn):
        return functools.partial(model_fn, seed=seed)
    return model_fn


# Seeds of the model's random draws in an attack: [attack seed, _DRAW_OFFSET + draw].
_DRAW_OFFSET = 1_000


def expected_loss_and_gradient(model_fn: ModelFn, x: tf.Tensor, y: tf.Tensor, *,
                               samples: int = 1, seed: Optional[int] = None,
                               draw: int = 0):
    """Loss and input gradient averaged over ``samples`` calls of a randomized model.

    Expectation over transformation (EOT; Athalye, Carlini and Wagner 2018, section
    4.3): a defense that draws fresh randomness on every call (Defense-GAN's random
    projection starts) is attacked through the average gradient. When ``seed`` is
    given and ``model_fn`` takes a ``seed`` keyword, call k draws with seed
    ``[seed, 1000 + draw + k]``, so the attack gives the same result twice.

    Returns:
      (mean per-example loss [B], mean gradient like ``x``).
    """
    if samples < 1:
        raise ValueError(f"eot samples must be >= 1, got {samples}")
    loss_sum, grad_sum = 0.0, tf.zeros_like(x)
    for k in range(samples):
        draw_seed = None if seed is None else [int(seed), _DRAW_OFFSET + draw + k]
        loss, grad = loss_and_gradient(model_fn, x, y, seed=draw_seed)
        loss_sum += loss
        grad_sum += grad
    return loss_sum / samples, grad_sum / samples


def input_gradient_norm(model_fn: ModelFn, x, y=None, seed=None) -> tf.Tensor:
    """L2 norm, per example, of the loss gradient reaching the input.

    Reported next to attack results so that gradient masking is visible: a
    defense whose gradients vanish makes gradient attacks look weaker than
    the defense is (Athalye, Carlini, Wagner 2018). Returns float64 norms, finite
    whenever every gradient component is. ``seed`` fixes a randomized model's draws
    (see :func:`accepts_seed`), so that the figure does not depend on how many calls
    the model served before.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    y = labels_or_predictions(_seeded(model_fn, seed), x, y)
    _, grad = loss_and_gradient(model_fn, x, y, seed=seed)
    return per_example_norm(grad)


def per_example_norm(grad) -> tf.Tensor:
    """L2 norm of each example's gradient [B, ...] -> [B], in float64: the squares of
    large but finite float32 components would overflow to Inf in float32."""
    grad = tf.cast(tf.reshape(grad, [tf.shape(grad)[0], -1]), tf.float64)
    return tf.norm(grad, axis=1)


def gradient_sign(grad) -> tf.Tensor:
    """sign(grad) with NaN components as 0, for the L-infinity steps of FGSM and PGD.

    Gradients through the unrolled projection can overflow on a few images; a NaN
    gives no direction, and a NaN step would make the adversarial image NaN (which
    the projection then refuses). Inf components keep their sign.
    """
    return tf.sign(tf.where(tf.math.is_nan(grad), tf.zeros_like(grad), grad))


def unit_l2_direction(grad) -> tf.Tensor:
    """grad / ||grad||_2 per example, for L2 steps, safe against overflow.

    NaN components count as 0; an example with Inf components moves along their
    signs only (they dominate any finite part); the rest is divided by its largest
    magnitude before the norm, so that large finite gradients (whose squares
    overflow float32) still give a unit step. An all-zero gradient stays zero.
    """
    axes = list(range(1, len(grad.shape)))
    grad = tf.where(tf.math.is_nan(grad), tf.zeros_like(grad), grad)
    inf = tf.math.is_inf(grad)
    has_inf = tf.reduce_any(inf, axis=axes, keepdims=True)
    grad = tf.where(has_inf, tf.where(inf, tf.sign(grad), tf.zeros_like(grad)), grad)
    grad = grad / tf.maximum(tf.reduce_max(tf.abs(grad), axis=axes, keepdims=True), 1e-30)
    norm = tf.sqrt(tf.reduce_sum(tf.square(grad), axis=axes, keepdims=True))
    return grad / tf.maximum(norm, 1e-12)
