"""The WGAN-GP critic D: image -> score (paper appendix; Gulrajani et al. 2017).

Three 5x5 stride-2 convolutions of d, 2d and 4d filters with LeakyReLU(0.2),
then a linear unit on the flattened feature map. No batch normalisation: the
gradient penalty is defined per example (Gulrajani et al. 2017, section 4).
For 64x64 inputs the whole 8x8x(4d) map is flattened.
"""

from __future__ import annotations

from typing import Optional

import keras
from keras import layers

from defense_gan_tf.models.generator import _model_config, kernel_initializer


def build_critic(config, seed: Optional[int] = None) -> keras.Model:
    """Builds the critic for ``config.model.image_shape``.

    Args:
      config: a :class:`Config` or :class:`ModelConfig`.
      seed: seeds the weight initialisers (default: Keras's global random state).

    Returns:
      A functional ``keras.Model`` mapping images [B, H, W, C] to scores [B, 1].
    """
    cfg = _model_config(config)
    d = cfg.net_dim
    image = keras.Input(shape=cfg.image_shape, name="image")
    x = image
    for i, filters in enumerate((d, 2 * d, 4 * d), start=1):
        x = layers.Conv2D(filters, 5, strides=2, padding="same", name=f"conv{i}",
                          kernel_initializer=kernel_initializer(seed, 100 + i))(x)
        x = layers.LeakyReLU(0.2, name=f"conv{i}_lrelu")(x)
    x = layers.Flatten(name="flatten")(x)
    score = layers.Dense(1, name="score",
                         kernel_initializer=kernel_initializer(seed, 104))(x)
    return keras.Model(image, score, name="critic")
