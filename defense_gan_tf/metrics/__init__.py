"""Measures: accuracies with Wilson intervals and input-gradient summaries (``stats``), the
detection ROC from reconstruction errors (``detection``, paper section 3.4), and generator
quality: classifier score and Frechet distance (``quality``).

The quality functions are loaded on first use, so that ``stats`` and ``detection`` import
without TensorFlow (the binaries check their flags before TensorFlow loads).
"""

import importlib

__all__ = ["classifier_score", "frechet_distance", "generator_quality", "sample",
           "statistics"]


def __getattr__(name):
    if name in __all__:
        return getattr(importlib.import_module("defense_gan_tf.metrics.quality"), name)
    raise AttributeError(f"module 'defense_gan_tf.metrics' has no attribute {name!r}")
