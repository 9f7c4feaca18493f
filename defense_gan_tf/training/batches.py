"""The streams of real batches a GAN training draws from, resumable at any iteration."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from defense_gan_tf.config import Config


def indexed_batches(images: np.ndarray, *, batch_size: int, critic_steps: int,
                    seed: int, start_iteration: int = 0) -> tf.data.Dataset:
    """An endless stream of real batches [batch, critic_steps, H, W, C] from memory.

    Each epoch is a permutation drawn statelessly from (seed, epoch), so the
    stream from ``start_iteration`` is exactly the tail of the stream from 0:
    a resumed run sees the same data an uninterrupted one would.
    """
    images = np.asarray(images)
    n = images.shape[0]
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise ValueError(f"need at least batch_size={batch_size} training images, got {n}")
    quantised = np.round(images * 255.0)
    if images.dtype != np.uint8 and images.min() >= 0 and np.array_equal(
            quantised / 255.0, images.astype(np.float64)):
        store, divisor = quantised.astype(np.uint8), 255.0  # 4x less memory.
    else:
        store, divisor = images.astype(np.float32), 1.0
    table = tf.constant(store)
    first_batch = start_iteration * critic_steps
    seed = int(seed)

    def epoch_indices(epoch):
        keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64),
                                                               epoch]))
        order = tf.argsort(keys)[:per_epoch * batch_size]
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order, [per_epoch, batch_size]))

    def gather(indices):  # [critic_steps, batch] -> [batch, critic_steps, H, W, C]
        real = tf.cast(tf.gather(table, indices), tf.float32) / divisor
        return tf.transpose(real, [1, 0] + list(range(2, len(real.shape))))

    ds = tf.data.Dataset.range(first_batch // per_epoch, np.iinfo(np.int64).max)
    ds = ds.flat_map(epoch_indices).skip(first_batch % per_epoch)
    ds = ds.batch(critic_steps, drop_remainder=True)
    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def streaming_batches(dataset: tf.data.Dataset, *, batch_size: int, critic_steps: int,
                      seed: int, start_iteration: int = 0,
                      shuffle_buffer: int = 10_000) -> tf.data.Dataset:
    """Real batches from a dataset too large for memory (CelebA).

    The shuffle is reseeded from (seed, start_iteration) on resumption, so the
    data order after a resume differs from an uninterrupted run (weights,
    optimizer state and z draws are still restored exactly).
    """
    ds = dataset.map(lambda *element: element[0])  # (image, label) or image alone
    ds = ds.shuffle(shuffle_buffer, seed=int(seed) * 1_000_003 + int(start_iteration))
    ds = ds.repeat().batch(batch_size, drop_remainder=True)
    ds = ds.batch(critic_steps, drop_remainder=True)
    return ds.map(lambda x: tf.transpose(x, [1, 0, 2, 3, 4])).prefetch(2)


def real_batches(config: Config, images, dataset, start_iteration: int) -> tf.data.Dataset:
    """The stream of real batches from ``start_iteration`` on (in memory or streamed)."""
    gan = config.gan
    if dataset is not None:
        return streaming_batches(dataset, batch_size=gan.batch_size,
                                 critic_steps=gan.critic_steps, seed=gan.seed,
                                 start_iteration=start_iteration)
    expected = tuple(config.model.image_shape)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"training images have shape {images.shape[1:]}, the "
                         f"config's model expects {expected}")
    return indexed_batches(images, batch_size=gan.batch_size, critic_steps=gan.critic_steps,
                           seed=gan.seed, start_iteration=start_iteration)
