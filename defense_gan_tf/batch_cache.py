"""One finished batch of a long evaluation on disk, so an interrupted run resumes.

Shared by the generator probe (``training_curve``), the adaptive attacks, the black-box
substitute cache and the Defense-GAN-Rec reconstructions: a batch is
a set of named arrays in one ``.npz`` file, written whole or not at all.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np


def save_batch(path: str, **arrays) -> None:
    """Writes ``arrays`` to ``path`` atomically (a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_batch(path: str, keys: Optional[tuple] = None) -> Optional[dict]:
    """The arrays saved at ``path`` (only those of ``keys`` present, when given: the others
    are not read), or None when there is no readable batch there (an unreadable one is
    computed again)."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files if keys is None or k in keys}
    except (OSError, ValueError, EOFError):
        return None
