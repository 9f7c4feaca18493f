"""BPDA for iterative attacks at a fraction of the projection's cost: follow z* from step to step.

An iterative attack on Defense-GAN with BPDA (Athalye, Carlini and Wagner 2018,
section 4.1) needs, at every step, the classifier's gradient at G(z*(x_t)), the
defense's projection of the current image. Running the full projection (L=200 steps
from R=10 random starts) at each of 100 PGD steps costs 100 projections per image. But
x_t moves little between steps, so z*(x_t) is close to z*(x_{t-1}): a few descent steps
started there find it again. :class:`TrackingBPDA` is that attacker's model: the first
call on a batch projects as the defense does; every later call starts each image's
single restart at the z* of the call before and descends ``track_steps`` steps
(10 steps of 1 restart are 1/200 of the paper's 2,000 generator passes).

This changes only what the attacker computes. Every adversarial image is still scored
through a fresh, full projection of the defense, so a poor tracking can only weaken
the attack, never flatter it.

With ``draws`` = K > 1 the tracker is also an EOT attacker (Athalye, Carlini and
Wagner 2018, section 4.3) over the defense's random starts: its first call projects
each image K times, as the defense would on K calls (each the best of R restarts),
and every later call follows all K z* at once, in one batch of K x B rows.
:meth:`draw_logits` gives the K draws' logits; the attacks' loss averages the
cross-entropy over them (:func:`defense_gan_tf.attacks.common.loss_and_gradient`), so
each step's gradient is the mean of the K draws' BPDA gradients. The draws are kept
from step to step rather than drawn afresh (a fresh draw costs a full projection): the
expectation is over K fixed samples of the defense's randomness.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import keras
import tensorflow as tf

from defense_gan_tf.config import ProjectionConfig
from defense_gan_tf.defense.projection import Projector


class TrackingBPDA:
    """A classifier behind Defense-GAN as an iterative BPDA attacker sees it.

    Call it like a model_fn (images -> logits; the backward pass is the identity
    through the projection). It keeps each image's z* between calls: call :meth:`reset`
    before a new batch of images (one tracker serves many batches; its two compiled
    projections are traced once). A call with another batch size starts over with a
    full projection.

    Args:
      classifier: images -> logits.
      generator: z -> images.
      projection: the first call's projection (the defense's own, normally).
      track_steps: descent steps of every later call, from the previous z*.
      seed: seeds the first call's random starts.
      draws: K, the projections per image the tracker follows (EOT over the random
        starts); 1 is plain tracking BPDA.
    """

    def __init__(self, classifier: keras.Model, generator: keras.Model,
                 projection: ProjectionConfig, *, track_steps: int = 10,
                 seed: Optional[int] = None, draws: int = 1):
        if track_steps < 1:
            raise ValueError(f"track_steps must be >= 1, got {track_steps}")
        if draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")
        self.draws = draws
        self.classifier = classifier
        self.seed = seed
        self.first = Projector(generator, projection, "bpda")
        follow = dataclasses.replace(projection, iterations=track_steps, restarts=1,
                                     prune_at=(), encoder_start=False,
                                     early_stop_tolerance=0.0)
        self.follow = Projector(generator, follow, "bpda")
        self.z = None
        self.generator_passes = 0  # rows x descent steps run so far (the attacker's cost)

    def reset(self, seed: Optional[int] = None) -> None:
        """Forget the tracked z*: the next call projects from random starts (seeded by
        ``seed`` when given)."""
        self.z = None
        if seed is not None:
            self.seed = seed

    def draw_logits(self, images) -> tf.Tensor:
        """Logits of each of the K draws, [K, B, classes]: the classifier at every
        tracked reconstruction of ``images`` (BPDA: the backward pass is the identity
        through each projection)."""
        images = tf.convert_to_tensor(images, tf.float32)
        batch = images.shape[0]
        # Row k * B + b is draw k of image b.
        rows = tf.tile(images, [self.draws] + [1] * (images.shape.rank - 1))
        if self.z is None or self.z.shape[0] != rows.shape[0]:
            projection = self.first(rows, seed=None if self.seed is None
                                    else [int(self.seed), 5])
        else:
            projection = self.follow(rows, z_init=self.z)
        self.z = projection.z
        self.generator_passes += int(projection.row_steps)
        logits = self.classifier(projection.reconstruction, training=False)
        return tf.reshape(logits, [self.draws, batch, -1])

    def __call__(self, images, training=False):
        """Logits of the tracked projection; with K draws, of the mean of their softmax
        outputs (the defense's expected prediction)."""
        logits = self.draw_logits(images)
        if self.draws == 1:
            return logits[0]
        return tf.math.log(tf.reduce_mean(tf.nn.softmax(logits), axis=0) + 1e-12)
