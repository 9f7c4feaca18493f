"""Classifiers A-F of the Defense-GAN paper (appendix).

Every model outputs logits. Dropout rates are Keras rates (fraction dropped).
Use :func:`build_classifier` with a letter; :data:`CLASSIFIERS` is the registry.
A ``seed`` seeds every initialiser and dropout layer of the model itself, so
seeded training needs no process-wide random state.
"""

from __future__ import annotations

import itertools
from typing import Callable, Optional

import keras
from keras import layers


class _Seeds:
    """Per-layer seeds drawn from one model seed (None: Keras's own randomness)."""

    def __init__(self, seed: Optional[int]):
        self.seed = seed
        self.counter = itertools.count()

    def _next(self):
        return None if self.seed is None else int(self.seed) * 1000 + next(self.counter)

    def dense(self) -> dict:
        """Initialiser keywords of a Dense or Conv2D layer."""
        seed = self._next()
        if seed is None:
            return {}
        return {"kernel_initializer": keras.initializers.GlorotUniform(seed=seed)}

    def dropout(self, rate: float, name: str) -> layers.Dropout:
        return layers.Dropout(rate, name=name, seed=self._next())


def _two_conv(num_classes, filters1, kernel1, s: _Seeds):
    """A and C: conv (filters1, kernel1) same; conv 64 5x5 s2 valid; dense 128; dropouts."""
    return [
        layers.Conv2D(filters1, kernel1, padding="same", activation="relu", name="conv1",
                      **s.dense()),
        layers.Conv2D(64, 5, strides=2, padding="valid", activation="relu", name="conv2",
                      **s.dense()),
        layers.Flatten(name="flatten"),
        s.dropout(0.25, "dropout1"),
        layers.Dense(128, activation="relu", name="dense1", **s.dense()),
        s.dropout(0.5, "dropout2"),
        layers.Dense(num_classes, name="logits", **s.dense()),
    ]


def _model_a(num_classes, s):
    return _two_conv(num_classes, 64, 5, s)


def _model_b(num_classes, s, dropout=True):
    stack = [
        s.dropout(0.2, "dropout_in"),
        layers.Conv2D(64, 8, strides=2, padding="same", activation="relu", name="conv1",
                      **s.dense()),
        layers.Conv2D(128, 6, strides=2, padding="valid", activation="relu", name="conv2",
                      **s.dense()),
        layers.Conv2D(128, 5, padding="valid", activation="relu", name="conv3", **s.dense()),
        s.dropout(0.5, "dropout_out"),
        layers.Flatten(name="flatten"),
        layers.Dense(num_classes, name="logits", **s.dense()),
    ]
    if not dropout:
        stack = [layer for layer in stack if not isinstance(layer, layers.Dropout)]
    return stack


def _model_c(num_classes, s):
    return _two_conv(num_classes, 128, 3, s)


def _model_d(num_classes, s):
    return [
        layers.Flatten(name="flatten"),
        layers.Dense(200, activation="relu", name="dense1", **s.dense()),
        s.dropout(0.5, "dropout1"),
        layers.Dense(200, activation="relu", name="dense2", **s.dense()),
        layers.Dense(num_classes, name="logits", **s.dense()),
    ]


def _model_e(num_classes, s):
    return [
        layers.Flatten(name="flatten"),
        layers.Dense(200, activation="relu", name="dense1", **s.dense()),
        layers.Dense(200, activation="relu", name="dense2", **s.dense()),
        layers.Dense(num_classes, name="logits", **s.dense()),
    ]


def _model_f(num_classes, s):
    return _model_b(num_classes, s, dropout=False)


CLASSIFIERS: dict[str, Callable[[int, _Seeds], list]] = {
    "A": _model_a, "B": _model_b, "C": _model_c,
    "D": _model_d, "E": _model_e, "F": _model_f,
}


def build_classifier(name: str, input_shape=(28, 28, 1), num_classes: int = 10,
                     seed: Optional[int] = None) -> keras.Model:
    """Builds classifier ``name`` (A-F) returning logits.

    Args:
      name: architecture letter, case-insensitive.
      input_shape: (H, W, C) of the inputs.
      num_classes: number of logits.
      seed: seeds the model's initialisers and dropout (default: Keras's randomness).

    Raises:
      ValueError: for an unknown letter or a bad shape / class count.
    """
    key = str(name).strip().upper()
    if key not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; expected one of {sorted(CLASSIFIERS)}")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3 or min(input_shape) <= 0:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return keras.Sequential(
        [keras.Input(shape=input_shape, name="image")]
        + CLASSIFIERS[key](num_classes, _Seeds(seed)),
        name=f"classifier_{key}")
