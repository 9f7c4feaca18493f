"""Warm starts: a run continues from a shipped package's weights when its run folder
(with the optimizer state) is lost."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

from defense_gan_tf.config import Config
from defense_gan_tf.training.averaging import WeightAverage
from defense_gan_tf.training.run_files import (AVERAGE_FILE, CRITIC_FILE, GENERATOR_FILE,
                                               QUALITY_FILE)
from defense_gan_tf.training.wgan_gp import WGANGP


class WarmStartError(ValueError):
    """The warm-start weights do not fit the run's config."""


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """Weights a fresh run starts from when the run folder (with its optimizer state) is lost.

    The run continues at ``iteration`` (data order and random draws follow the
    iteration number, as on an exact resume), with fresh Adam moments; the
    warm start is recorded in ``progress.json`` and so in the package manifest.

    Attributes:
      generator_path, critic_path: float32 ``.keras`` models of the run's architecture;
        ``critic_path`` None starts the critic from fresh initial weights (a package
        shipped without its critic).
      iteration: generator iterations the weights were trained for.
      train_seconds, eval_seconds: training and evaluation time spent before.
      warm_starts: earlier warm starts of the same lineage.
      quality_path: the earlier ``quality.jsonl``, continued by the new run.
      source: where the weights came from (recorded).
      precision: the training precision of the package's last run, if recorded.
      average_path: the package's averaged generator, if it has one (otherwise the
        average starts from the generator's weights).
      critic_warmup: with a new critic (``critic_path`` None), rounds of critic-only
        updates against the package's generator before training goes on.
      train_commands: the package's recorded training commands, which begin the new
        run's ``runs`` list (training/run_history.py).
    """

    generator_path: str
    critic_path: Optional[str]
    iteration: int
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    warm_starts: tuple = ()
    quality_path: Optional[str] = None
    source: str = ""
    precision: Optional[str] = None
    average_path: Optional[str] = None
    critic_warmup: int = 0
    train_commands: tuple = ()


def load_warm_start(package_dir: str, fresh_critic: bool = False,
                    critic_warmup: int = 0) -> WarmStart:
    """A :class:`WarmStart` from a packaged generator folder (``pretrained/<dataset>``).

    Args:
      package_dir: the package folder.
      fresh_critic: start the critic from fresh initial weights instead of the
        package's ``critic.keras`` (which then need not exist): the way to continue a
        package that was shipped without its critic.
      critic_warmup: with ``fresh_critic``, rounds of critic-only updates (critic_steps
        each) against the package's generator before training goes on.

    Raises:
      ValueError: ``critic_warmup`` is negative.
      FileNotFoundError: the folder lacks manifest.json, the trained generator
        (generator.keras, or the manifest's ``raw_file``) or (without ``fresh_critic``)
        critic.keras.
      ValueError: the manifest cannot be read.
    """
    if critic_warmup < 0:
        raise ValueError(f"critic_warmup must be >= 0, got {critic_warmup}")
    paths = {name: os.path.join(package_dir, name) for name in ("manifest.json", CRITIC_FILE)}
    if not os.path.isfile(paths["manifest.json"]):
        raise FileNotFoundError(f"warm start folder {package_dir} has no manifest.json")
    try:
        with open(paths["manifest.json"]) as f:
            manifest = json.load(f)
        iteration = int(manifest["iterations"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{paths['manifest.json']} cannot be read: {e}") from None
    # The trained (raw) generator: generator.keras, unless the averaged one is shipped
    # there and the raw one beside it (generators/choice.py).
    raw = manifest.get("raw_file") or manifest.get("file") or GENERATOR_FILE
    paths[raw] = os.path.join(package_dir, raw)
    for name in (raw,) + (() if fresh_critic else (CRITIC_FILE,)):
        if not os.path.isfile(paths[name]):
            # A package made without its critic says why (package_generator's critic_note).
            why = manifest.get("critic_note") if name == CRITIC_FILE else None
            raise FileNotFoundError(
                f"warm start folder {package_dir} has no {name}"
                + (f" ({why}); continue from the run folder instead, or start a new "
                   "critic with --warm_start_fresh_critic" if why else ""))
    quality = os.path.join(package_dir, QUALITY_FILE)
    average = os.path.join(package_dir, manifest.get("average_file") or AVERAGE_FILE)
    return WarmStart(
        generator_path=paths[raw],
        critic_path=None if fresh_critic else paths[CRITIC_FILE],
        iteration=iteration,
        train_seconds=float(manifest.get("train_wall_seconds", 0.0)),
        eval_seconds=float(manifest.get("eval_wall_seconds", 0.0)),
        warm_starts=tuple(manifest.get("warm_starts", ())),
        quality_path=quality if os.path.isfile(quality) else None,
        source=package_dir, precision=manifest.get("precision"),
        average_path=average if os.path.isfile(average) else None,
        critic_warmup=critic_warmup if fresh_critic else 0,
        train_commands=tuple(str(c) for c in manifest.get("train_commands") or ()))


def apply_warm_start(warm: WarmStart, model: WGANGP, config: Config,
                      average: Optional[WeightAverage]) -> None:
    import keras as keras_lib

    pairs = [(model.generator, warm.generator_path)]
    if warm.critic_path is not None:  # otherwise the critic keeps its initial weights
        pairs.append((model.critic, warm.critic_path))
    if average is not None and warm.average_path:
        pairs.append((average.target, warm.average_path))
    for target, path in pairs:
        try:
            source = keras_lib.models.load_model(path)
            target.set_weights(source.get_weights())
        except (ValueError, OSError) as e:
            raise WarmStartError(f"warm start: {path} does not fit the config's "
                             f"{target.name} ({type(e).__name__}: {str(e)[:200]})") from None
    model.g_optimizer.iterations.assign(warm.iteration)
    model.d_optimizer.iterations.assign(warm.iteration * config.gan.critic_steps)
