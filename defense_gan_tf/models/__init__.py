"""Generator, critic and classifiers A-F (paper appendix), the encoder; checks of loaded
models, weight digests and saving without optimizer state."""

from defense_gan_tf.models.classifiers import CLASSIFIERS, build_classifier
from defense_gan_tf.models.critic import build_critic
from defense_gan_tf.models.encoder import build_encoder
from defense_gan_tf.models.generator import build_generator, float32_copy

__all__ = ["CLASSIFIERS", "build_classifier", "build_critic", "build_encoder",
           "build_generator", "float32_copy"]
