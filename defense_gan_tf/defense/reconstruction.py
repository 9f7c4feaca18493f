"""The reconstructions G(z*) of a whole dataset, for Defense-GAN-Rec (paper section 4:
the classifier trained on reconstructed training images), cached on disk.

Projecting a training set takes hours on a CPU. Each batch is kept as it finishes (a
:class:`~defense_gan_tf.batch_cache.ResumableBatches` folder beside the cache file), so
a run killed at any moment resumes after the last finished batch; the whole set then
becomes one ``.npz`` file and the batch folder is removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
from typing import Callable, Optional

import keras
import numpy as np

from defense_gan_tf.batch_cache import ResumableBatches, in_turn, load_batch, save_batch
from defense_gan_tf.config import ProjectionConfig
from defense_gan_tf.console import echo
from defense_gan_tf.models.saving import weights_digest


def reconstruction_cache_key(generator: keras.Model, config: ProjectionConfig,
                             seed: Optional[int]) -> str:
    """Cache key of reconstructions: generator weights, projection config and seed."""
    return json.dumps({"generator": weights_digest(generator),
                       "projection": dataclasses.asdict(config), "seed": seed},
                      sort_keys=True)


def reconstruction_cache_path(cache_dir: str, cache_key: str, images: np.ndarray) -> str:
    """Where :func:`reconstruct_dataset` caches the reconstructions of ``images``."""
    digest = hashlib.sha256(np.asarray(images, np.float32).tobytes()).hexdigest()
    key = hashlib.sha256((cache_key + digest).encode()).hexdigest()[:24]
    return os.path.join(cache_dir, f"recs_{key}.npz")


def batches_folder(path: str) -> str:
    """The folder where :func:`reconstruct_dataset` keeps the finished batches of the
    cache ``path`` (:func:`reconstruction_cache_path`) until all are done."""
    return path[:-len(".npz")] + ".batches"


def _batch_name(start: int, batch_size: int) -> str:
    return f"b{batch_size}_{start:07d}"


_BATCH_FILE = re.compile(r"b(\d+)_(\d+)\.npz")

BATCH_SIZE = 64  # images per projection call unless the caller says otherwise


def kept_reconstructions(path: str, num_images: int, batch_size: int = BATCH_SIZE) -> int:
    """How many reconstructions of the cache ``path`` (of ``num_images`` images) an
    interrupted :func:`reconstruct_dataset` with ``batch_size`` kept, counted from the
    batch files' names."""
    folder = batches_folder(path)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    kept = 0
    for m in filter(None, map(_BATCH_FILE.fullmatch, names)):
        size, start = int(m.group(1)), int(m.group(2))
        if size == batch_size:
            kept += max(0, min(size, num_images - start))
    return kept


def reconstruct_dataset(project_fn: Callable, images: np.ndarray, *, cache_key: str,
                        cache_dir: Optional[str] = None, batch_size: int = BATCH_SIZE,
                        log: Optional[Callable[[str], None]] = None,
                        claim_timeout: Optional[float] = None) -> np.ndarray:
    """G(z*) of every image, computed in batches and cached as ``.npz``.

    Every finished batch is kept on disk at once, so an interrupted call (an exception,
    Ctrl-C, SIGTERM, a kill) loses only the batch it was computing; the next call with
    the same key, images and batch size reads the kept batches back and continues.
    Batches start at the same offsets either way, so a resumed run gives the same
    reconstructions as an uninterrupted one when ``project_fn`` is deterministic per
    batch. Batches kept with another batch size are not used.

    Args:
      project_fn: images -> reconstructions (e.g. ``DefendedClassifier.reconstruct``).
      images: [N, H, W, C].
      cache_key: identifies the generator and projection config (see
        :func:`reconstruction_cache_key`); the images' digest is added to it.
      cache_dir: folder of the cache; None disables caching (and resuming).
      batch_size: images per projection call.
      log: progress output.
      claim_timeout: workers share ``cache_dir`` (seconds after which a dead worker's
        claim is taken over): each claims a batch before projecting it and waits at the
        end for the batches others hold.

    Returns:
      float32 reconstructions [N, H, W, C].
    """
    log = log or echo
    images = np.asarray(images, np.float32)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    path = reconstruction_cache_path(cache_dir, cache_key, images) if cache_dir else None
    cached = load_batch(path, required=("reconstructions",)) if path else None
    if cached is not None:
        recs = cached["reconstructions"]
        if recs.shape == images.shape:
            log(f"loaded {len(recs)} cached reconstructions from {path}")
            return recs
        log(f"ignoring cache {path}: shape {recs.shape} != {images.shape}")
    folder = batches_folder(path) if path else None
    batches = ResumableBatches(folder, claim_timeout=claim_timeout)
    kept = kept_reconstructions(path, len(images), batch_size) if path else 0
    if kept:
        log(f"resuming: {kept}/{len(images)} reconstructions kept in {folder}")
    starts = range(0, len(images), batch_size)
    count = {"done": 0, "projected": 0}
    t0 = time.monotonic()

    def fetch(b: int, wait: bool) -> Optional[np.ndarray]:
        x = images[starts[b]:starts[b] + batch_size]
        before = batches.computed
        recs = _batch(batches, project_fn, x, _batch_name(starts[b], batch_size), log, wait)
        if recs is not None:
            count["done"] += len(x)
        if batches.computed > before:
            count["projected"] += len(x)
            rate = count["projected"] / max(time.monotonic() - t0, 1e-9)
            left = len(images) - count["done"]
            log(f"reconstructing {count['done']}/{len(images)}  {rate:.2f} img/s  "
                f"ETA {left / max(rate, 1e-9):.0f} s")
        return recs

    try:
        # Other workers may hold batches: the free ones first, then wait for the rest.
        out = in_turn(range(len(starts)), fetch)
    except BaseException:
        if folder and batches.computed:
            n = kept_reconstructions(path, len(images), batch_size)
            log(f"interrupted: {n}/{len(images)} reconstructions kept in {folder}; the "
                "same call resumes from there")
        raise
    recs = np.concatenate(out) if out else np.zeros_like(images)
    if path:
        save_batch(path, reconstructions=recs)
        shutil.rmtree(folder, ignore_errors=True)
    return recs


def _batch(batches: ResumableBatches, project_fn: Callable, x: np.ndarray, name: str,
           log: Callable[[str], None], wait: bool = True) -> Optional[np.ndarray]:
    """One batch's reconstructions, kept ones if they fit ``x``, else projected now; None
    when another worker holds it and not ``wait``."""
    compute = lambda: {"reconstructions": np.asarray(project_fn(x), np.float32)}
    saved = batches.get(name, compute, required=("reconstructions",), wait=wait)
    if saved is None:
        return None
    recs = saved["reconstructions"]
    if recs.shape != x.shape:
        log(f"ignoring kept batch {name}: shape {recs.shape} != {x.shape}; projecting "
            "it again")
        recs = compute()["reconstructions"]
        save_batch(os.path.join(batches.folder, f"{name}.npz"), reconstructions=recs)
    return recs
