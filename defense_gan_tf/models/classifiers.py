"""Classifiers A-F of the Defense-GAN paper (appendix).

Every model outputs logits. Dropout rates are Keras rates (fraction dropped).
Use :func:`build_classifier` with a letter; :data:`CLASSIFIERS` is the registry.
"""

from __future__ import annotations

from typing import Callable

import keras
from keras import layers


def _two_conv(num_classes, filters1, kernel1):
    """A and C: conv (filters1, kernel1) same; conv 64 5x5 s2 valid; dense 128; dropouts."""
    return [
        layers.Conv2D(filters1, kernel1, padding="same", activation="relu", name="conv1"),
        layers.Conv2D(64, 5, strides=2, padding="valid", activation="relu", name="conv2"),
        layers.Flatten(name="flatten"),
        layers.Dropout(0.25, name="dropout1"),
        layers.Dense(128, activation="relu", name="dense1"),
        layers.Dropout(0.5, name="dropout2"),
        layers.Dense(num_classes, name="logits"),
    ]


def _model_a(num_classes):
    return _two_conv(num_classes, 64, 5)


def _model_b(num_classes, dropout=True):
    stack = [
        layers.Dropout(0.2, name="dropout_in"),
        layers.Conv2D(64, 8, strides=2, padding="same", activation="relu", name="conv1"),
        layers.Conv2D(128, 6, strides=2, padding="valid", activation="relu", name="conv2"),
        layers.Conv2D(128, 5, padding="valid", activation="relu", name="conv3"),
        layers.Dropout(0.5, name="dropout_out"),
        layers.Flatten(name="flatten"),
        layers.Dense(num_classes, name="logits"),
    ]
    if not dropout:
        stack = [layer for layer in stack if not isinstance(layer, layers.Dropout)]
    return stack


def _model_c(num_classes):
    return _two_conv(num_classes, 128, 3)


def _model_d(num_classes):
    return [
        layers.Flatten(name="flatten"),
        layers.Dense(200, activation="relu", name="dense1"),
        layers.Dropout(0.5, name="dropout1"),
        layers.Dense(200, activation="relu", name="dense2"),
        layers.Dense(num_classes, name="logits"),
    ]


def _model_e(num_classes):
    return [
        layers.Flatten(name="flatten"),
        layers.Dense(200, activation="relu", name="dense1"),
        layers.Dense(200, activation="relu", name="dense2"),
        layers.Dense(num_classes, name="logits"),
    ]


def _model_f(num_classes):
    return _model_b(num_classes, dropout=False)


CLASSIFIERS: dict[str, Callable[[int], list]] = {
    "A": _model_a, "B": _model_b, "C": _model_c,
    "D": _model_d, "E": _model_e, "F": _model_f,
}


def build_classifier(name: str, input_shape=(28, 28, 1), num_classes: int = 10) -> keras.Model:
    """Builds classifier ``name`` (A-F) returning logits.

    Args:
      name: architecture letter, case-insensitive.
      input_shape: (H, W, C) of the inputs.
      num_classes: number of logits.

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
        [keras.Input(shape=input_shape, name="image")] + CLASSIFIERS[key](num_classes),
        name=f"classifier_{key}")
