"""Black-box substitute training (Papernot et al. 2017); Defense-GAN section 4.1.

The attacker sees only the labels the black-box model (the oracle) returns.
Starting from a small held-out seed set, it alternates: label the set with
the oracle, train a substitute on it, and grow the set by Jacobian-based
dataset augmentation, x' = x + lambda_r * sign(d F_sub(x)[O(x)] / dx), where
O(x) is the oracle's label. The step's sign flips periodically (Papernot et
al.'s lambda_r = lambda * (-1)^floor(r / tau); the Defense-GAN authors flip
from round 3 on, i.e. tau = 3). FGSM crafted on the substitute then transfers
to the oracle.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from defense_gan_tf.console import echo


def jacobian_augmentation(substitute: Callable, x: np.ndarray, labels: np.ndarray,
                          lmbda: float, *, clip_min: float = 0.0, clip_max: float = 1.0,
                          batch_size: int = 256) -> np.ndarray:
    """Returns the set doubled: [x, clip(x + lmbda * sign(grad_x F_sub(x)[label]))].

    Args:
      substitute: images -> logits.
      x: current set [N, ...].
      labels: the oracle's labels of x, [N].
      lmbda: step size (negative to step against the gradient).
    """
    x = np.asarray(x, np.float32)
    new = []
    for start in range(0, len(x), batch_size):
        xb = tf.constant(x[start:start + batch_size])
        yb = tf.constant(np.asarray(labels[start:start + batch_size]), tf.int64)
        with tf.GradientTape() as tape:
            tape.watch(xb)
            logits = substitute(xb)
            picked = tf.reduce_sum(tf.gather(logits, yb, axis=1, batch_dims=1))
        grad = tape.gradient(picked, xb)
        new.append(tf.clip_by_value(xb + lmbda * tf.sign(grad), clip_min, clip_max).numpy())
    return np.concatenate([x] + new) if new else x


@dataclasses.dataclass
class SubstituteResult:
    """The trained substitute and what training it cost."""

    substitute: keras.Model
    queries: int
    set_sizes: list
    agreement: list  # substitute/oracle label agreement on the set after each round


def train_substitute(oracle_labels: Callable[[np.ndarray], np.ndarray], seed_images: np.ndarray,
                     build_substitute: Callable[[], keras.Model], *, rounds: int = 6,
                     lmbda: float = 0.1, flip_every: int = 3, epochs: int = 10,
                     batch_size: int = 32, learning_rate: float = 1e-3,
                     clip_min: float = 0.0, clip_max: float = 1.0, seed: int = 0,
                     log: Optional[Callable[[str], None]] = None) -> SubstituteResult:
    """Papernot et al.'s substitute training with Jacobian-based augmentation.

    Args:
      oracle_labels: images -> integer labels (the black box; one query per image).
      seed_images: the attacker's initial held-out images (the authors: 150).
      build_substitute: makes an uncompiled logits model (the authors: model E); seed
        its initialisers to make the substitute reproducible.
      rounds: substitute epochs (the authors: 6); the set doubles after each
        round but the last.
      lmbda: augmentation step; its sign flips every ``flip_every`` rounds.
      epochs: training epochs per round (the authors: 10).

    Returns:
      A :class:`SubstituteResult`; ``queries`` counts oracle labels requested.
    """
    log = log or echo
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    substitute = build_substitute()
    substitute.compile(optimizer=keras.optimizers.Adam(learning_rate),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.asarray(seed_images, np.float32)
    labels = np.asarray(oracle_labels(x)).astype(np.int64)
    queries, sizes, agreement = len(x), [], []
    rng = np.random.default_rng(seed)
    for r in range(rounds):
        for _ in range(epochs):  # each epoch's order from a local, seeded generator
            order = rng.permutation(len(x))
            substitute.fit(x[order], labels[order], batch_size=batch_size, epochs=1,
                           shuffle=False, verbose=0)
        pred = np.argmax(substitute.predict(x, batch_size=256, verbose=0), axis=1)
        agreement.append(float(np.mean(pred == labels)))
        sizes.append(len(x))
        log(f"substitute round {r + 1}/{rounds}: {len(x)} images, agreement with the "
            f"oracle {agreement[-1]:.3f}, {queries} oracle queries so far")
        if r < rounds - 1:
            step = lmbda * (-1) ** (r // flip_every)
            grown = jacobian_augmentation(substitute, x, labels, step, clip_min=clip_min,
                                          clip_max=clip_max)
            new = grown[len(x):]
            labels = np.concatenate([labels, np.asarray(oracle_labels(new)).astype(np.int64)])
            queries += len(new)
            x = grown
    return SubstituteResult(substitute, queries, sizes, agreement)
