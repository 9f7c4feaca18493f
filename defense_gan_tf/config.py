"""Frozen, typed configuration for every workflow of the package.

A :class:`Config` bundles the settings of one experiment: which dataset, the
generator / critic architecture, WGAN-GP training, the Defense-GAN projection
and classifier training. Presets mirror the settings the Defense-GAN authors
ran (Samangouei et al., ICLR 2018, section 4 and the appendix, and the
authors' released code).

Configs are immutable. Derive a variant with :func:`override` (dotted keys,
as the binaries' flags use) or :func:`dataclasses.replace`. Every config
round-trips through JSON; unknown keys are rejected with a message that names
them, so a typo in a saved file or a flag never passes silently.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any, Mapping

from defense_gan_tf.errors import ConfigError

DATASETS = ("mnist", "fashion_mnist", "celeba")
# Names the command line accepts for the MNIST-shaped datasets (binaries' --dataset).
IMAGE_DATASET_NAMES = ("mnist", "f-mnist", "fashion_mnist")
CLASSIFIER_MODELS = tuple("ABCDEF")
# How a classifier is protected in the white- and black-box tables (paper section 4).
DEFENSES = ("none", "defense_gan", "adv_tr", "magnet")
# What differentiating through the projection yields (defense.projection).
GRADIENT_MODES = ("full", "bpda", "none")

_DATASET_ALIASES = {
    "mnist": "mnist",
    "f-mnist": "fashion_mnist",
    "fmnist": "fashion_mnist",
    "fashion-mnist": "fashion_mnist",
    "fashion_mnist": "fashion_mnist",
    "celeba": "celeba",
    "celeb_a": "celeba",
}


def canonical_dataset_name(name: str) -> str:
    """Maps a dataset name or alias (``f-mnist``, ``celeb_a``...) to its canonical form.

    Raises:
      ValueError: if ``name`` is not a known dataset.
    """
    key = str(name).strip().lower()
    if key not in _DATASET_ALIASES:
        raise ConfigError(
            "dataset", f"unknown dataset {name!r}; expected one of "
            f"{sorted(set(_DATASET_ALIASES))}")
    return _DATASET_ALIASES[key]


# Images per split of the MNIST-shaped datasets (the standard IDX files and
# tensorflow-datasets alike; validation is the last 10,000 training images), so that
# a run's settings can refuse a count beyond a split before any data loads.
SPLIT_SIZES = {name: {"train": 50_000, "validation": 10_000, "test": 10_000}
               for name in ("mnist", "fashion_mnist")}

PRECISIONS = ("float32", "mixed_bfloat16")
# Bounds of the projection's L and R (see ProjectionConfig).
MAX_PROJECTION_STEPS = 20_000
MAX_PROJECTION_RESTARTS = 1_000
DESCENT_PRECISIONS = ("float32", "bfloat16")  # of the projection's L steps


def check_precision(precision: str) -> str:
    """Returns ``precision`` if it is one of :data:`PRECISIONS`, else raises ValueError."""
    if precision not in PRECISIONS:
        raise ConfigError("precision", f"precision must be one of {list(PRECISIONS)}, got "
                                       f"{precision!r}")
    return precision


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Generator and critic architecture (paper appendix).

    Attributes:
      image_shape: (height, width, channels) of the images; (28, 28, 1) or (64, 64, 3).
      latent_dim: size of z.
      net_dim: base width; the layers use 1x, 2x and 4x this many filters.
      output_activation: ``sigmoid`` for images in [0, 1], ``tanh`` for [-1, 1].
      generator_batch_norm: batch normalisation after the generator's hidden
        layers (the authors' default is off; the critic never uses it because
        it would break the per-example gradient penalty).
    """

    image_shape: tuple[int, int, int] = (28, 28, 1)
    latent_dim: int = 128
    net_dim: int = 64
    output_activation: str = "sigmoid"
    generator_batch_norm: bool = False

    def __post_init__(self):
        check_finite_fields(self, "model")
        shape = tuple(int(s) for s in self.image_shape)
        object.__setattr__(self, "image_shape", shape)
        if shape not in ((28, 28, 1), (64, 64, 3)):
            raise ConfigError(
                "model.image_shape",
                f"model.image_shape must be (28, 28, 1) or (64, 64, 3), got {shape}")
        _check_positive("model.latent_dim", self.latent_dim)
        _check_positive("model.net_dim", self.net_dim)
        if self.output_activation not in ("sigmoid", "tanh"):
            raise ConfigError(
                "model.output_activation",
                "model.output_activation must be 'sigmoid' or 'tanh', got "
                f"{self.output_activation!r}")

    @property
    def pixel_range(self) -> tuple[float, float]:
        """The (min, max) pixel values the generator produces."""
        return (0.0, 1.0) if self.output_activation == "sigmoid" else (-1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class GanConfig:
    """WGAN-GP training (Gulrajani et al. 2017; paper section 3.2).

    Attributes:
      batch_size: global batch size (split across replicas under tf.distribute).
      critic_steps: critic updates per generator update.
      gradient_penalty_weight: lambda of the gradient penalty.
      learning_rate, beta_1, beta_2: Adam settings of both networks.
      train_iters: generator iterations to train for.
      checkpoint_every: iterations between checkpoints.
      sample_every: iterations between sample-grid PNGs.
      log_every: iterations between progress lines and TensorBoard scalars.
      seed: seeds the data order, z and the penalty's interpolation weights;
        together with the iteration number it is the whole random state.
      precision: ``float32``, or ``mixed_bfloat16``: weights, optimizer state,
        losses and the gradient penalty stay float32 while the generator's and
        critic's hidden layers compute in bfloat16. Saved generators are float32.
      ema_decay: decay of the exponential moving average of the generator's weights
        (Yazici et al. 2019) kept beside the trained generator and saved as
        ``generator_ema.keras``; the decay used after generator update t is
        min(ema_decay, (1 + t) / (10 + t)), so early averages are not dominated by the
        random initialisation. 0 keeps no average.
      jit_compile: compile the training step with XLA (``tf.function(jit_compile=True)``);
        XLA draws z and the penalty weights with its own random algorithm, so a run
        differs from one without it (each resumes exactly). bench/train_step.py
        ``--jit`` tells whether it pays on a machine.
    """

    batch_size: int = 50
    critic_steps: int = 5
    gradient_penalty_weight: float = 10.0
    learning_rate: float = 1e-4
    beta_1: float = 0.5
    beta_2: float = 0.9
    train_iters: int = 200_000
    checkpoint_every: int = 500
    sample_every: int = 1000
    log_every: int = 50
    seed: int = 0
    precision: str = "float32"
    ema_decay: float = 0.999
    jit_compile: bool = False

    def __post_init__(self):
        check_finite_fields(self, "gan")
        try:
            check_precision(self.precision)
        except ConfigError as e:
            raise ConfigError("gan.precision", f"gan.{e}") from None
        if not 0.0 <= self.ema_decay < 1.0:  # also refuses NaN
            raise ConfigError(
                "gan.ema_decay",
                f"gan.ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("batch_size", "critic_steps", "checkpoint_every",
                     "sample_every", "log_every"):
            _check_positive(f"gan.{name}", getattr(self, name))
        if self.train_iters < 0:
            raise ConfigError(
                "gan.train_iters",
                f"gan.train_iters must be >= 0, got {self.train_iters}")
        if self.gradient_penalty_weight < 0:
            raise ConfigError(
                "gan.gradient_penalty_weight",
                "gan.gradient_penalty_weight must be >= 0, got "
                f"{self.gradient_penalty_weight}")
        _check_positive("gan.learning_rate", self.learning_rate)


@dataclasses.dataclass(frozen=True)
class ProjectionConfig:
    """Defense-GAN projection z* = argmin_z ||G(z) - x||^2 (paper section 3.3).

    The defaults are what the authors' code ran: L = 200 momentum steps of
    learning rate 10 (momentum 0.7) from R = 10 random starts. Their code
    defined a x0.1 decay at 80% of L that never fired (the step counter was
    never incremented), so ``decay`` is off by default.

    Options that do less work per image (all off by default, as in the paper):

    Attributes:
      descent_precision: ``bfloat16`` runs the generator of the L descent steps in
        bfloat16 (weights copied from the float32 generator); the choice of the
        best restart, the returned reconstruction and its error stay float32.
      prune_at: successive halving of the restarts: after each of these steps,
        each image keeps the best half of its remaining restarts (by current
        error); shapes stay static, so each stretch between two steps is its own
        compiled loop.
      early_stop_tolerance: when > 0, an image stops (its z stays) once its best
        error improved by less than this (mean squared error per pixel) over the
        last ``early_stop_window`` steps; the loop ends when every image of the
        batch has stopped, or at L.
      encoder_start: one restart of each image starts at E(x) from an encoder
        given to the projector (the others are random as before).
    """

    iterations: int = 200
    restarts: int = 10
    learning_rate: float = 10.0
    momentum: float = 0.7
    decay: bool = False
    decay_factor: float = 0.1
    decay_at: float = 0.8
    descent_precision: str = "float32"
    prune_at: tuple[int, ...] = ()
    early_stop_tolerance: float = 0.0
    early_stop_window: int = 20
    encoder_start: bool = False

    def __post_init__(self):
        check_finite_fields(self, "projection")
        # L = 0 would "defend" with a random G(z); the compiled loop cannot be stopped by
        # a signal, so L and R are bounded well above any useful setting (the paper's
        # largest: L = 200, R = 10).
        if not 1 <= self.iterations <= MAX_PROJECTION_STEPS:
            raise ConfigError(
                "projection.iterations",
                f"projection.iterations must be in [1, {MAX_PROJECTION_STEPS}], "
                f"got {self.iterations}")
        if not 1 <= self.restarts <= MAX_PROJECTION_RESTARTS:
            raise ConfigError(
                "projection.restarts",
                f"projection.restarts must be in [1, {MAX_PROJECTION_RESTARTS}], "
                f"got {self.restarts}")
        _check_positive("projection.learning_rate", self.learning_rate)
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(
                "projection.momentum",
                f"projection.momentum must be in [0, 1), got {self.momentum}")
        if not 0.0 < self.decay_at <= 1.0:
            raise ConfigError(
                "projection.decay_at",
                f"projection.decay_at must be in (0, 1], got {self.decay_at}")
        if self.descent_precision not in DESCENT_PRECISIONS:
            raise ConfigError(
                "projection.descent_precision",
                "projection.descent_precision must be 'float32' or 'bfloat16', "
                f"got {self.descent_precision!r}")
        prune_at = tuple(int(p) for p in self.prune_at)
        object.__setattr__(self, "prune_at", prune_at)
        if list(prune_at) != sorted(set(prune_at)) or any(
                not 0 < p < self.iterations for p in prune_at):
            raise ConfigError(
                "projection.prune_at",
                "projection.prune_at must be increasing steps in (0, iterations="
                f"{self.iterations}), got {prune_at}")
        if not self.early_stop_tolerance >= 0:
            raise ConfigError(
                "projection.early_stop_tolerance",
                "projection.early_stop_tolerance must be >= 0, got "
                f"{self.early_stop_tolerance}")
        _check_positive("projection.early_stop_window", self.early_stop_window)

    @property
    def restart_schedule(self) -> tuple[tuple[int, int, int], ...]:
        """(first step, end step, restarts) of each stretch of the descent."""
        bounds = (0,) + self.prune_at + (self.iterations,)
        restarts, out = self.restarts, []
        for start, end in zip(bounds[:-1], bounds[1:]):
            out.append((start, end, restarts))
            restarts = max(1, restarts // 2)
        return tuple(out)


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """Classifier training (paper section 4).

    Attributes:
      model: letter of the architecture, A-F.
      learning_rate: Adam learning rate.
      batch_size: training batch size.
      epochs: training epochs.
      adversarial_eps: FGSM epsilon of the adversarial-training baseline (the
        binaries set it from --fgsm_eps; the authors' code defaulted to 0.15
        while the paper's tables label 0.3).
    """

    model: str = "A"
    learning_rate: float = 1e-3
    batch_size: int = 128
    epochs: int = 10
    adversarial_eps: float = 0.3

    def __post_init__(self):
        check_finite_fields(self, "classifier")
        if self.model not in CLASSIFIER_MODELS:
            raise ConfigError(
                "classifier.model",
                f"classifier.model must be one of A-F, got {self.model!r}")
        _check_positive("classifier.learning_rate", self.learning_rate)
        _check_positive("classifier.batch_size", self.batch_size)
        _check_positive("classifier.epochs", self.epochs)


@dataclasses.dataclass(frozen=True)
class AttackEntry:
    """One attack a binary names: the algorithm that crafts it (run by
    ``defense_gan_tf.attacks.perturb``), the norm its budget is measured in, and what
    the attacker differentiates through Defense-GAN.

    Attributes:
      algorithm: ``fgsm``, ``rand_fgsm``, ``pgd`` (L-infinity), ``pgd_l2``, ``cw`` (L2)
        or ``latent`` (a search in the generator's range).
      norm: ``linf``, ``l2`` or ``mse`` (the latent attack's mean squared error).
      gradient: what the attacker differentiates: ``full`` (through the unrolled
        projection), ``bpda``, ``track`` / ``track_eot`` (BPDA following z*),
        ``transfer`` (the classifier alone); None where the run's ``--gradient`` decides
        (the white-box workflow) or where no gradient through the defense is taken.
      description: one line for tables and ``--help``.
      eot: averages the attack's gradient over fresh draws of the projection's starts.
    """

    algorithm: str
    norm: str
    gradient: typing.Optional[str]
    description: str
    eot: bool = False


# The attacks of the white-box workflow (paper section 4; bin/whitebox.py --attack_type),
# against whichever model --defense_type and --gradient give.
WHITEBOX_ATTACKS = {
    "fgsm": AttackEntry("fgsm", "linf", None, "FGSM"),
    "rand_fgsm": AttackEntry("rand_fgsm", "linf", None, "RAND+FGSM"),
    "cw": AttackEntry("cw", "l2", None, "Carlini-Wagner L2"),
    "pgd": AttackEntry("pgd", "linf", None, "PGD (L-infinity, random start)"),
}

# The attacks of the adaptive workflow (bin/adaptive.py --attacks), each against
# Defense-GAN through a fixed gradient mode.
ADAPTIVE_ATTACKS = {
    "fgsm": AttackEntry("fgsm", "linf", "full",
                        "FGSM through the unrolled projection (the paper's white box)"),
    "bpda_pgd": AttackEntry("pgd", "linf", "bpda", "PGD with BPDA"),
    "bpda_eot_pgd": AttackEntry("pgd", "linf", "bpda",
                                "PGD with BPDA and EOT over the random starts", eot=True),
    "bpda_track_pgd": AttackEntry("pgd", "linf", "track", "PGD with BPDA, the attacker's "
                                  "projection following z* from step to step"),
    "bpda_eot_track_pgd": AttackEntry("pgd", "linf", "track_eot", "PGD with BPDA and EOT "
                                      "over K projections per image, each followed from "
                                      "step to step", eot=True),
    "bpda_pgd_l2": AttackEntry("pgd_l2", "l2", "bpda", "PGD in L2 with BPDA"),
    "bpda_track_pgd_l2": AttackEntry("pgd_l2", "l2", "track",
                                     "PGD in L2 with BPDA, following z*"),
    "cw_bpda": AttackEntry("cw", "l2", "bpda",
                           "Carlini-Wagner L2 with BPDA (found only within the budget)"),
    "cw_bpda_track": AttackEntry("cw", "l2", "track",
                                 "Carlini-Wagner L2 with BPDA following z*"),
    "latent": AttackEntry("latent", "mse", None,
                          "latent-space search (Athalye et al. 5.4.2), re-projected"),
    # Carlini et al. (2019) ask for a transfer attack too: crafted on the classifier
    # alone, blind to the defense, then scored through it.
    "transfer_fgsm": AttackEntry("fgsm", "linf", "transfer",
                                 "FGSM on the undefended classifier, transferred"),
    "transfer_pgd": AttackEntry("pgd", "linf", "transfer",
                                "PGD on the undefended classifier, transferred"),
}


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """White-box attack settings (paper section 4; the authors' defaults).

    Attributes:
      attack_type: ``fgsm``, ``rand_fgsm``, ``cw`` or ``pgd``.
      eps: L-infinity size of FGSM, RAND+FGSM and PGD.
      alpha: RAND+FGSM's random step (then FGSM with eps - alpha).
      cw_binary_steps, cw_iterations, cw_learning_rate, cw_initial_const,
      cw_confidence: Carlini-Wagner L2 settings (the authors: 1, 100, 10, 100, 0).
      pgd_step_size, pgd_iterations: PGD settings.
    """

    attack_type: str = "fgsm"
    eps: float = 0.3
    alpha: float = 0.05
    cw_binary_steps: int = 1
    cw_iterations: int = 100
    cw_learning_rate: float = 10.0
    cw_initial_const: float = 100.0
    cw_confidence: float = 0.0
    pgd_step_size: float = 0.01
    pgd_iterations: int = 40

    def __post_init__(self):
        check_finite_fields(self, "attack")
        if self.attack_type not in WHITEBOX_ATTACKS:
            raise ConfigError(
                "attack.attack_type",
                f"attack.attack_type must be one of {list(WHITEBOX_ATTACKS)}, "
                f"got {self.attack_type!r}")
        if self.eps < 0:
            raise ConfigError("attack.eps", f"attack.eps must be >= 0, got {self.eps}")
        if not 0 <= self.alpha <= self.eps and self.attack_type == "rand_fgsm":
            raise ConfigError(
                "attack.alpha",
                f"attack.alpha must be in [0, eps={self.eps}], got {self.alpha}")
        for name in ("cw_binary_steps", "cw_iterations", "cw_learning_rate",
                     "cw_initial_const", "pgd_step_size", "pgd_iterations"):
            _check_positive(f"attack.{name}", getattr(self, name))
        if self.cw_confidence < 0:
            raise ConfigError(
                "attack.cw_confidence",
                f"attack.cw_confidence must be >= 0, got {self.cw_confidence}")


@dataclasses.dataclass(frozen=True)
class Config:
    """One experiment's settings."""

    dataset: str = "mnist"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    gan: GanConfig = dataclasses.field(default_factory=GanConfig)
    projection: ProjectionConfig = dataclasses.field(default_factory=ProjectionConfig)
    classifier: ClassifierConfig = dataclasses.field(default_factory=ClassifierConfig)
    attack: AttackConfig = dataclasses.field(default_factory=AttackConfig)

    def __post_init__(self):
        object.__setattr__(self, "dataset", canonical_dataset_name(self.dataset))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready nested dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self, indent: int = 2) -> str:
        """Serialises the config; :func:`Config.from_json` reads it back."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Config":
        """Builds a config from a nested mapping.

        Raises:
          ValueError: on unknown keys (named with their dotted path) or bad values.
        """
        return _from_dict(cls, data, prefix="")

    @classmethod
    def from_json(cls, text: str) -> "Config":
        """Parses :meth:`to_json` output.

        Raises:
          ValueError: if the text is not JSON or holds unknown keys.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError("config", f"config is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError("config", "config JSON must be an object at the top level")
        return cls.from_dict(data)


def _check_positive(name: str, value) -> None:
    if not value > 0:
        raise ConfigError(name, f"{name} must be > 0, got {value}")


def check_finite_fields(obj, section: str) -> None:
    """Refuses NaN and infinite numbers in any float field of the dataclass ``obj`` (a NaN
    passes every ``<`` / ``>`` range check and can make a run report robustness that was
    never measured)."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"{section}.{field.name}",
                f"{section}.{field.name} must be a finite number, got {value}")


def _from_dict(cls, data: Mapping[str, Any], prefix: str):
    if not isinstance(data, Mapping):
        name = prefix.rstrip(".") or "config"
        raise ConfigError(name, f"{name} must be an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            [prefix + k for k in unknown],
            "unknown config key(s): " + ", ".join(prefix + k for k in unknown) +
            f"; known keys here: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(hint, value, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(hint, value, name: str):
    """Checks a JSON value against a field's type, converting lists to tuples."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, f"{name} must be a list, got {value!r}")
        return tuple(int(v) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"{name} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"{name} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(name, f"{name} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(name, f"{name} must be a string, got {value!r}")
        return value
    return value


def override(config: Config, overrides: Mapping[str, Any]) -> Config:
    """Returns ``config`` with dotted-key overrides applied.

    Example: ``override(cfg, {"gan.batch_size": 64, "model.net_dim": 8})``.
    Values may be strings (as from the command line); they are parsed as JSON
    first, so ``"64"`` becomes 64 and ``"true"`` becomes True.

    Raises:
      ValueError: on an unknown key or a value of the wrong type.
    """
    data = config.to_dict()
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = data
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(
                    dotted, f"unknown config key {dotted!r} (no {'.'.join(parts[:i + 1])!r})")
            if i < len(parts) - 1:
                node = node[part]
        if isinstance(value, str) and not isinstance(node[parts[-1]], str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ConfigError(
                    dotted, f"config key {dotted!r}: cannot parse value {value!r}") from None
        node[parts[-1]] = value
    return Config.from_dict(data)


PROJECTION_PRESETS = ("paper", "fast")

# What the ``fast`` projection preset changes from the paper's: bfloat16 descent and
# successive halving of the restarts after steps 10, 20 and 40; chosen by
# bench/projection_tradeoff.py (its figures: bench/results/projection_tradeoff.md).
FAST_PROJECTION = {"descent_precision": "bfloat16", "prune_at": (10, 20, 40)}


def projection_preset(name: str, dataset: str = "mnist") -> ProjectionConfig:
    """The projection called ``name`` for ``dataset``: ``paper`` (the authors' L, R) or
    ``fast`` (the paper's with :data:`FAST_PROJECTION` applied).

    Raises:
      ValueError: unknown preset or dataset.
    """
    paper = preset(dataset).projection
    if name == "paper":
        return paper
    if name == "fast":
        return dataclasses.replace(paper, **FAST_PROJECTION)
    raise ConfigError("projection", f"unknown projection preset {name!r}; expected one of "
                     f"{list(PROJECTION_PRESETS)}")


def preset(name: str) -> Config:
    """The authors' settings for ``mnist``, ``f-mnist`` or ``celeba``.

    MNIST and Fashion-MNIST: 28x28x1 images in [0, 1], sigmoid generator,
    R = 10 projection restarts. CelebA: 64x64x3 images in [-1, 1], tanh
    generator, R = 2 restarts. All: latent 128, width 64, L = 200.

    Raises:
      ValueError: for an unknown preset name.
    """
    dataset = canonical_dataset_name(name)
    if dataset == "celeba":
        return Config(
            dataset=dataset,
            model=ModelConfig(image_shape=(64, 64, 3), output_activation="tanh"),
            projection=ProjectionConfig(restarts=2),
        )
    return Config(dataset=dataset)
