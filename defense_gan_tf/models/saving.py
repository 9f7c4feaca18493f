"""Model files and identities: a digest of a model's weights (for cache keys and
records) and a ``.keras`` file without the optimizer state (for shipped models)."""

from __future__ import annotations

import hashlib

import keras
import numpy as np

from defense_gan_tf.atomic import save_model


def weights_digest(*models: keras.Model) -> str:
    """sha256 of the models' weights (shapes and values, in order), for cache keys."""
    digest = hashlib.sha256()
    for model in models:
        for w in model.weights:
            value = np.asarray(w.numpy())
            digest.update(str(value.shape).encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def save_without_optimizer(model: keras.Model, path: str) -> str:
    """Saves ``model`` as ``.keras`` with its weights but no optimizer state.

    A compiled model's ``.keras`` file carries the Adam moments (twice the
    weights); shipped models do not need them.
    """
    fresh = model.__class__.from_config(model.get_config())
    fresh.set_weights(model.get_weights())
    return save_model(fresh, path)
