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
import json
import os
import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from defense_gan_tf.batch_cache import load_batch, save_batch
from defense_gan_tf.console import echo

PROGRESS_SECONDS = 60.0  # at most one labelling progress line per this many seconds


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
    earlier_seconds: float = 0.0  # spent in earlier, interrupted calls that this one resumed


@dataclasses.dataclass
class _Progress:
    """Where a substitute training stands between two oracle calls.

    ``points`` are every image queried or about to be; ``labels`` the oracle's labels of
    its first ``len(labels)``; ``trained`` the rounds whose training is done (the
    substitute's and its optimizer's variables are those after round ``trained``)."""

    points: np.ndarray
    labels: np.ndarray
    trained: int = 0
    queries: int = 0
    sizes: list = dataclasses.field(default_factory=list)
    agreement: list = dataclasses.field(default_factory=list)
    earlier_seconds: float = 0.0  # spent before this call, by the calls it resumes


_SAVED_FIELDS = {"points", "labels", "trained", "queries", "sizes", "agreement", "rng",
                 "oracle_position", "seconds"}


class _ProgressFile:
    """An interrupted substitute training on disk: the progress, the random state of the
    epoch order, the oracle's position and, after a round, the substitute's and its
    optimizer's variables. ``path`` None: nothing is kept."""

    def __init__(self, path: Optional[str], oracle_position, rng, substitute,
                 checkpoint_seconds: float, log):
        self.path, self.rng, self.substitute, self.log = path, rng, substitute, log
        self.checkpoint_seconds = checkpoint_seconds
        self.get_position, self.set_position = oracle_position or (lambda: 0, lambda n: None)
        self.started = self.saved_at = time.monotonic()

    def save_if_due(self, p: _Progress) -> None:
        """Saves ``p`` when ``checkpoint_seconds`` have passed since the last save."""
        if time.monotonic() - self.saved_at >= self.checkpoint_seconds:
            self.save(p)

    def save(self, p: _Progress) -> None:
        if not self.path:
            return
        arrays = dict(points=p.points, labels=p.labels, trained=p.trained, queries=p.queries,
                      sizes=np.asarray(p.sizes, np.int64),
                      agreement=np.asarray(p.agreement, np.float64),
                      rng=np.asarray(json.dumps(self.rng.bit_generator.state)),
                      oracle_position=self.get_position(),
                      seconds=p.earlier_seconds + time.monotonic() - self.started)
        if p.trained:
            arrays.update({k: np.asarray(v) for k, v in self._variables().items()})
        save_batch(self.path, **arrays)
        self.saved_at = time.monotonic()

    def load(self, seed_images: np.ndarray, rounds: int) -> Optional[_Progress]:
        """The saved progress, restored into the random state, the substitute and the
        oracle; None when there is none or it belongs to other seed images or settings."""
        saved = load_batch(self.path) if self.path else None
        if saved is None:
            return None
        if not _SAVED_FIELDS <= saved.keys():
            self.log(f"ignoring substitute progress {self.path}: it lacks "
                     f"{sorted(_SAVED_FIELDS - saved.keys())}")
            return None
        points, trained = saved["points"], int(saved["trained"])
        if (points.shape[1:] != seed_images.shape[1:] or len(points) < len(seed_images)
                or not np.array_equal(points[:len(seed_images)], seed_images)
                or len(saved["labels"]) > len(points) or trained > rounds):
            self.log(f"ignoring substitute progress {self.path}: it is for other seed "
                     f"images or settings")
            return None
        if trained:
            self.substitute.optimizer.build(self.substitute.trainable_variables)
            targets = self._variables()
            if (sorted(targets) != sorted(k for k in saved if k[:3] in ("var", "opt"))
                    or any(saved[k].shape != tuple(v.shape) for k, v in targets.items())):
                self.log(f"ignoring substitute progress {self.path}: its variables do not "
                         f"fit this substitute")
                return None
            for k, v in targets.items():
                v.assign(saved[k])
        self.rng.bit_generator.state = json.loads(str(saved["rng"]))
        self.set_position(int(saved["oracle_position"]))
        p = _Progress(points, saved["labels"].astype(np.int64), trained, int(saved["queries"]),
                      [int(s) for s in saved["sizes"]], [float(a) for a in saved["agreement"]],
                      float(saved["seconds"]))
        self.log(f"substitute: resuming after round {trained}/{rounds} with {len(p.labels)}/"
                 f"{len(points)} images labelled ({self.path})")
        return p

    def _variables(self) -> dict:
        """The substitute's variables (with its dropout seed states) and its optimizer's,
        by the names they are saved under."""
        return {**{f"var{i}": v for i, v in enumerate(self.substitute.variables)},
                **{f"opt{i}": v for i, v in enumerate(self.substitute.optimizer.variables)}}

    def remove(self) -> None:
        if self.path and os.path.exists(self.path):
            os.remove(self.path)


def train_substitute(oracle_labels: Callable[[np.ndarray], np.ndarray], seed_images: np.ndarray,
                     build_substitute: Callable[[], keras.Model], *, rounds: int = 6,
                     lmbda: float = 0.1, flip_every: int = 3, epochs: int = 10,
                     batch_size: int = 32, learning_rate: float = 1e-3,
                     clip_min: float = 0.0, clip_max: float = 1.0, seed: int = 0,
                     progress_path: Optional[str] = None, checkpoint_seconds: float = 120.0,
                     label_chunk: int = 64,
                     oracle_position: Optional[tuple[Callable[[], int],
                                                     Callable[[int], None]]] = None,
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
      progress_path: an ``.npz`` file that keeps an interrupted training: the oracle's
        labels so far (written every ``checkpoint_seconds`` of labelling and on an
        interruption) and the substitute after each round. A later call with the same
        path and seed images continues from it, with the same result as an uninterrupted
        call; the file is removed when training ends.
      label_chunk: images per oracle call, the granularity of the saved labels (a
        multiple of the oracle's own batch keeps its batches, and so a randomised
        oracle's draws, as in one call).
      oracle_position: (get, set) of a randomised oracle's position in its random stream,
        saved and restored with the labels.

    Returns:
      A :class:`SubstituteResult`; ``queries`` counts oracle labels requested.
    """
    log = log or echo
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if label_chunk < 1:
        raise ValueError(f"label_chunk must be >= 1, got {label_chunk}")
    substitute = build_substitute()
    substitute.compile(optimizer=keras.optimizers.Adam(learning_rate),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    seed_images = np.asarray(seed_images, np.float32)
    rng = np.random.default_rng(seed)
    store = _ProgressFile(progress_path, oracle_position, rng, substitute,
                          checkpoint_seconds, log)
    p = store.load(seed_images, rounds) or _Progress(seed_images, np.zeros(0, np.int64))
    try:
        while True:
            _label(oracle_labels, p, label_chunk, store, log)
            if p.trained == rounds:
                break
            x, labels = p.points, p.labels
            for _ in range(epochs):  # each epoch's order from a local, seeded generator
                order = rng.permutation(len(x))
                substitute.fit(x[order], labels[order], batch_size=batch_size, epochs=1,
                               shuffle=False, verbose=0)
            pred = np.argmax(substitute.predict(x, batch_size=256, verbose=0), axis=1)
            p.agreement.append(float(np.mean(pred == labels)))
            p.sizes.append(len(x))
            p.trained += 1
            log(f"substitute round {p.trained}/{rounds}: {len(x)} images, agreement with "
                f"the oracle {p.agreement[-1]:.3f}, {p.queries} oracle queries so far")
            if p.trained == rounds:
                break
            step = lmbda * (-1) ** ((p.trained - 1) // flip_every)
            p.points = jacobian_augmentation(substitute, x, labels, step, clip_min=clip_min,
                                             clip_max=clip_max)
            store.save(p)
    except KeyboardInterrupt:
        if len(p.labels) < len(p.points):  # stopped while labelling: keep the labels
            store.save(p)
            log(f"interrupted: substitute progress ({len(p.labels)}/{len(p.points)} images "
                f"labelled after round {p.trained}) kept in {progress_path}")
        raise
    store.remove()
    return SubstituteResult(substitute, p.queries, p.sizes, p.agreement, p.earlier_seconds)


def _label(oracle_labels, p: _Progress, chunk: int, store: _ProgressFile, log) -> None:
    """Asks the oracle for the labels ``p`` still lacks, ``chunk`` images per call, saving
    them as often as ``store`` asks and reporting progress once a minute."""
    todo = len(p.points) - len(p.labels)
    t0 = t_said = time.monotonic()
    start = len(p.labels)
    while len(p.labels) < len(p.points):
        batch = p.points[len(p.labels):len(p.labels) + chunk]
        got = np.asarray(oracle_labels(batch)).astype(np.int64)
        p.labels = np.concatenate([p.labels, got])
        p.queries += len(batch)
        now = time.monotonic()
        if len(p.labels) < len(p.points):
            store.save_if_due(p)
            if now - t_said >= PROGRESS_SECONDS:
                done = len(p.labels) - start
                rate = done / max(now - t0, 1e-9)
                log(f"  substitute: {len(p.labels)}/{len(p.points)} images labelled, "
                    f"{rate:.2f} img/s, ETA {(todo - done) / rate:.0f} s")
                t_said = now
    if todo:
        store.save(p)
