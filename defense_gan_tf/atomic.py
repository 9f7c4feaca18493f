"""Files written whole or not at all, safe for several processes sharing a folder.

Every file the package writes for later reading (models, caches, records, manifests)
goes through :func:`replacing`: the content is written to a temporary file with a
name no other process uses (process id and a random part), in the destination's own
folder, and renamed over the destination only once complete. A kill leaves either the
old file or the new one, never a truncated one; two processes saving the same item
each rename a complete file, and the last rename wins.

This module imports nothing else of the package, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import uuid

# Temporary files carry this infix (and keep the destination's extension, which
# np.savez and keras.Model.save require).
TMP_MARK = ".tmp-"


def temporary_name(path: str) -> str:
    """A fresh temporary name beside ``path`` that keeps its extension."""
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = _split_extension(name)
    return os.path.join(folder, f".{stem}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{ext}")


def _split_extension(name: str) -> tuple[str, str]:
    for ext in (".weights.h5", ".partial.npz", ".progress.npz"):  # two-part suffixes whole
        if name.endswith(ext):
            return name[:-len(ext)], ext
    stem, ext = os.path.splitext(name)
    return stem, ext


@contextlib.contextmanager
def replacing(path: str):
    """Yields a temporary path to write; on success it replaces ``path`` atomically.

    The folder is created. On an exception the temporary file is removed and
    ``path`` is left as it was.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            try:
                os.remove(tmp)
            except OSError:
                pass


def write_text(path: str, text: str) -> str:
    """Writes ``text`` to ``path`` atomically; returns ``path``."""
    with replacing(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    return path


def save_model(model, path: str) -> str:
    """``model.save(path)`` atomically (a killed save never leaves a truncated file)."""
    with replacing(path) as tmp:
        model.save(tmp)
    return path
