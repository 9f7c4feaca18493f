"""Training-state checkpoints: ``tf.train.CheckpointManager`` with a safe restore.

Checkpoints hold the training state (weights, optimizer slots, iteration);
the serving export is a separate thing (``generator.keras`` / SavedModel).
A folder that has checkpoints but none that can be read is an error, never a
silent fresh start; a corrupt newest checkpoint falls back to the one before,
with a warning.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import tensorflow as tf

from defense_gan_tf.console import echo


class CheckpointError(RuntimeError):
    """No checkpoint in a folder could be restored."""


class Checkpointer:
    """Saves and restores a ``tf.train.Checkpoint`` in ``directory``.

    Args:
      directory: folder of the checkpoint files.
      max_to_keep: how many recent checkpoints to keep.
      log: callable for warnings (default: print to stdout).
      optional: names of ``objects`` that a checkpoint may lack (state added after
        older checkpoints were written); :attr:`missing` lists those the restored
        checkpoint lacked, for the caller to initialise.
      **objects: trackables to save (models, optimizers, variables).
    """

    def __init__(self, directory: str, *, max_to_keep: int = 3,
                 log: Optional[Callable[[str], None]] = None, optional=(), **objects):
        self.directory = directory
        self.checkpoint = tf.train.Checkpoint(**objects)
        self._objects = objects
        self._optional = tuple(optional)
        unknown = set(self._optional) - set(objects)
        if unknown:
            raise ValueError(f"optional names no saved object: {sorted(unknown)}")
        # Optional objects the last restored checkpoint did not hold (older checkpoints).
        self.missing: tuple = ()
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory,
                                                  max_to_keep=max_to_keep)
        self._log = log or echo

    def has_checkpoint_files(self) -> bool:
        """Whether the folder holds anything that looks like a checkpoint."""
        if not os.path.isdir(self.directory):
            return False
        return any(name.startswith("ckpt-") or name == "checkpoint"
                   for name in os.listdir(self.directory))

    def restore_latest(self) -> Optional[str]:
        """Restores the newest readable checkpoint.

        Returns:
          The path restored, or None if the folder holds no checkpoint at all.

        Raises:
          CheckpointError: checkpoint files exist but none could be restored.
        """
        candidates = list(reversed(self.manager.checkpoints))
        latest = tf.train.latest_checkpoint(self.directory)
        if latest and latest not in candidates:
            candidates.insert(0, latest)
        if not candidates:
            if self.has_checkpoint_files():
                raise CheckpointError(
                    f"{self.directory} holds checkpoint files but no readable "
                    "checkpoint index; refusing to start afresh over them (move the "
                    "folder away or pass --overwrite)")
            return None
        errors = []
        for path in candidates:
            try:
                self.missing = self._missing_optional(path)
                checkpoint = self.checkpoint if not self.missing else tf.train.Checkpoint(
                    **{k: v for k, v in self._objects.items() if k not in self.missing})
                checkpoint.restore(path).assert_existing_objects_matched()
                if errors:
                    self._log(f"WARNING: fell back to checkpoint {path} after: "
                              + "; ".join(errors))
                return path
            except (tf.errors.OpError, ValueError, AssertionError, IndexError,
                    KeyError, OSError) as e:
                first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
                errors.append(f"{path}: {type(e).__name__}: {first_line[:200]}")
        raise CheckpointError(
            f"no checkpoint in {self.directory} could be restored:\n  "
            + "\n  ".join(errors))

    def _missing_optional(self, path: str) -> tuple:
        if not self._optional:
            return ()
        names = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(path)}
        return tuple(k for k in self._optional if k not in names)

    def save(self, iteration: int) -> str:
        """Writes a checkpoint numbered by ``iteration``."""
        return self.manager.save(checkpoint_number=int(iteration))
