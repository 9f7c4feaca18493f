"""Carlini-Wagner L2 attack (Carlini and Wagner 2017), untargeted; Defense-GAN section 4.

Optimises w with x_adv = (tanh(w) + 1) / 2 * (max - min) + min, minimising
||x_adv - x||_2^2 + c * max(Z_y - max_{i != y} Z_i + confidence, 0) with Adam,
and binary-searches c per example. The authors ran 1 binary-search step, 100
iterations, learning rate 10 and c = 100.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from defense_gan_tf.attacks.common import (ModelFn, check_labels_fit, check_range,
                                           labels_or_predictions)


def cw_l2(model_fn: ModelFn, x, *, y=None, binary_search_steps: int = 1,
          max_iterations: int = 100, learning_rate: float = 10.0,
          initial_const: float = 100.0, confidence: float = 0.0,
          clip_min: float = 0.0, clip_max: float = 1.0) -> tf.Tensor:
    """Returns, per example, the smallest-L2 misclassified x_adv found (else x).

    Raises:
      ValueError: bad range or non-positive iteration counts / rates.
    """
    x = check_range(x, clip_min, clip_max)
    if binary_search_steps < 1 or max_iterations < 1 or learning_rate <= 0:
        raise ValueError("binary_search_steps and max_iterations must be >= 1 and "
                         "learning_rate > 0")
    y = labels_or_predictions(model_fn, x, y)
    n = int(x.shape[0])
    span = clip_max - clip_min
    to_unit = tf.clip_by_value((x - clip_min) / span, 1e-6, 1 - 1e-6)
    w0 = tf.atanh(2.0 * to_unit - 1.0)
    lower = np.zeros(n)
    upper = np.full(n, np.inf)
    const = np.full(n, float(initial_const))
    best_l2 = np.full(n, np.inf)
    best = x.numpy().copy()
    for _ in range(binary_search_steps):
        w = tf.identity(w0)
        m, v = tf.zeros_like(w), tf.zeros_like(w)  # Adam moments (Kingma and Ba 2015).
        c = tf.constant(const, tf.float32)
        succeeded = np.zeros(n, bool)
        for step in range(1, max_iterations + 1):
            with tf.GradientTape() as tape:
                tape.watch(w)
                x_adv = (tf.tanh(w) + 1.0) / 2.0 * span + clip_min
                logits = model_fn(x_adv)
                check_labels_fit(y, logits)
                onehot = tf.one_hot(y, tf.shape(logits)[-1])
                real = tf.reduce_sum(onehot * logits, axis=1)
                other = tf.reduce_max(logits - 1e9 * onehot, axis=1)
                margin = tf.maximum(real - other + confidence, 0.0)
                l2 = tf.reduce_sum(tf.square(x_adv - x), axis=[1, 2, 3])
                loss = tf.reduce_sum(l2 + c * margin)
            grad = tape.gradient(loss, w)
            # Record the iterate just evaluated before moving on.
            pred = tf.argmax(logits, axis=1).numpy()
            l2_np = l2.numpy()
            hit = (pred != y.numpy()) & (real.numpy() - other.numpy() + confidence <= 0)
            improve = hit & (l2_np < best_l2)
            best_l2[improve] = l2_np[improve]
            best[improve] = x_adv.numpy()[improve]
            succeeded |= hit
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * tf.square(grad)
            m_hat = m / (1 - 0.9 ** step)
            v_hat = v / (1 - 0.999 ** step)
            w = w - learning_rate * m_hat / (tf.sqrt(v_hat) + 1e-8)
        upper = np.where(succeeded, np.minimum(upper, const), upper)
        lower = np.where(succeeded, lower, np.maximum(lower, const))
        const = np.where(np.isfinite(upper), (lower + upper) / 2, const * 10)
    return tf.constant(np.clip(best, clip_min, clip_max))
