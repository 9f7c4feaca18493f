"""An encoder E: image -> z, a start for the projection (ProjectionConfig.encoder_start).

A small convolutional net: 5x5 stride-2 convolutions of d and 2d filters (and 4d
for 64x64 images) with LeakyReLU(0.2), then a linear map to the latent space.
The authors' code had an encoder mode; IBM ART's InverseGAN also starts its
search from an encoder. Trained after the GAN (``training.train_encoder``).
"""

from __future__ import annotations

from typing import Optional

import keras
from keras import layers

from defense_gan_tf.models.generator import _model_config, kernel_initializer


def build_encoder(config, seed: Optional[int] = None, width: int = 32) -> keras.Model:
    """Builds E for ``config.model`` (image shape and latent size).

    Args:
      config: a :class:`Config` or :class:`ModelConfig`.
      seed: seeds the weight initialisers.
      width: filters of the first convolution (d).

    Returns:
      A functional ``keras.Model`` mapping images [B, H, W, C] to z [B, latent_dim].
    """
    cfg = _model_config(config)
    image = keras.Input(shape=cfg.image_shape, name="image")
    x = image
    widths = (width, 2 * width) + ((4 * width,) if cfg.image_shape[0] > 28 else ())
    for i, filters in enumerate(widths, start=1):
        x = layers.Conv2D(filters, 5, strides=2, padding="same", name=f"enc_conv{i}",
                          kernel_initializer=kernel_initializer(seed, 200 + i))(x)
        x = layers.LeakyReLU(0.2, name=f"enc_conv{i}_lrelu")(x)
    x = layers.Flatten(name="enc_flatten")(x)
    z = layers.Dense(cfg.latent_dim, name="z",
                     kernel_initializer=kernel_initializer(seed, 210))(x)
    return keras.Model(image, z, name="encoder")
