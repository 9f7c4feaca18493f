"""Classifier training on original images (paper section 4: Adam 1e-3, batch 128)."""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np

from defense_gan_tf.config import ClassifierConfig
from defense_gan_tf.models import build_classifier


def train_classifier(images: np.ndarray, labels: np.ndarray,
                     config: Optional[ClassifierConfig] = None, *, epochs: Optional[int] = None,
                     seed: int = 0, validation: Optional[tuple] = None,
                     verbose: int = 2) -> keras.Model:
    """Trains classifier ``config.model`` (A-F) with cross-entropy on logits.

    Args:
      images: [N, H, W, C] float32 in the data range.
      labels: [N] integer class labels.
      config: learning rate, batch size, epochs and architecture.
      epochs: overrides ``config.epochs``.
      seed: seeds initialisation, dropout and shuffling.
      validation: optional (images, labels) evaluated after each epoch.
      verbose: Keras ``fit`` verbosity (2: one line per epoch).

    Returns:
      The trained model (outputs logits), compiled with an accuracy metric.
    """
    config = config or ClassifierConfig()
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"images must be [N, H, W, C] with one label each; got "
                         f"{images.shape} and {labels.shape}")
    keras.utils.set_random_seed(seed)
    num_classes = int(labels.max()) + 1 if len(labels) else 10
    model = build_classifier(config.model, input_shape=images.shape[1:],
                             num_classes=max(num_classes, 10))
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(images, labels, batch_size=config.batch_size,
              epochs=config.epochs if epochs is None else epochs, shuffle=True,
              validation_data=validation, verbose=verbose)
    return model
