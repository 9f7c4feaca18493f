"""Defense-GAN (Samangouei, Kabkab, Chellappa, ICLR 2018) in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
