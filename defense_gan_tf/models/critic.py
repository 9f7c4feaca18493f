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

from defense_gan_tf.config import check_precision
from defense_gan_tf.models.generator import _model_config, kernel_initializer


def build_critic(config, seed: Optional[int] = None,
                 precision: str = "float32") -> keras.Model:
    """Builds the critic for ``config.model.image_shape``.

    Args:
      config: a :class:`Config` or :class:`ModelConfig`.
      seed: seeds the weight initialisers (default: Keras's global random state).
      precision: ``float32`` or ``mixed_bfloat16`` (the convolutions compute in
        bfloat16; the final linear score is computed in float32).

    Returns:
      A functional ``keras.Model`` mapping images [B, H, W, C] to float32 scores [B, 1].
    """
    cfg = _model_config(config)
    dtype = check_precision(precision)
    d = cfg.net_dim
    image = keras.Input(shape=cfg.image_shape, name="image")
    x = image
    for i, filters in enumerate((d, 2 * d, 4 * d), start=1):
        x = layers.Conv2D(filters, 5, strides=2, padding="same", name=f"conv{i}",
                          kernel_initializer=kernel_initializer(seed, 100 + i),
                          dtype=dtype)(x)
        x = layers.LeakyReLU(0.2, name=f"conv{i}_lrelu", dtype=dtype)(x)
    x = layers.Flatten(name="flatten", dtype=dtype)(x)
    score = layers.Dense(1, name="score", dtype="float32",
                         kernel_initializer=kernel_initializer(seed, 104))(x)
    return keras.Model(image, score, name="critic")
