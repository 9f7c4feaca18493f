"""What every evaluation workflow shares: its run spec, its typed results, its record.

A :class:`RunSpec` says which data, which classifier and how it is defended; the
white-box and black-box runs nest one and add their own settings. Workflows
return typed results with ``to_json()``, and :func:`write_run_record` is the one
place that writes a run's JSON (settings, result, versions, command) and
rebuilds the results table.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
from typing import Any, Optional

import numpy as np

from defense_gan_tf import jsonio
from defense_gan_tf.config import (CLASSIFIER_MODELS, DEFENSES, AttackConfig,
                                   SPLIT_SIZES, ProjectionConfig, canonical_dataset_name,
                                   preset)
from defense_gan_tf.errors import ConfigError
from defense_gan_tf.records import report


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """The data, classifier and defense of one evaluation run (flags of the binaries).

    Attributes:
      dataset: dataset name (aliases accepted, stored canonical).
      model: classifier architecture A-F (the black box in black-box runs).
      defense_type: ``none``, ``defense_gan`` or ``adv_tr``.
      train_on_recs: Defense-GAN-Rec (classifier trained on reconstructions).
      attack: the attack's settings (FGSM epsilon for black-box runs; also the
        adversarial-training epsilon).
      projection: the Defense-GAN projection (L, R, learning rate...).
      num_tests, num_train: test images attacked; training images for the classifier.
      epochs: classifier training epochs.
      seed: seeds classifier training, attacks and projections.
      batch_size: images per attack or query batch.
      generator: generator ``.keras`` file (Defense-GAN and Rec classifiers).
      classifier: a trained ``.keras`` classifier to use as it is.
      magnet: a MagNet folder (``bin/train_magnet.py``) for ``defense_type="magnet"``.
    """

    dataset: str = "mnist"
    model: str = "A"
    defense_type: str = "none"
    train_on_recs: bool = False
    attack: AttackConfig = dataclasses.field(default_factory=AttackConfig)
    projection: ProjectionConfig = dataclasses.field(default_factory=ProjectionConfig)
    num_tests: int = 100
    num_train: int = 50_000
    epochs: int = 10
    seed: int = 0
    batch_size: int = 20
    generator: Optional[str] = None
    classifier: Optional[str] = None
    magnet: Optional[str] = None

    def __post_init__(self):
        object.__setattr__(self, "dataset", canonical_dataset_name(self.dataset))
        if self.defense_type == "magnet" and not self.magnet:
            raise ConfigError("magnet", "magnet: a MagNet folder is needed for defense_type "
                                        "magnet")
        if self.model not in CLASSIFIER_MODELS:
            raise ConfigError(
                "model",
                f"model must be one of {list(CLASSIFIER_MODELS)}, got "
                f"{self.model!r}")
        if self.defense_type not in DEFENSES:
            raise ConfigError(
                "defense_type",
                f"defense_type must be one of {list(DEFENSES)}, got "
                f"{self.defense_type!r}")
        if (self.defense_type == "defense_gan" or self.train_on_recs) and not self.generator:
            raise ConfigError("generator", "a generator is needed for defense_gan / "
                                           "train_on_recs")
        for name in ("num_tests", "num_train", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"{name} must be >= 1, got {getattr(self, name)}")
        self.check_split_sizes()
        lo, hi = self.pixel_range
        if not 0 <= self.attack.eps <= hi - lo:
            raise ConfigError(
                "attack.eps",
                f"attack.eps must be in [0, {hi - lo}] (the data range), got "
                f"{self.attack.eps}")

    def check_split_sizes(self, holdout: int = 0) -> None:
        """Refuses ``num_train``, and ``num_tests`` after the first ``holdout`` test
        images, beyond the dataset's splits (:data:`~defense_gan_tf.config.SPLIT_SIZES`;
        the loaders check the data they load again)."""
        sizes = SPLIT_SIZES.get(self.dataset)
        if sizes is None:
            return
        if self.num_tests + holdout > sizes["test"]:
            raise ConfigError(
                ("num_tests", "holdout") if holdout else "num_tests",
                f"num_tests={self.num_tests} asks for more images than the {sizes['test']} "
                "test images" + (f" after the first {holdout} (holdout)" if holdout else ""))
        if self.num_train > sizes["train"]:
            raise ConfigError("num_train", f"num_train={self.num_train} asks for more images "
                                           f"than the {sizes['train']} training images")

    @property
    def pixel_range(self) -> tuple[float, float]:
        """The data range of the dataset (its generator's output range)."""
        return preset(self.dataset).model.pixel_range

    @property
    def classifier_mode(self) -> str:
        """``adv_tr``, ``recs`` (Defense-GAN-Rec) or ``orig``: how the classifier is trained."""
        if self.defense_type == "adv_tr":
            return "adv_tr"
        return "recs" if self.train_on_recs else "orig"

    def classifier_path(self, classifier_dir: str, extra: str = "") -> str:
        """Where the classifier this run trains is cached in ``classifier_dir`` (``extra``:
        the reconstruction key of a Defense-GAN-Rec classifier)."""
        return classifier_cache_path(classifier_dir, dataset=self.dataset, model=self.model,
                                     mode=self.classifier_mode, epochs=self.epochs,
                                     num_train=self.num_train, seed=self.seed,
                                     eps=self.attack.eps, extra=extra)


def classifier_cache_path(classifier_dir: str, *, dataset: str, model: str, mode: str,
                          epochs: int, num_train: int, seed: int, eps: Optional[float],
                          extra: str = "") -> str:
    """Where a trained classifier of these settings is cached."""
    key = json.dumps({"dataset": dataset, "model": model, "mode": mode, "epochs": epochs,
                      "num_train": num_train, "seed": seed,
                      "eps": eps if mode == "adv_tr" else None, "extra": extra},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return os.path.join(classifier_dir, f"{dataset}_{model}_{mode}_{digest}.keras")


def flat_settings(run) -> dict:
    """A run's settings as one flat dict: the spec's fields beside the run's own (plain
    values), as the JSON records have them."""
    own = {f.name: getattr(run, f.name) for f in dataclasses.fields(run) if f.name != "spec"}
    return {**dataclasses.asdict(run.spec), **own}


@dataclasses.dataclass(frozen=True)
class AttackResult:
    """What attacking a model on a test set measured (:func:`evaluate_whitebox`).

    Attributes:
      clean, adversarial: accuracy entries (accuracy, correct, n, ci95).
      gradient_norm_mean: mean L2 norm of the loss gradient reaching the input on
        clean images, over the finite norms (None if none was finite);
        gradient_norm_zero_fraction: the share of exact zeros; gradient_norm_images: on
        how many images it was measured; gradient_norm_median: their median (NaN
        counted as Inf; None when not finite); gradient_norm_nonfinite: how many norms
        overflowed to Inf or were NaN.
      linf_mean, l2_mean: mean distortions.
      seconds, images_per_second: cost.
      detection: AUC and the raw reconstruction errors, for defended models.
      magnet: for MagNet, rejection rates of clean and adversarial images and the
        accuracy that counts rejected adversarial inputs as defended.
      adversarial_examples: the first batch of adversarial images (for figures; not
        part of the JSON).
    """

    clean: dict
    adversarial: dict
    gradient_norm_mean: Optional[float]
    gradient_norm_zero_fraction: float
    gradient_norm_images: int
    linf_mean: float
    l2_mean: float
    seconds: float
    images_per_second: float
    gradient_norm_median: Optional[float] = None
    gradient_norm_nonfinite: int = 0
    detection: Optional[dict] = None
    magnet: Optional[dict] = None
    adversarial_examples: Optional[np.ndarray] = dataclasses.field(default=None, repr=False,
                                                                   compare=False)

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "adversarial_examples"}
        for name in ("detection", "magnet"):
            if out[name] is None:
                del out[name]
        return out


@dataclasses.dataclass(frozen=True)
class BlackboxResult:
    """What a black-box (substitute) attack measured (:func:`run_blackbox`).

    ``substitute_seconds`` is what training the substitute took, also when this run
    reused one trained by an earlier run (``substitute_reused``); ``seconds`` is this
    run's own time.
    """

    clean: dict
    adversarial: dict
    substitute_accuracy: float
    substitute_agreement: list
    substitute_set_sizes: list
    oracle_queries: int
    linf_mean: float
    substitute_seconds: float
    seconds: float
    magnet: Optional[dict] = None
    substitute_reused: bool = False  # trained by an earlier run differing only in epsilon

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        if out["magnet"] is None:
            del out["magnet"]
        return out


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """A workflow run: its record's (or table's) path, the rebuilt table and the result
    (path and table are None where a stopped run has none)."""

    json_path: Optional[str]
    table: Optional[str]
    result: Any

    def to_json(self) -> dict:
        return {"json": self.json_path, "result": self.result.to_json()}


def write_run_record(results_dir: str, kind: str, name: str, settings: dict, result,
                     command: str, *, extra: Optional[dict] = None,
                     table: bool = True) -> RunOutcome:
    """Writes ``<kind>_<name>_<settings id>.json`` (``extra`` fields beside the usual
    ones) and, with ``table``, rebuilds ``<kind>_table.md`` (a workflow whose table is
    its own run's, the adaptive one, writes it itself).

    The file name ends with a digest of the full settings, so runs that differ in
    any setting are all kept; the same settings replace their own earlier record.
    """
    run_id = report.settings_id(settings)
    payload = {
        "kind": kind,
        "settings": settings,
        "run_id": run_id,
        "result": result.to_json(),
        "versions": report.versions(),
        "command": command,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        **(extra or {}),
    }
    path = jsonio.write_json(os.path.join(results_dir, f"{kind}_{name}_{run_id}.json"),
                             payload)
    if not table:
        return RunOutcome(json_path=path, table=None, result=result)
    with open(report.update_table(results_dir, kind)) as f:
        return RunOutcome(json_path=path, table=f.read(), result=result)
