"""The settings of the evaluation workflows, importable without TensorFlow.

One frozen dataclass per binary (``bin/whitebox.py``, ``bin/blackbox.py``,
``bin/adaptive.py``), each nesting a :class:`~defense_gan_tf.records.runs.RunSpec`.
Their checks run when a binary parses its flags, before TensorFlow loads, so a bad
flag fails in well under a second; the workflows that run them live in
``whitebox_run``, ``blackbox_run`` and ``adaptive``, which re-export these names.
"""

from __future__ import annotations

import dataclasses
import math
import os

from defense_gan_tf.config import (ADAPTIVE_ATTACKS, CLASSIFIER_MODELS, GRADIENT_MODES,
                                   check_finite_fields)
from defense_gan_tf.errors import ConfigError
from defense_gan_tf.records.runs import RunSpec


@dataclasses.dataclass(frozen=True)
class WhiteboxRun:
    """Settings of one white-box run (the flags of ``bin/whitebox.py``).

    Attributes:
      spec: data, classifier, defense, attack and projection (:class:`RunSpec`).
      gradient: what the attacker's gradient through the projection is: ``full``
        (through the unrolled steps; the paper's white box), ``bpda`` or ``none``.
      same_init: white box revisited: the attacker knows the projection's starts.
    """

    spec: RunSpec = dataclasses.field(default_factory=RunSpec)
    gradient: str = "full"
    same_init: bool = False

    def __post_init__(self):
        if self.gradient not in GRADIENT_MODES:
            raise ConfigError(
                "gradient",
                f"gradient must be one of {list(GRADIENT_MODES)}, got "
                f"{self.gradient!r}")

    def name(self) -> str:
        """A readable file-name stem (the settings digest is appended when writing)."""
        s, a = self.spec, self.spec.attack
        parts = [s.dataset, a.attack_type, f"eps{a.eps}", s.model, s.defense_type]
        if s.defense_type == "defense_gan":
            parts += ["rec" if s.train_on_recs else "orig", f"L{s.projection.iterations}",
                      f"R{s.projection.restarts}", self.gradient]
            if self.same_init:
                parts.append("sameinit")
        if s.classifier:
            parts.append("clf-" + os.path.splitext(os.path.basename(s.classifier))[0])
        parts += [f"n{s.num_tests}", f"s{s.seed}"]
        return "_".join(str(p) for p in parts)


@dataclasses.dataclass(frozen=True)
class BlackboxRun:
    """Settings of one black-box run (the flags of ``bin/blackbox.py``).

    Attributes:
      spec: the black box (``spec.model``, its defense and training), the FGSM
        epsilon (``spec.attack.eps``), test images and projection (:class:`RunSpec`).
      substitute_model: the substitute's architecture.
      holdout: test images held out to seed the substitute.
      data_aug: substitute training rounds (augmentations + 1).
      lmbda: Jacobian augmentation step; its sign flips every ``flip_every`` rounds.
      epochs_substitute: substitute epochs per round.
    """

    spec: RunSpec = dataclasses.field(default_factory=lambda: RunSpec(
        model="F", num_tests=1000, batch_size=100))
    substitute_model: str = "E"
    holdout: int = 150
    data_aug: int = 6
    lmbda: float = 0.1
    flip_every: int = 3
    epochs_substitute: int = 10

    def __post_init__(self):
        check_finite_fields(self, "blackbox")
        if self.lmbda == 0:
            raise ConfigError(
                "lmbda",
                "lmbda must be nonzero (the Jacobian augmentation's step), got 0")
        if self.substitute_model not in CLASSIFIER_MODELS:
            raise ConfigError(
                "substitute_model",
                f"substitute_model must be one of {list(CLASSIFIER_MODELS)}, "
                f"got {self.substitute_model!r}")
        for name in ("holdout", "data_aug", "flip_every", "epochs_substitute"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"{name} must be >= 1, got {getattr(self, name)}")
        self.spec.check_split_sizes(holdout=self.holdout)  # the seed set comes first

    def name(self) -> str:
        """A readable file-name stem (the settings digest is appended when writing)."""
        s = self.spec
        parts = [s.dataset, f"eps{s.attack.eps}", s.model, self.substitute_model,
                 s.defense_type]
        if s.defense_type == "defense_gan":
            parts += ["rec" if s.train_on_recs else "orig", f"L{s.projection.iterations}",
                      f"R{s.projection.restarts}"]
        parts += [f"h{self.holdout}", f"aug{self.data_aug}", f"n{s.num_tests}", f"s{s.seed}"]
        return "_".join(str(p) for p in parts)


@dataclasses.dataclass(frozen=True)
class AdaptiveRun:
    """Settings of one adaptive evaluation (the flags of ``bin/adaptive.py``).

    Attributes:
      spec: data, classifier, generator and projection (``spec.defense_type`` is
        ``defense_gan``; Rec when ``spec.train_on_recs``).
      attacks: names from :data:`defense_gan_tf.config.ADAPTIVE_ATTACKS`.
      eps_linf, eps_l2: budgets of the L-infinity and L2 attacks.
      latent_budget: budgets (mean squared error per pixel) of the latent attack; one
        search serves them all.
      latent_search_steps, latent_learning_rate, latent_const: the latent search's
        rounds over its constant, Adam's learning rate on z and the first constant.
      pgd_steps, pgd_l2_steps: PGD iterations; step sizes are 2.5 eps / steps.
      eot_samples: draws averaged per EOT step (bpda_eot_pgd: fresh projections at
        every step; bpda_eot_track_pgd: K projections per image followed from step to
        step).
      cw_iterations, cw_learning_rate, cw_const: CW settings (one search step); how
        the defaults were chosen: results/adaptive/README.md.
      latent_steps: Adam steps of the latent search per value of its constant.
      attack_iterations, attack_restarts: L and R of the projection inside the BPDA
        attacks' forward passes (0: the defense's own). A cheaper attacker projection
        can only weaken the attack; every adversarial image is still scored through
        the defense's full projection.
      track_steps: descent steps per attack step of the tracking attacks, from
        the previous step's z* (their first step projects like the other BPDA attacks;
        :class:`defense_gan_tf.attacks.TrackingBPDA`).
      sanity_images: test images the sanity checks of Carlini et al. (2019) run on
        (0 skips them): BPDA-PGD at the whole pixel range, BPDA-PGD with twice the
        steps, and BPDA through an identity projection against the classifier alone
        (every attack breaking the undefended classifier is checked on all images).
    """

    spec: RunSpec = dataclasses.field(default_factory=lambda: RunSpec(
        defense_type="defense_gan", generator="pretrained/mnist/generator.keras"))
    attacks: tuple = tuple(ADAPTIVE_ATTACKS)  # all of them
    eps_linf: tuple = (0.1, 0.2, 0.3)
    eps_l2: tuple = (1.0, 2.0, 4.0)
    latent_budget: tuple = (0.005,)
    pgd_steps: int = 100
    pgd_l2_steps: int = 100
    eot_samples: int = 10
    cw_iterations: int = 100
    cw_learning_rate: float = 0.1
    cw_const: float = 1.0
    latent_steps: int = 200
    latent_search_steps: int = 5
    latent_learning_rate: float = 0.01
    latent_const: float = 0.01
    sanity_images: int = 20
    attack_iterations: int = 0
    attack_restarts: int = 0
    track_steps: int = 10

    def __post_init__(self):
        unknown = sorted(set(self.attacks) - set(ADAPTIVE_ATTACKS))
        if unknown or not self.attacks:
            raise ConfigError(
                "attacks",
                f"attacks must be a non-empty list of {sorted(ADAPTIVE_ATTACKS)}, got "
                f"unknown {unknown}")
        if self.spec.defense_type != "defense_gan":
            raise ConfigError("defense_type", "adaptive runs attack Defense-GAN: "
                              "spec.defense_type must be defense_gan")
        if isinstance(self.latent_budget, (int, float)):  # one budget given as a number
            object.__setattr__(self, "latent_budget", (float(self.latent_budget),))
        check_finite_fields(self, "adaptive")
        for name in ("eps_linf", "eps_l2", "latent_budget"):
            if any(not math.isfinite(b) for b in getattr(self, name)):
                raise ConfigError(name, f"{name} must be finite numbers, got {getattr(self, name)}")
        if not self.latent_budget or any(not b > 0 for b in self.latent_budget):
            raise ConfigError(
                "latent_budget",
                f"latent_budget must be one or more numbers > 0, got "
                f"{self.latent_budget}")
        for name in ("latent_learning_rate", "latent_const", "cw_learning_rate", "cw_const"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"{name} must be > 0, got {getattr(self, name)}")
        lo, hi = self.spec.pixel_range
        if any(not 0 < e <= hi - lo for e in self.eps_linf) or any(
                not e > 0 for e in self.eps_l2):
            raise ConfigError(("eps_linf", "eps_l2"),
                              f"eps_linf must be in (0, {hi - lo}] and eps_l2 > 0")
        for name in ("pgd_steps", "pgd_l2_steps", "eot_samples", "cw_iterations",
                     "latent_steps", "latent_search_steps", "track_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sanity_images < 0:
            raise ConfigError(
                "sanity_images",
                f"sanity_images must be >= 0, got {self.sanity_images}")
        if self.attack_iterations < 0 or self.attack_restarts < 0:
            raise ConfigError(("attack_iterations", "attack_restarts"),
                              "attack_iterations and attack_restarts must be >= 0 (0: the "
                              "defense's own)")
        self.attack_projection  # a valid ProjectionConfig (raises ValueError otherwise)

    @property
    def attack_projection(self):
        """The projection the BPDA attacks run forward (the defense's by default)."""
        own = self.spec.projection
        steps = self.attack_iterations or own.iterations
        return dataclasses.replace(own, iterations=steps,
                                   restarts=self.attack_restarts or own.restarts,
                                   prune_at=tuple(p for p in own.prune_at if p < steps))

    def budgets(self, attack: str) -> tuple:
        """The budgets ``attack`` runs at."""
        norm = ADAPTIVE_ATTACKS[attack].norm
        return {"linf": self.eps_linf, "l2": self.eps_l2,
                "mse": tuple(self.latent_budget)}[norm]
