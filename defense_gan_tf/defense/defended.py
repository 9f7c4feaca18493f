"""Defense-GAN as a Keras model: classify the projection G(z*) instead of x (paper section 3.3).

``DefendedClassifier`` is usable wherever a classifier is: ``model(x)`` returns
logits, ``model.evaluate`` works, and attacks see it as just another
``model_fn``. How much gradient reaches the input is set by ``gradient``
(see :mod:`defense_gan_tf.defense.projection`).
"""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from defense_gan_tf.config import ProjectionConfig
from defense_gan_tf.defense.projection import (Projection, Projector, as_projection_config,
                                              validate_images)
from defense_gan_tf.models.checks import check_classifier, check_generator


def classify(classifier: keras.Model, images) -> tf.Tensor:
    """``classifier(images)`` in inference mode; an empty batch gives empty logits.

    Some oneDNN CPU kernels fail on zero-row convolutions, so an empty batch is padded
    with one blank image whose logits are sliced off again (graph mode included, for
    the SavedModel); a large eager batch is classified ``Projector.max_batch`` images
    at a time.
    """
    images = tf.convert_to_tensor(images)
    step = Projector.max_batch
    if tf.executing_eagerly() and images.shape[0] is not None and images.shape[0] > step:
        return tf.concat([classify(classifier, images[i:i + step])
                          for i in range(0, images.shape[0], step)], 0)
    n = tf.shape(images)[0]
    pad = tf.zeros(tf.concat([[tf.maximum(1 - n, 0)], tf.shape(images)[1:]], 0), images.dtype)
    return classifier(tf.concat([images, pad], 0), training=False)[:n]


class DefendedClassifier(keras.Model):
    """A classifier behind the Defense-GAN projection.

    Raises:
      InputError: ``classifier`` does not map the generator's images to logits,
        or ``generator`` does not map vectors to images (e.g. swapped arguments).

    Args:
      classifier: keras model images -> logits (Defense-GAN-Orig when trained
        on original images, Defense-GAN-Rec when trained on reconstructions).
      generator: keras model z -> images.
      projection_config: L, R, learning rate, momentum, decay.
      gradient: ``full``, ``bpda`` or ``none``: what differentiating through
        the defense yields.
      encoder: images -> z, needed when ``projection_config.encoder_start``.
      draw_seed: without ``seed``, every call still draws fresh starts, but from the
        stateless stream [draw_seed, call number], so a run is reproducible.
      seed: when given, every call draws the same initial z for a given batch
        size (the paper's "white-box revisited", where the attacker knows the
        random starts); by default each call draws fresh starts.
      checkpoint_segment: steps per recomputed segment of the full gradient's backward
        pass (:class:`~defense_gan_tf.defense.projection.Projector`; None: about sqrt(L),
        0: none).
      strategy: a ``tf.distribute`` strategy whose replicas each project a share of an
        eager call's images (same starts and results as one device; the full gradient
        runs on one device).
    """

    def __init__(self, classifier: keras.Model, generator: keras.Model,
                 projection_config: Optional[ProjectionConfig] = None,
                 gradient: str = "none", seed: Optional[int] = None,
                 encoder: Optional[keras.Model] = None, draw_seed: Optional[int] = None,
                 checkpoint_segment: Optional[int] = None,
                 strategy: Optional[tf.distribute.Strategy] = None, **kwargs):
        super().__init__(**kwargs)
        check_generator(generator, "DefendedClassifier's generator (second argument)")
        check_classifier(classifier, "DefendedClassifier's classifier (first argument)",
                         image_shape=generator.output_shape[1:])
        self.classifier = classifier
        self.generator = generator
        # Converted before Keras tracks the attribute (a dict would become a TrackedDict).
        self.projection_config = as_projection_config(projection_config)
        self.projector = Projector(generator, self.projection_config, gradient,
                                   encoder=encoder, checkpoint_segment=checkpoint_segment,
                                   strategy=strategy)
        self.gradient = gradient
        self.seed = seed
        self.draw_seed = draw_seed
        self._draws = 0
        self._fused_step = None  # the compiled loss_and_input_gradient, built on first use

    @property
    def draws(self) -> int:
        """How many calls have drawn fresh starts from the ``draw_seed`` stream. Setting it
        continues that stream from a saved position, as if those calls had been made."""
        return self._draws

    @draws.setter
    def draws(self, value: int) -> None:
        if int(value) < 0:
            raise ValueError(f"draws must be >= 0, got {value}")
        self._draws = int(value)

    def _starts_seed(self, seed, z_init=None):
        """(seed of this call's starts, the draw it uses from the ``draw_seed`` stream or
        None): the defense's own ``seed`` first, then the caller's, then the stream."""
        if self.seed is not None:
            return self.seed, None
        if seed is None and self.draw_seed is not None and z_init is None:
            return [int(self.draw_seed), self._draws], self._draws
        return seed, None

    def project(self, images, z_init=None, seed=None) -> Projection:
        """The projection of ``images`` (reconstruction, z, error).

        ``seed`` (an int or a pair) fixes this call's random starts; a defense built
        with a ``seed`` always uses its own (white box revisited).
        """
        seed, draw = self._starts_seed(seed, z_init)
        out = self.projector(images, z_init=z_init, seed=seed)
        if draw is not None:  # counted once done: an interrupted call is drawn again
            self._draws = draw + 1
        return out

    def loss_and_input_gradient(self, images, labels, seed=None):
        """Per-image cross-entropy of the defended logits and its gradient with respect to
        ``images`` (of the summed loss), forward and backward in one compiled graph.

        The attacks' FGSM and PGD steps take their gradient here
        (:func:`defense_gan_tf.attacks.common.loss_and_gradient`). With
        ``gradient="full"`` this is the white-box gradient through all L unrolled steps
        (paper section 4.1); in one graph the segmented recompute of the descent holds
        about two segments' activations per row: 0.05 GB per image at L=200, R=10, about
        20 times less than an eager tape around the compiled projection
        (bench/results/projection_memory.json).
        Starts and draw counting are those of :meth:`project` with the same ``seed``, so
        the value is the eager tape's to float32 rounding.

        Raises:
          ValueError: bad images (as :meth:`project`), labels that are not one per image
            or not below the number of classes.
        """
        projector = self.projector
        images = validate_images(images, projector.image_shape, projector.pixel_range)
        labels = tf.cast(tf.convert_to_tensor(labels), tf.int64)
        n, classes = int(images.shape[0]), int(self.classifier.output_shape[-1])
        if labels.shape.rank != 1 or int(labels.shape[0]) != n:
            raise ValueError(f"labels must be a vector of {n} labels, got shape {labels.shape}")
        if n and int(tf.reduce_min(labels)) < 0:
            raise ValueError(f"y holds a negative label ({int(tf.reduce_min(labels))})")
        if n and int(tf.reduce_max(labels)) >= classes:
            raise ValueError(f"y holds label {int(tf.reduce_max(labels))}, but the model has "
                             f"{classes} classes")
        seed, draw = self._starts_seed(seed)
        z_init = projector.initial_latents(n, seed)
        if self._fused_step is None:
            self._fused_step = tf.function(self._fused_loss_and_gradient, input_signature=(
                tf.TensorSpec([None, *projector.image_shape], tf.float32),
                tf.TensorSpec([None, projector.latent_dim], tf.float32),
                tf.TensorSpec([None], tf.int64)))
        step, r = Projector.max_batch, self.projection_config.restarts
        parts = [self._fused_step(images[i:i + step], z_init[i * r:(i + step) * r],
                             labels[i:i + step]) for i in range(0, max(n, 1), step)]
        if draw is not None:  # as in project(): counted once done
            self._draws = draw + 1
        return tuple(tf.concat([p[k] for p in parts], 0) for k in range(2))

    def _fused_loss_and_gradient(self, images, z_init, labels):
        with tf.GradientTape() as tape:
            tape.watch(images)
            logits = classify(self.classifier, self.projector.graph(images, z_init).reconstruction)
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            total = tf.reduce_sum(loss)
        grad = tape.gradient(total, images)
        return loss, (tf.zeros_like(images) if grad is None else grad)

    def reconstruct(self, images):
        """G(z*) for each image."""
        return self.project(images).reconstruction

    def reconstruction_error(self, images):
        """Per-image mean squared error of the projection: the detection statistic (section 3.4)."""
        return self.project(images).error

    def call(self, images, training=False, seed=None):
        """Logits of the classifier on G(z*); ``seed`` fixes this call's random starts
        (attacks pass one to be reproducible; see ``attacks.common.accepts_seed``)."""
        return classify(self.classifier, self.project(images, seed=seed).reconstruction)

    def call_with_details(self, images, z_init=None):
        """(logits, Projection) from one projection."""
        projection = self.project(images, z_init=z_init)
        return classify(self.classifier, projection.reconstruction), projection

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.classifier.output_shape[-1])
