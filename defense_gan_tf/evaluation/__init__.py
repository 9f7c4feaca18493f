"""Evaluation: generator quality, detection ROC, confidence intervals."""

from defense_gan_tf.evaluation.quality import (classifier_score, frechet_distance,
                                               generator_quality, sample, statistics)

__all__ = ["classifier_score", "frechet_distance", "generator_quality", "sample",
           "statistics"]
