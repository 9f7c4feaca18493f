"""The run folder of a GAN training: one process at a time, and a resume only with the
config it was trained with."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil

from defense_gan_tf import jsonio
from defense_gan_tf.config import Config
from defense_gan_tf.training.run_files import (AVERAGE_FILE, CRITIC_FILE, GENERATOR_FILE,
                                               QUALITY_FILE)

# Config keys that may change between a run and its resumption. The precision may too:
# weights and Adam state are float32 in both, so a run can move to the precision a
# machine computes fastest (recorded in progress.json, see gan_trainer._restore).
RESUMABLE_KEYS = frozenset({"gan.train_iters", "gan.checkpoint_every",
                            "gan.sample_every", "gan.log_every", "gan.precision"})
# Sections that do not affect GAN training.
_IGNORED_SECTIONS = ("projection", "classifier", "attack")


class ConfigMismatchError(ValueError):
    """The output folder was trained with a different config."""


class OutputDirBusyError(RuntimeError):
    """Another process is training into the same output folder."""


@contextlib.contextmanager
def exclusive(output_dir: str):
    """Holds an exclusive lock on ``output_dir`` (released when the process dies)."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, ".lock"), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputDirBusyError(
                f"another process is training into {output_dir}; wait for it to stop "
                "or use another --output_dir") from None
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: Config, current: Config) -> list[str]:
    """Keys (dotted) whose values differ in ways that forbid resuming."""
    a, b = _flatten(saved.to_dict()), _flatten(current.to_dict())
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in RESUMABLE_KEYS or key.split(".")[0] in _IGNORED_SECTIONS:
            continue
        if a.get(key) != b.get(key):
            diffs.append(f"{key}: saved {a.get(key)!r}, now {b.get(key)!r}")
    return diffs


def has_training_state(output_dir: str) -> bool:
    """Whether a run folder holds anything trained (a checkpoint or progress record).

    A config.json alone is what a start that failed before training leaves; it
    must not block a rerun with other settings.
    """
    checkpoints = os.path.join(output_dir, "checkpoints")
    return os.path.exists(os.path.join(output_dir, "progress.json")) or (
        os.path.isdir(checkpoints) and bool(os.listdir(checkpoints)))


def check_resumable(output_dir: str, config: Config) -> None:
    """Refuses (``ConfigMismatchError``) a folder holding a run trained with another
    config than ``config`` (only the :data:`RESUMABLE_KEYS` may differ); reads only, and
    imports no TensorFlow, so a binary can check before any work."""
    config_path = os.path.join(output_dir, "config.json")
    if not (os.path.exists(config_path) and has_training_state(output_dir)):
        return
    with open(config_path) as f:
        try:
            saved = Config.from_json(f.read())
        except ValueError as e:
            raise ConfigMismatchError(
                f"{config_path} cannot be read ({e}); pass --overwrite to start afresh"
            ) from None
    diffs = config_differences(saved, config)
    if diffs:
        raise ConfigMismatchError(
            f"{output_dir} was trained with a different config; refusing to resume "
            "(pass --overwrite to start afresh, or use another --output_dir):\n  "
            + "\n  ".join(diffs))


def prepare_output_dir(output_dir: str, config: Config, overwrite: bool) -> None:
    os.makedirs(output_dir, exist_ok=True)
    if overwrite:
        for sub in ("checkpoints", "samples", "tensorboard"):
            shutil.rmtree(os.path.join(output_dir, sub), ignore_errors=True)
        for name in ("progress.json", GENERATOR_FILE, AVERAGE_FILE, CRITIC_FILE,
                     QUALITY_FILE):
            if os.path.exists(os.path.join(output_dir, name)):
                os.remove(os.path.join(output_dir, name))
    else:
        check_resumable(output_dir, config)
    jsonio.write_json(os.path.join(output_dir, "config.json"), config.to_dict())
