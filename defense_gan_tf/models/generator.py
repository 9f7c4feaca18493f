"""The Defense-GAN generator G: z -> image (paper section 3.2, appendix).

28x28x1 (MNIST, Fashion-MNIST): Dense -> 4x4x(4d), three 5x5 stride-2
transposed convolutions with a crop from 8x8 to 7x7 after the first, sigmoid
output. 64x64x3 (CelebA): Dense -> 4x4x(4d), four 5x5 stride-2 transposed
convolutions, tanh output. ``d`` is ``config.net_dim`` (64 in the paper).

Both builders take a Keras dtype policy: ``mixed_bfloat16`` keeps the weights
in float32 and computes the hidden layers in bfloat16, while the output
activation (the generator's image, the critic's score) stays float32.
"""

from __future__ import annotations

from typing import Optional

import keras
from keras import layers

from defense_gan_tf.config import Config, ModelConfig, check_precision


def _model_config(config) -> ModelConfig:
    if isinstance(config, Config):
        return config.model
    if isinstance(config, ModelConfig):
        return config
    raise TypeError(f"expected a Config or ModelConfig, got {type(config).__name__}")


def kernel_initializer(seed: Optional[int], index: int):
    """Glorot-uniform, seeded from (seed, layer index) when a seed is given."""
    if seed is None:
        return "glorot_uniform"
    return keras.initializers.GlorotUniform(seed=int(seed) * 1000 + index)


def _up(x, filters: int, name: str, batch_norm: bool, seed, index, dtype,
        activation="relu", activation_dtype=None):
    x = layers.Conv2DTranspose(filters, 5, strides=2, padding="same", name=name,
                               kernel_initializer=kernel_initializer(seed, index),
                               dtype=dtype)(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn", dtype=dtype)(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}",
                              dtype=activation_dtype or dtype)(x)
    return x


def build_generator(config, seed: Optional[int] = None,
                    precision: str = "float32") -> keras.Model:
    """Builds the generator for ``config.model.image_shape``.

    Args:
      config: a :class:`Config` or :class:`ModelConfig`.
      seed: seeds the weight initialisers (default: Keras's global random state).
      precision: ``float32`` or ``mixed_bfloat16`` (hidden layers compute in
        bfloat16; weights and the output image stay float32).

    Returns:
      A functional ``keras.Model`` mapping float32 z [B, latent_dim] to float32
      images [B, H, W, C] in ``config.model.pixel_range``.
    """
    cfg = _model_config(config)
    dtype = check_precision(precision)
    d, bn = cfg.net_dim, cfg.generator_batch_norm
    z = keras.Input(shape=(cfg.latent_dim,), name="z")
    x = layers.Dense(4 * 4 * 4 * d, name="project",
                     kernel_initializer=kernel_initializer(seed, 0), dtype=dtype)(z)
    if bn:
        x = layers.BatchNormalization(name="project_bn", dtype=dtype)(x)
    x = layers.Activation("relu", name="project_relu", dtype=dtype)(x)
    x = layers.Reshape((4, 4, 4 * d), name="reshape", dtype=dtype)(x)
    out = dict(activation=cfg.output_activation, activation_dtype="float32")
    if cfg.image_shape == (28, 28, 1):
        x = _up(x, 2 * d, "up1", bn, seed, 1, dtype)                      # 8x8
        x = layers.Cropping2D(((0, 1), (0, 1)), name="crop7", dtype=dtype)(x)  # 7x7
        x = _up(x, d, "up2", bn, seed, 2, dtype)                          # 14x14
        x = _up(x, 1, "up3", False, seed, 3, dtype, **out)                # 28x28
    else:
        x = _up(x, 2 * d, "up1", bn, seed, 1, dtype)                      # 8x8
        x = _up(x, d, "up2", bn, seed, 2, dtype)                          # 16x16
        x = _up(x, d, "up3", bn, seed, 3, dtype)                          # 32x32
        x = _up(x, cfg.image_shape[-1], "up4", False, seed, 4, dtype, **out)  # 64x64
    return keras.Model(z, x, name="generator")


def float32_copy(model: keras.Model, builder) -> keras.Model:
    """A float32 twin of ``model`` (built by ``builder()``) holding its weights.

    Mixed-precision models keep float32 weights, so the copy is exact; it is
    what gets saved, so saved models load and run in float32.
    """
    twin = builder()
    twin.set_weights(model.get_weights())
    return twin
