"""WGAN-GP (Gulrajani et al. 2017) as a ``keras.Model`` with its own ``train_step``.

Defense-GAN trains its generator with WGAN-GP (paper section 3.2 and
appendix): 5 critic updates per generator update, gradient penalty weight 10,
Adam(1e-4, 0.5, 0.9), batch 50.

All randomness is stateless and keyed on (seed, iteration, example index), so
the iteration counter is the whole random state: a resumed run draws exactly
what an uninterrupted one would, and a batch split across replicas under
``tf.distribute`` draws exactly what one device would for the same batch.
"""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from defense_gan_tf.config import GanConfig

# Random streams per iteration: critic steps use z and alpha, the generator step z.
_STREAMS_PER_CRITIC_STEP = 2

NORM_EPSILON = 1e-12


def safe_norm(x: tf.Tensor, axis) -> tf.Tensor:
    """Euclidean norm with a finite gradient at zero: sqrt(sum x^2 + 1e-12)."""
    return tf.sqrt(tf.reduce_sum(tf.square(x), axis=axis) + NORM_EPSILON)


def gradient_penalty(critic, real: tf.Tensor, fake: tf.Tensor,
                     alpha: tf.Tensor) -> tf.Tensor:
    """Per-example gradient penalty (||grad_x D(x_hat)||_2 - 1)^2.

    x_hat = alpha * real + (1 - alpha) * fake, alpha in [0, 1] per example
    (Gulrajani et al. 2017, Algorithm 1, lines 4-7).

    Args:
      critic: callable image batch -> scores [B, 1] or [B].
      real, fake: image batches of equal shape [B, ...].
      alpha: interpolation weights [B].

    Returns:
      Penalties, shape [B].
    """
    alpha = tf.reshape(tf.cast(alpha, real.dtype),
                       [-1] + [1] * (len(real.shape) - 1))
    x_hat = alpha * real + (1.0 - alpha) * fake
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        scores = critic(x_hat, training=True)
    grads = tape.gradient(scores, x_hat)
    norms = safe_norm(grads, axis=list(range(1, len(real.shape))))
    return tf.square(norms - 1.0)


def _replica_slice(global_values: tf.Tensor, local_batch: tf.Tensor) -> tf.Tensor:
    """This replica's rows of a tensor drawn for the whole global batch."""
    ctx = tf.distribute.get_replica_context()
    replica = ctx.replica_id_in_sync_group if ctx is not None else 0
    start = tf.cast(replica, tf.int32) * local_batch
    return global_values[start:start + local_batch]


class WGANGP(keras.Model):
    """Generator and critic trained with WGAN-GP.

    ``train_step(data)`` takes real images shaped [B, critic_steps, H, W, C]
    (one fresh real batch per critic step) or an (images, labels) tuple of
    those, and returns this replica's contribution to the global-batch means
    of: critic_loss, generator_loss, gradient_penalty and wasserstein (the
    estimate E[D(real)] - E[D(fake)]). Summing over replicas gives the means.

    Args:
      generator: keras model z -> image.
      critic: keras model image -> score.
      config: the :class:`GanConfig` (critic steps, penalty weight, seed).
    """

    def __init__(self, generator: keras.Model, critic: keras.Model,
                 config: Optional[GanConfig] = None, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.critic = critic
        self.gan_config = config or GanConfig()
        self.latent_dim = int(generator.input_shape[-1])
        names = ("critic_loss", "generator_loss", "gradient_penalty", "wasserstein")
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}

    def compile(self, g_optimizer=None, d_optimizer=None, **kwargs):
        """Sets the two optimizers (defaults: Adam with the config's settings)."""
        super().compile(**kwargs)
        self.g_optimizer = g_optimizer or self._adam("g_adam")
        self.d_optimizer = d_optimizer or self._adam("d_adam")

    def _adam(self, name):
        c = self.gan_config
        return keras.optimizers.Adam(c.learning_rate, beta_1=c.beta_1, beta_2=c.beta_2,
                                     epsilon=1e-8, name=name)

    def build_optimizers(self):
        """Creates optimizer slots now (before restoring or tracing)."""
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.critic.trainable_variables)

    @property
    def iteration(self) -> tf.Variable:
        """Generator updates done so far (the generator optimizer's counter)."""
        return self.g_optimizer.iterations

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, z, training=False):
        return self.generator(z, training=training)

    def _seed(self, iteration, stream: int):
        streams = _STREAMS_PER_CRITIC_STEP * self.gan_config.critic_steps + 1
        counter = tf.cast(iteration, tf.int64) * streams + stream
        return tf.stack([tf.constant(self.gan_config.seed, tf.int64), counter])

    def _latent(self, iteration, stream, local_batch, global_batch):
        z = tf.random.stateless_normal([global_batch, self.latent_dim],
                                       seed=self._seed(iteration, stream))
        return _replica_slice(z, local_batch)

    def _batch(self, data):
        """(real [batch, critic_steps, H, W, C], local batch, global batch, 1 / global)."""
        real = data[0] if isinstance(data, (tuple, list)) else data
        real = tf.convert_to_tensor(real)
        if len(real.shape) != 5 or real.shape[1] != self.gan_config.critic_steps:
            raise ValueError(
                "train_step expects real images [batch, critic_steps="
                f"{self.gan_config.critic_steps}, H, W, C], got {real.shape}")
        local_batch = tf.shape(real)[0]
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        global_batch = local_batch * replicas
        return real, local_batch, global_batch, 1.0 / tf.cast(global_batch, real.dtype)

    def _critic_updates(self, real, iteration, local_batch, global_batch, scale):
        """The critic_steps critic updates of one iteration (Gulrajani et al. 2017,
        Algorithm 1, lines 2-9); returns the last update's loss terms."""
        gp_weight = self.gan_config.gradient_penalty_weight
        for k in range(self.gan_config.critic_steps):
            real_k = real[:, k]
            z = self._latent(iteration, 2 * k, local_batch, global_batch)
            alpha = _replica_slice(
                tf.random.stateless_uniform([global_batch],
                                            seed=self._seed(iteration, 2 * k + 1)),
                local_batch)
            with tf.GradientTape() as tape:
                fake = self.generator(z, training=True)
                d_real = tf.reshape(self.critic(real_k, training=True), [-1])
                d_fake = tf.reshape(self.critic(fake, training=True), [-1])
                penalty = gradient_penalty(self.critic, real_k, fake, alpha)
                critic_loss = tf.reduce_sum(d_fake - d_real + gp_weight * penalty) * scale
            grads = tape.gradient(critic_loss, self.critic.trainable_variables)
            self.d_optimizer.apply_gradients(zip(grads, self.critic.trainable_variables))
        return critic_loss, penalty, d_real, d_fake

    def critic_step(self, data, round_):
        """The critic updates of one iteration without the generator's: how a new critic
        is trained against a trained generator before training goes on (a warm start
        from a package shipped without its critic). Round ``round_`` draws z and the
        penalty's mixing weights from counters the training never uses (negative)."""
        real, local_batch, global_batch, scale = self._batch(data)
        iteration = -1 - tf.cast(round_, tf.int64)
        critic_loss, penalty, d_real, d_fake = self._critic_updates(
            real, iteration, local_batch, global_batch, scale)
        return {"critic_loss": critic_loss,
                "gradient_penalty": tf.reduce_sum(penalty) * scale,
                "wasserstein": tf.reduce_sum(d_real - d_fake) * scale}

    def train_step(self, data):
        real, local_batch, global_batch, scale = self._batch(data)
        iteration = tf.identity(self.iteration)
        critic_loss, penalty, d_real, d_fake = self._critic_updates(
            real, iteration, local_batch, global_batch, scale)

        z = self._latent(iteration, 2 * self.gan_config.critic_steps, local_batch,
                         global_batch)
        with tf.GradientTape() as tape:
            d_gen = tf.reshape(self.critic(self.generator(z, training=True),
                                           training=True), [-1])
            generator_loss = -tf.reduce_sum(d_gen) * scale
        grads = tape.gradient(generator_loss, self.generator.trainable_variables)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_variables))

        return {
            "critic_loss": critic_loss,
            "generator_loss": generator_loss,
            "gradient_penalty": tf.reduce_sum(penalty) * scale,
            "wasserstein": tf.reduce_sum(d_real - d_fake) * scale,
        }

    def update_trackers(self, logs) -> None:
        """Accumulates reduced step logs into the Mean trackers (cross-replica context)."""
        for name, tracker in self.trackers.items():
            tracker.update_state(logs[name])
