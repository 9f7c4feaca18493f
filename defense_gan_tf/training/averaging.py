"""An exponential moving average of a model's weights, kept during training.

Averaging the generator's weights over the last few thousand updates (Yazici et al.
2019, "The unusual effectiveness of averaging in GAN training", section 3) smooths
the oscillation of adversarial training and often gives a better generator than the
last iterate, at the cost of one copy of the weights and one multiply-add per weight
and iteration.

The decay applied after update ``t`` is ``min(decay, (1 + t) / (10 + t))``: the
average follows the weights closely at first, so that it is not dominated by the
random initialisation, and settles at ``decay`` after about ``10 / (1 - decay)``
updates. The decay depends only on ``t``, so a resumed run (which restores the
average from its checkpoint) continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def warmup_decay(decay: float, step) -> tf.Tensor:
    """``min(decay, (1 + step) / (10 + step))`` as a float32 tensor."""
    step = tf.cast(step, tf.float32)
    return tf.minimum(tf.constant(decay, tf.float32), (1.0 + step) / (10.0 + step))


class WeightAverage:
    """Keeps ``target``'s weights an exponential moving average of ``source``'s.

    ``target`` must have ``source``'s architecture (same weights, in the same order and
    shapes); it keeps float32 weights whatever ``source`` computes in. Trainable
    weights are averaged; non-trainable ones (batch-norm statistics) are copied.

    Args:
      source: the model being trained.
      target: the model holding the average (saved and evaluated like any model).
      decay: the long-run decay, in [0, 1).
    """

    def __init__(self, source: keras.Model, target: keras.Model, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if len(source.weights) != len(target.weights) or any(
                tuple(a.shape) != tuple(b.shape)
                for a, b in zip(source.weights, target.weights)):
            raise ValueError("the average's model does not match the trained model's weights")
        self.source, self.target, self.decay = source, target, float(decay)
        trainable = {id(v) for v in source.trainable_weights}
        self._pairs = [(t.value if hasattr(t, "value") else t,
                        s.value if hasattr(s, "value") else s, id(s) in trainable)
                       for t, s in zip(target.weights, source.weights)]

    def update(self, step) -> None:
        """One averaging step after update ``step`` of ``source`` (graph or eager)."""
        d = warmup_decay(self.decay, step)
        for average, weight, trainable in self._pairs:
            value = tf.cast(weight, average.dtype)
            if trainable:
                average.assign(d * average + (1.0 - d) * value)
            else:
                average.assign(value)

    def reset(self) -> None:
        """Sets the average to ``source``'s current weights."""
        for average, weight, _ in self._pairs:
            average.assign(tf.cast(weight, average.dtype))
