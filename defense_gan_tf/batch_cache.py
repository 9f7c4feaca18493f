"""One finished batch of a long evaluation on disk, so an interrupted run resumes;
:class:`ResumableBatches`, the loop over such batches with a deadline and a stop request.

Shared by the generator probe (``training_curve``), the white-box and adaptive attacks
(the adaptive search memo too), the black-box substitute cache and the Defense-GAN-Rec
reconstructions, and, with claims, by workers sharing a folder: a batch is a set of named
arrays in one ``.npz`` file, written whole or not at all (``atomic.replacing``: a
temporary file of its own per writer, then a rename), so a kill never leaves a
truncated batch and two processes saving the same batch cannot corrupt it. A file that
cannot be read all the same (truncated by other means, not a zip file, lacking an
array) is treated as missing: the batch is computed again, with a one-line warning
naming the file.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from defense_gan_tf.atomic import replacing
from defense_gan_tf.console import echo
from defense_gan_tf.errors import Interrupted
from defense_gan_tf.sharding import POLL_SECONDS, Claims


def save_batch(path: str, **arrays) -> None:
    """Writes ``arrays`` to ``path`` atomically (a temporary file, then a rename)."""
    with replacing(path) as tmp:
        np.savez(tmp, **arrays)


def load_batch(path: str, keys: Optional[tuple] = None,
               required: Iterable[str] = ()) -> Optional[dict]:
    """The arrays saved at ``path``, or None when there is no usable batch there.

    Args:
      path: the ``.npz`` file.
      keys: read only these arrays (those present); the others are not read.
      required: arrays the batch must hold; a file without one of them is unusable.

    An unreadable or incomplete file gives None (it is computed again) and a warning.
    """
    if not os.path.isfile(path):
        return None
    required = tuple(required)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in required if k not in f.files]
            if missing:
                echo(f"warning: ignoring cache file {path}: it lacks {missing}; computing "
                     "it again")
                return None
            return {k: f[k] for k in f.files if keys is None or k in keys}
    except Exception as e:  # noqa: BLE001 - zipfile, zlib, OSError, ValueError, ...
        echo(f"warning: ignoring unreadable cache file {path} ({type(e).__name__}: "
             f"{str(e)[:120]}); computing it again")
        return None


class OutOfTime(Interrupted):
    """A :class:`ResumableBatches` deadline passed before a batch still to compute."""


class ResumableBatches:
    """The batches of one long loop that resumes: a batch's arrays are kept in ``folder``
    once computed and read back by a later call (none kept without a folder); a batch
    still to compute starts only before ``deadline`` (a ``time.monotonic()`` value:
    :class:`OutOfTime` otherwise) and while ``stop()`` is false (:class:`Interrupted`
    otherwise). Counts what it computed and what it read back.

    With ``claim_timeout`` (seconds; several workers sharing ``folder``) a batch is
    claimed (:class:`~defense_gan_tf.sharding.Claims` in ``folder/.claims``) before it is
    computed; one another worker holds is waited for (``folder`` polled every
    ``poll_seconds``) or, with ``wait=False``, left: :meth:`get` returns None and the
    caller comes back to it (:func:`in_turn`)."""

    def __init__(self, folder: Optional[str], *, deadline: Optional[float] = None,
                 stop: Optional[Callable[[], bool]] = None,
                 claim_timeout: Optional[float] = None,
                 poll_seconds: Optional[float] = None):
        self.folder, self.deadline, self.stop = folder, deadline, stop
        self.claims = (Claims(os.path.join(folder, ".claims"), timeout=claim_timeout)
                       if folder and claim_timeout is not None else None)
        self.poll_seconds = poll_seconds
        self.computed = self.loaded = 0

    def get(self, name: str, compute: Callable[[], dict], *,
            required: Iterable[str] = (), wait: bool = True) -> Optional[dict]:
        """Batch ``name``'s arrays: read back when an earlier call (or another worker)
        kept them (and they hold ``required``), else ``compute()`` (a dict of arrays),
        kept, returned; None when another worker holds it and not ``wait``."""
        path = os.path.join(self.folder, f"{name}.npz") if self.folder else None
        required = tuple(required)
        while True:
            saved = load_batch(path, required=required) if path else None
            if saved is not None:
                self.loaded += 1
                return saved
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise OutOfTime(f"time budget spent before batch {name}")
            if self.stop is not None and self.stop():
                raise Interrupted(f"stopped on request before batch {name}")
            claim = self.claims.claim(name) if self.claims is not None else None
            if claim is not None or self.claims is None:
                break
            if not wait:
                return None
            time.sleep(POLL_SECONDS if self.poll_seconds is None else self.poll_seconds)
        try:
            saved = load_batch(path, required=required) if claim is not None else None
            if saved is not None:  # kept by another worker just before the claim
                self.loaded += 1
                return saved
            arrays = compute()
            if path:
                save_batch(path, **arrays)
            self.computed += 1
            return arrays
        finally:
            if claim is not None:
                claim.release()


def in_turn(order: Sequence[int], fetch: Callable[[int, bool], Optional[object]]) -> list:
    """``fetch(i, wait)`` of every item, listed by index: first in ``order`` without
    waiting (None: another worker holds it), then waiting for those left."""
    out = [None] * len(order)
    for wait in (False, True):
        for i in order:
            if out[i] is None:
                out[i] = fetch(i, wait)
    return out
