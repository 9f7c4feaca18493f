"""The Defense-GAN projection and the defended classifier (paper section 3.3), the cached
reconstructions of a whole dataset (Defense-GAN-Rec, section 4), MagNet (the comparison
row), and the counting of a projection's cost."""

from defense_gan_tf.defense.defended import DefendedClassifier
from defense_gan_tf.defense.projection import (GRADIENT_MODES, Projection, Projector,
                                               generator_range, initial_latents, project,
                                               validate_images)

__all__ = ["DefendedClassifier", "GRADIENT_MODES", "Projection", "Projector",
           "generator_range", "initial_latents", "project",
           "validate_images"]
