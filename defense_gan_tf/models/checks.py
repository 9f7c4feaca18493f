"""What kind of model a Keras model is, judged by its input and output shapes.

A generator maps latent vectors [batch, d] to images [batch, H, W, C]; a
classifier maps images [batch, H, W, C] to logits [batch, classes]. Passing
one where the other belongs otherwise fails deep inside TensorFlow with a
shape error that does not say which argument was wrong.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras

from defense_gan_tf.errors import InputError


def _shapes(model) -> tuple:
    try:
        return tuple(model.input_shape), tuple(model.output_shape)
    except (AttributeError, TypeError, ValueError):
        return None, None


def _check_kind(model, name: str, kind: str, input_rank: int, output_rank: int,
                other: str):
    inputs, outputs = _shapes(model)
    if inputs is None or len(inputs) != input_rank or outputs is None or \
            len(outputs) != output_rank:
        looks_like = inputs is not None and len(inputs) == 6 - input_rank
        raise InputError(f"{name} maps {inputs} to {outputs}, but {kind}"
                         + (f" (this looks like {other})" if looks_like else ""))
    return inputs


def check_generator(model, name: str = "generator") -> keras.Model:
    """Returns ``model`` if it maps vectors to images, else raises :class:`InputError`.

    Args:
      model: the model to check.
      name: how the caller calls it (a flag, an argument or a file), for the message.
    """
    _check_kind(model, name, "a generator maps latent vectors [batch, latent_dim] to "
                "images [batch, height, width, channels]", 2, 4, "a classifier")
    return model


def check_classifier(model, name: str = "classifier",
                     image_shape: Optional[Sequence[int]] = None) -> keras.Model:
    """Returns ``model`` if it maps images (of ``image_shape``) to logits, else raises.

    Raises:
      InputError: the model's input is not an image batch (of ``image_shape``) or
        its output is not [batch, classes].
    """
    inputs = _check_kind(model, name, "a classifier maps images [batch, height, width, "
                         "channels] to logits [batch, classes]", 4, 2, "a generator")
    if image_shape is not None and tuple(inputs[1:]) != tuple(image_shape):
        raise InputError(f"{name} takes images of shape {tuple(inputs[1:])}, but the "
                         f"images here are {tuple(image_shape)}")
    return model
