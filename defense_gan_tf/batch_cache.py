"""One finished batch of a long evaluation on disk, so an interrupted run resumes.

Shared by the generator probe (``training_curve``), the adaptive attacks, the black-box
substitute cache and the Defense-GAN-Rec reconstructions: a batch is a set of named
arrays in one ``.npz`` file, written whole or not at all (``atomic.replacing``: a
temporary file of its own per writer, then a rename), so a kill never leaves a
truncated batch and two processes saving the same batch cannot corrupt it. A file that
cannot be read all the same (truncated by other means, not a zip file, lacking an
array) is treated as missing: the batch is computed again, with a one-line warning
naming the file.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional

import numpy as np

from defense_gan_tf.atomic import replacing
from defense_gan_tf.console import echo


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
