"""Export of a defended classifier as a SavedModel that plain TensorFlow can serve.

Signatures (batch dimension of any size):
  ``serving_default(images)`` -> logits, probabilities, reconstruction,
      reconstruction_error (and ``is_adversarial`` when exported with a
      detection threshold: reconstruction error above it, paper section 3.4);
  ``project(images)`` -> reconstruction, z, reconstruction_error;
  ``generate(z)`` -> images.

Inputs are checked inside the graph: NaN / Inf and values outside the
generator's range fail with an assertion message saying so; shapes and dtypes
are enforced by the signatures. The SavedModel needs only TensorFlow to load:
``tf.saved_model.load(path).signatures["serving_default"](images=x)``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional

import keras
import tensorflow as tf

from defense_gan_tf import __version__, jsonio
from defense_gan_tf.config import ProjectionConfig
from defense_gan_tf.defense.defended import classify
from defense_gan_tf.defense.projection import Projector
from defense_gan_tf.errors import InputError
from defense_gan_tf.models.checks import check_classifier, check_generator


class DefenseGanModule(tf.Module):
    """The serving graph: projection, classifier and generator with fixed signatures.

    Args:
      classifier: images -> logits.
      generator: z -> images.
      projection_config: L, R, learning rate, momentum, decay.
      detection_threshold: when set, ``serving_default`` also returns
        ``is_adversarial`` = reconstruction_error > threshold.
      seed: when set, the initial z are drawn from this fixed seed (the same
        for every request of a given batch size); otherwise fresh each request.
    """

    def __init__(self, classifier: keras.Model, generator: keras.Model,
                 projection_config: Optional[ProjectionConfig] = None,
                 detection_threshold: Optional[float] = None, seed: Optional[int] = None):
        super().__init__(name="defense_gan")
        check_generator(generator, "the exported generator")
        check_classifier(classifier, "the exported classifier",
                         image_shape=generator.output_shape[1:])
        if detection_threshold is not None and not (
                math.isfinite(detection_threshold) and detection_threshold >= 0):
            raise InputError(f"detection_threshold must be a finite number >= 0, got "
                             f"{detection_threshold}")
        self.classifier = classifier
        self.generator = generator
        self.projector = Projector(generator, projection_config)
        self.config = self.projector.config
        self.threshold = detection_threshold
        self.seed = seed
        self.latent_dim = self.projector.latent_dim
        self.image_shape = self.projector.image_shape
        self.pixel_range = self.projector.pixel_range
        images = tf.TensorSpec([None, *self.image_shape], tf.float32, name="images")
        latents = tf.TensorSpec([None, self.latent_dim], tf.float32, name="z")
        self.serve = tf.function(self._serve, input_signature=[images])
        self.project = tf.function(self._project, input_signature=[images])
        self.generate = tf.function(self._generate, input_signature=[latents])

    def _projection(self, images):
        return self.projector(images, seed=None if self.seed is None else [self.seed, 0])

    def _serve(self, images):
        projection = self._projection(images)
        logits = classify(self.classifier, projection.reconstruction)
        out = {"logits": logits, "probabilities": tf.nn.softmax(logits),
               "reconstruction": projection.reconstruction,
               "reconstruction_error": projection.error}
        if self.threshold is not None:
            out["is_adversarial"] = projection.error > self.threshold
        return out

    def _project(self, images):
        projection = self._projection(images)
        return {"reconstruction": projection.reconstruction, "z": projection.z,
                "reconstruction_error": projection.error}

    def _generate(self, z):
        checks = [tf.debugging.assert_all_finite(z, "z contains NaN or Inf")]
        with tf.control_dependencies(checks):
            return {"images": self.generator(z, training=False)}


def export_saved_model(classifier: keras.Model, generator: keras.Model, path: str, *,
                       projection_config: Optional[ProjectionConfig] = None,
                       detection_threshold: Optional[float] = None,
                       seed: Optional[int] = None) -> str:
    """Writes the defended classifier as a SavedModel at ``path``.

    Also writes ``path/defense_gan.json`` with the projection settings, the
    threshold and the package version. Returns ``path``.

    Raises:
      InputError: the models are not a classifier and a generator of matching
        images, or the detection threshold is not a finite number >= 0.
    """
    module = DefenseGanModule(classifier, generator, projection_config,
                              detection_threshold, seed)
    probe = tf.zeros([1, *module.image_shape])
    try:
        classifier(probe, training=False)
    except Exception as e:  # Report the mismatch in our terms.
        raise InputError(f"the classifier does not accept the generator's images of shape "
                         f"{module.image_shape}: {e}") from None
    signatures = {
        "serving_default": module.serve.get_concrete_function(),
        "project": module.project.get_concrete_function(),
        "generate": module.generate.get_concrete_function(),
    }
    tf.saved_model.save(module, path, signatures=signatures)
    jsonio.write_json(os.path.join(path, "defense_gan.json"), {
        "projection": dataclasses.asdict(module.config),
        "detection_threshold": detection_threshold, "seed": seed,
        "image_shape": list(module.image_shape), "latent_dim": module.latent_dim,
        "pixel_range": list(module.pixel_range), "defense_gan_tf": __version__},
        sort_keys=False)
    return path
