"""Evaluation: generator quality, detection ROC, confidence intervals.

The quality functions are loaded on first use, so that the TensorFlow-free modules of
this package (``specs``, ``runs``, ``report``, ``stats``) import without TensorFlow:
the binaries validate their flags with them before TensorFlow loads.
"""

import importlib

__all__ = ["classifier_score", "frechet_distance", "generator_quality", "sample",
           "statistics"]


def __getattr__(name):
    if name in __all__:
        return getattr(importlib.import_module("defense_gan_tf.evaluation.quality"), name)
    raise AttributeError(f"module 'defense_gan_tf.evaluation' has no attribute {name!r}")
