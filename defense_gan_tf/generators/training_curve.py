"""What a generator is worth to the defense, measured during training.

:class:`DefenseQualityProbe` scores one generator on the figures that decide
whether Defense-GAN works with it (paper section 3.3 and section 4; see also
DESIGN.md section 5b):

- generator quality: classifier score and Frechet distance of ``num_samples``
  samples against the test set (``quality.py``);
- Defense-GAN-Orig accuracy of the quality classifier on projections
  (L, R of the given :class:`ProjectionConfig`) of the first ``num_images``
  test images: clean; FGSM made on the undefended classifier (the transferred
  attack); random-sign noise of the same size; and, on the first
  ``paper_fgsm_images`` of them, paper-style FGSM whose gradient runs through
  all L unrolled projection steps, then re-projected from fresh starts, and on
  the first ``bpda_fgsm_images`` FGSM through BPDA (Athalye et al. 2018: the
  projection's backward pass taken as the identity, the gradient of the classifier
  at the attacker's own reconstruction);
- for each transferred-FGSM failure, whether it is an *optimisation* failure
  (the clean image's own reconstruction fits the adversarial image better
  than what the projection found, so more steps or restarts would help) or a
  *range* failure (the generator can draw something off-class that fits the
  adversarial image better than any rendering of the true digit it found).

The fixed inputs (test images, their adversarial and noisy versions, real
feature statistics) are computed once; each call projects with fixed seeds so
that points of a curve differ only by the generator.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from defense_gan_tf.attacks import fgsm
from defense_gan_tf.attacks.common import (gradient_sign, loss_and_gradient,
                                           per_example_norm)
from defense_gan_tf.config import ProjectionConfig
from defense_gan_tf.defense.defended import DefendedClassifier
from defense_gan_tf.errors import ConfigError, Interrupted
from defense_gan_tf.defense.projection import Projector
from defense_gan_tf.batch_cache import OutOfTime, ResumableBatches, in_turn
from defense_gan_tf.metrics.quality import (classifier_score, frechet_distance,
                                            sample, statistics)
from defense_gan_tf.metrics.stats import accuracy_entry, gradient_norm_summary
from defense_gan_tf.models.saving import weights_digest
from defense_gan_tf.sharding import CLAIM_TIMEOUT_SECONDS, Shard

# Seeds of the random starts: the evaluation projections and the attacker's own
# projection (paper-style FGSM) draw different starts, as a real attacker would.
_EVAL_SEED = 11
_ATTACK_SEED = 12
_SAMPLE_SEED = 13


@dataclasses.dataclass(frozen=True)
class CurveSettings:
    """How much a point of the training curve measures.

    Attributes:
      num_samples: generated images for the classifier score and Frechet distance.
      num_images: first test images for the clean, transferred-FGSM and noise figures.
      paper_fgsm_images: first test images for paper-style FGSM (full gradient through
        the projection; about four projections' cost per image). 0 skips it.
      bpda_fgsm_images: first test images for FGSM through BPDA (two projections per
        image). 0 skips it.
      random_sign: whether to measure the random-sign noise figure.
      eps: L-infinity size of FGSM and of the random-sign noise.
      projection: the defense's projection (the paper's L = 200, R = 10 by default).
      batch_size: images per projection batch.
      paper_fgsm_batch_size: images per full-gradient batch (memory grows with L).
    """

    num_samples: int = 2000
    num_images: int = 100
    paper_fgsm_images: int = 20
    random_sign: bool = True
    eps: float = 0.3
    projection: ProjectionConfig = dataclasses.field(default_factory=ProjectionConfig)
    batch_size: int = 100
    paper_fgsm_batch_size: int = 5
    bpda_fgsm_images: int = 0

    def __post_init__(self):
        for name in ("num_samples", "num_images", "batch_size", "paper_fgsm_batch_size"):
            if not getattr(self, name) >= 1:
                raise ConfigError(name, f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_samples < 2:
            raise ConfigError("num_samples", f"num_samples must be >= 2, got {self.num_samples}")
        for name in ("paper_fgsm_images", "bpda_fgsm_images"):
            if not 0 <= getattr(self, name) <= self.num_images:
                raise ConfigError(name, f"{name} must be in [0, num_images="
                                        f"{self.num_images}], got {getattr(self, name)}")
        if not self.eps > 0:
            raise ConfigError("eps", f"eps must be > 0, got {self.eps}")


def _concatenate(outs: list):
    """Per-batch outputs (arrays, or tuples of arrays) joined along the batch axis."""
    if isinstance(outs[0], tuple):
        return tuple(np.concatenate(parts) for parts in zip(*outs))
    return np.concatenate(outs)


def _batched(fn, *arrays, batch_size: int):
    return _concatenate([fn(*(a[i:i + batch_size] for a in arrays))
                         for i in range(0, len(arrays[0]), batch_size)])


class BudgetExhausted(Interrupted):
    """The probe's deadline passed before all of its batches were measured.

    Every finished batch is in the probe's cache folder: calling the probe again with
    the same generator, classifier and settings continues where it stopped.

    Attributes:
      done, total: batches finished (this call and earlier ones) and planned.
      cache_dir: the folder holding them.
    """

    def __init__(self, done: int, total: int, cache_dir: str):
        super().__init__(f"time budget used up after {done} of {total} batches; they are "
                         f"cached in {cache_dir}, so the same call continues from there")
        self.done, self.total, self.cache_dir = done, total, cache_dir


class _Batches:
    """Runs a probe's batched computations through one :class:`ResumableBatches` (each
    batch kept in the cache folder when one is given, so an interrupted probe resumes),
    with progress output; out of time or asked to stop, it says how many of the probe's
    batches are done."""

    def __init__(self, folder: Optional[str], total: int, deadline: Optional[float],
                 log: Optional[Callable[[str], None]],
                 stop: Optional[Callable[[], bool]] = None, shard: Optional[Shard] = None,
                 claim_timeout: float = CLAIM_TIMEOUT_SECONDS):
        if folder:
            os.makedirs(folder, exist_ok=True)
        # Several workers (shards) may share the folder: each claims a batch before it
        # computes it, takes its share first, and waits for what the others hold.
        self.shard = shard or Shard()
        self.batches = ResumableBatches(
            folder, deadline=deadline, stop=stop,
            claim_timeout=claim_timeout if self.shard.count > 1 else None)
        self.folder, self.total = folder, total
        self.log = log or (lambda message: None)

    @property
    def done(self) -> int:
        return self.batches.computed + self.batches.loaded

    @property
    def loaded(self) -> int:
        return self.batches.loaded

    def run(self, name: str, fn, *arrays, batch_size: int):
        n = len(arrays[0])
        count = math.ceil(n / batch_size)
        # This worker's share first, then the others'; then what other workers held.
        return _concatenate(in_turn(self.shard.order(count), lambda b, wait: self._batch(
            name, fn, arrays, b, count, batch_size, wait)))

    def _batch(self, name: str, fn, arrays, b: int, count: int, batch_size: int,
               wait: bool):
        """Batch ``b`` of a run: its outputs, or None when another worker holds it and
        not ``wait``."""
        i = b * batch_size

        def compute():
            t0 = time.perf_counter()
            out = fn(*(a[i:i + batch_size] for a in arrays))
            parts = out if isinstance(out, tuple) else (out,)
            self.log(f"  {name}: batch {b + 1}/{count} in {time.perf_counter() - t0:.0f} "
                     f"s ({self.done + 1}/{self.total} batches of the probe done)")
            return {f"out{k}": v for k, v in enumerate(parts)}

        try:
            saved = self.batches.get(f"{name}_{b:04d}", compute, required=("out0",),
                                     wait=wait)
        except OutOfTime:
            raise BudgetExhausted(self.done, self.total,
                                  self.folder or "(no cache)") from None
        except Interrupted:
            raise Interrupted(f"stopped on request after {self.done} of {self.total} "
                              f"batches; they are saved in {self.folder or '(no cache)'}"
                              ) from None
        if saved is None:  # another worker holds it: come back to it
            return None
        out = tuple(saved[f"out{k}"] for k in range(len(saved)))
        return out if len(out) > 1 else out[0]


def classify_failures(clean_reconstruction: np.ndarray, found_error: np.ndarray,
                      adversarial: np.ndarray, failed: np.ndarray) -> dict:
    """Splits defense failures into optimisation and range failures (DESIGN.md 5b).

    A failure is an optimisation failure when the clean image's reconstruction
    G(z*_clean) fits the adversarial image better than the reconstruction the
    projection found for it, i.e. mean((G(z*_clean) - x_adv)^2) < found_error.

    Args:
      clean_reconstruction: G(z*) of the clean images [N, H, W, C].
      found_error: per-image error of the adversarial images' projection [N].
      adversarial: the adversarial images [N, H, W, C].
      failed: boolean [N], True where the defended classifier was wrong.

    Returns:
      dict with the failure count and the optimisation / range counts and shares.
    """
    clean_fit = np.mean((clean_reconstruction - adversarial) ** 2, axis=(1, 2, 3))
    failed = np.asarray(failed, bool)
    optimisation = failed & (clean_fit < np.asarray(found_error))
    n = int(failed.sum())
    k = int(optimisation.sum())
    return {"failures": n, "optimisation_failures": k, "range_failures": n - k,
            "optimisation_share": k / n if n else float("nan")}


class DefenseQualityProbe:
    """Scores generators for the training curve (see the module docstring).

    Args:
      classifier: the dataset's logits classifier A trained on real images.
      test_images, test_labels: the test split (all of it feeds the Frechet
        statistics; the first ``settings.num_images`` the defense figures).
      settings: a :class:`CurveSettings`.
      pixel_range: the data range (the generator's).
    """

    def __init__(self, classifier: keras.Model, test_images: np.ndarray,
                 test_labels: np.ndarray, settings: Optional[CurveSettings] = None,
                 pixel_range=(0.0, 1.0)):
        self.settings = settings = settings or CurveSettings()
        if len(test_images) < settings.num_images:
            raise ValueError(f"need at least num_images={settings.num_images} test images, "
                             f"got {len(test_images)}")
        self.classifier = classifier
        self.pixel_range = tuple(float(v) for v in pixel_range)
        lo, hi = self.pixel_range
        self._real_mu, self._real_sigma, _ = statistics(classifier, test_images)
        self.x = np.asarray(test_images[:settings.num_images], np.float32)
        self.y = np.asarray(test_labels[:settings.num_images], np.int64)
        self.x_fgsm = _batched(
            lambda x, y: fgsm(classifier, x, eps=settings.eps, y=y, clip_min=lo,
                              clip_max=hi).numpy(),
            self.x, self.y, batch_size=settings.batch_size)
        signs = np.sign(np.random.default_rng(0).standard_normal(self.x.shape))
        self.x_noise = np.clip(self.x + settings.eps * signs, lo, hi).astype(np.float32)
        self.undefended = {
            "clean": accuracy_entry(self._predict(self.x) == self.y),
            "transferred_fgsm": accuracy_entry(self._predict(self.x_fgsm) == self.y),
            "random_sign": accuracy_entry(self._predict(self.x_noise) == self.y),
        }

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return _batched(lambda x: np.argmax(self.classifier(x, training=False), -1),
                        images, batch_size=self.settings.batch_size)

    def _project(self, projector: Projector, images: np.ndarray, seed: int, batches, name):
        def run(x):
            out = projector(x, seed=[seed, 0])
            return out.reconstruction.numpy(), out.error.numpy()
        return batches.run(name, run, images, batch_size=self.settings.batch_size)

    def planned_batches(self) -> int:
        """Batches one call measures (projections and paper-style FGSM)."""
        s = self.settings
        per = math.ceil(s.num_images / s.batch_size)
        fgsm_batches = (math.ceil(s.paper_fgsm_images / s.paper_fgsm_batch_size)
                        + math.ceil(s.paper_fgsm_images / s.batch_size)
                        if s.paper_fgsm_images else 0)
        bpda_batches = 2 * math.ceil(s.bpda_fgsm_images / s.batch_size)
        return (3 if s.random_sign else 2) * per + fgsm_batches + bpda_batches

    def brief(self) -> "DefenseQualityProbe":
        """This probe without the random-sign, paper-style and BPDA FGSM figures (about
        half the cost): what the training curve measures of the averaged generator."""
        twin = copy.copy(self)
        twin.settings = dataclasses.replace(self.settings, random_sign=False,
                                            paper_fgsm_images=0, bpda_fgsm_images=0)
        return twin

    def cache_key(self, generator: keras.Model) -> str:
        """What a cached batch depends on: generator, classifier, settings, data range."""
        fields = dataclasses.asdict(self.settings)
        if not fields["bpda_fgsm_images"]:  # the keys of caches made before it existed
            del fields["bpda_fgsm_images"]
        settings = json.dumps([fields, self.pixel_range], sort_keys=True, default=str)
        h = hashlib.sha256(weights_digest(generator, self.classifier).encode())
        h.update(settings.encode())
        h.update(self.x.tobytes())
        return h.hexdigest()[:16]

    def _attack_fgsm(self, generator: keras.Model, batches, gradient: str, n: int):
        """FGSM on the defended classifier, its input gradient taken through the unrolled
        projection (``full``, paper-style) or BPDA (``bpda``); returns (x_adv, gradient
        L2 norms, share of zero gradient pixels)."""
        s = self.settings
        lo, hi = self.pixel_range
        attacker = DefendedClassifier(self.classifier, generator, s.projection,
                                      gradient=gradient)

        def attack(x, y):
            x = tf.convert_to_tensor(x)
            _, grad = loss_and_gradient(attacker, x, tf.convert_to_tensor(y),
                                        seed=[_ATTACK_SEED, 0])
            x_adv = tf.clip_by_value(x + s.eps * gradient_sign(grad), lo, hi)  # FGSM
            norms = per_example_norm(grad)
            zero = tf.reduce_mean(tf.cast(tf.equal(grad, 0.0), tf.float32), axis=[1, 2, 3])
            return x_adv.numpy(), norms.numpy(), zero.numpy()

        name, size = (("paper_fgsm_attack", s.paper_fgsm_batch_size) if gradient == "full"
                      else (f"{gradient}_fgsm_attack", s.batch_size))
        return batches.run(name, attack, self.x[:n], self.y[:n], batch_size=size)

    def __call__(self, generator: keras.Model, *, cache_dir: Optional[str] = None,
                 deadline: Optional[float] = None,
                 log: Optional[Callable[[str], None]] = None,
                 stop: Optional[Callable[[], bool]] = None, shard: Optional[Shard] = None,
                 claim_timeout: float = CLAIM_TIMEOUT_SECONDS) -> dict:
        """Scores ``generator``; returns a JSON-ready dict (accuracies with 95% intervals).

        Args:
          generator: the generator to score.
          cache_dir: every finished batch is kept in ``cache_dir/<key>/`` (generator,
            classifier, settings) and read back by a later call, which so resumes.
          deadline, stop: no new batch starts after this ``time.monotonic()`` value, or
            once ``stop()`` returns true.
          log: progress output per batch.
          shard, claim_timeout: workers sharing ``cache_dir`` split the batches (_Batches).

        Raises:
          BudgetExhausted: the deadline passed first (finished batches stay cached).
          Interrupted: ``stop`` returned true first (likewise).
        """
        s = self.settings
        timings = {}
        folder = os.path.join(cache_dir, self.cache_key(generator)) if cache_dir else None
        batches = _Batches(folder, self.planned_batches(), deadline, log, stop, shard=shard,
                           claim_timeout=claim_timeout)
        t0 = time.perf_counter()
        fake = sample(generator, s.num_samples, seed=_SAMPLE_SEED)
        mu, sigma, probs = statistics(self.classifier, fake)
        out = {"classifier_score": classifier_score(probs),
               "frechet_distance": frechet_distance(mu, sigma, self._real_mu,
                                                    self._real_sigma),
               "num_samples": s.num_samples}
        timings["quality"] = time.perf_counter() - t0

        projector = Projector(generator, s.projection)
        defended, errors, recs = {}, {}, {}
        figures = [("clean", self.x), ("transferred_fgsm", self.x_fgsm)]
        if s.random_sign:
            figures.append(("random_sign", self.x_noise))
        for name, images in figures:
            t0 = time.perf_counter()
            recs[name], errors[name] = self._project(projector, images, _EVAL_SEED, batches,
                                                     name)
            defended[name] = accuracy_entry(self._predict(recs[name]) == self.y)
            defended[name]["mean_reconstruction_error"] = float(errors[name].mean())
            timings[name] = time.perf_counter() - t0
        failed = self._predict(recs["transferred_fgsm"]) != self.y
        out["transferred_fgsm_failures"] = classify_failures(
            recs["clean"], errors["transferred_fgsm"], self.x_fgsm, failed)

        for key, gradient, n in (("paper_fgsm", "full", s.paper_fgsm_images),
                                 ("bpda_fgsm", "bpda", s.bpda_fgsm_images)):
            if not n:
                continue
            t0 = time.perf_counter()
            x_adv, norms, zero = self._attack_fgsm(generator, batches, gradient, n)
            rec, err = self._project(projector, x_adv, _EVAL_SEED, batches, key)
            norm_summary = gradient_norm_summary(norms)
            defended[key] = accuracy_entry(self._predict(rec) == self.y[:n])
            defended[key].update({
                "mean_reconstruction_error": float(err.mean()),
                "gradient_mode": gradient,
                "input_gradient_norm_mean": norm_summary["mean"],  # of the finite ones
                "input_gradient_norm_median": norm_summary["median"],
                "input_gradient_norm_nonfinite": norm_summary["nonfinite"],
                "zero_gradient_pixel_share": float(zero.mean()),
                "mean_linf_distortion": float(np.abs(x_adv - self.x[:n]).max(
                    axis=(1, 2, 3)).mean()),
            })
            timings[key] = time.perf_counter() - t0
        out["defense_gan_orig"] = defended
        out["undefended"] = self.undefended
        out["settings"] = {
            "num_images": s.num_images, "paper_fgsm_images": s.paper_fgsm_images,
            "random_sign": s.random_sign,
            "eps": s.eps, "projection": dataclasses.asdict(s.projection),
            "classifier": "the dataset's classifier A (logits), trained on real images",
        }
        if s.bpda_fgsm_images:
            out["settings"]["bpda_fgsm_images"] = s.bpda_fgsm_images
        out["seconds"] = {k: round(v, 1) for k, v in timings.items()}
        if batches.loaded:  # the seconds above cover only the batches run by this call
            out["batches_from_cache"] = batches.loaded
        return out


def probe_for_dataset(dataset: str, classifier_path: str, *, data_dir: Optional[str] = None,
                      settings: Optional[CurveSettings] = None,
                      pixel_range=(0.0, 1.0)) -> DefenseQualityProbe:
    """A :class:`DefenseQualityProbe` on ``dataset``'s test split with a saved classifier.

    Raises:
      FileNotFoundError: ``classifier_path`` does not exist.
      ValueError: the classifier does not map the dataset's images to 10 logits.
    """
    from defense_gan_tf import data as data_lib

    if not tf.io.gfile.exists(classifier_path):
        raise FileNotFoundError(f"quality classifier {classifier_path} does not exist")
    classifier = keras.models.load_model(classifier_path)
    images, labels = data_lib.load_numpy(dataset, "test", data_dir=data_dir)
    if tuple(classifier.input_shape[1:]) != tuple(images.shape[1:]) or \
            classifier.output_shape[-1] != 10:
        raise ValueError(f"quality classifier {classifier_path} maps {classifier.input_shape} "
                         f"to {classifier.output_shape}; {dataset} needs images "
                         f"{images.shape[1:]} -> 10 logits")
    return DefenseQualityProbe(classifier, images, labels, settings, pixel_range)


_CURVE_LINES = (("clean", "clean", "tab:green"),
                ("transferred_fgsm", "FGSM transferred from the undefended classifier",
                 "tab:red"),
                ("random_sign", "random-sign noise", "tab:gray"),
                ("paper_fgsm", "paper-style FGSM (full gradient)", "tab:purple"))


def _accuracy_panel(ax, entries: list, averaged: list) -> None:
    """Defense-GAN-Orig accuracies with 95% intervals (the averaged generator's clean and
    transferred-FGSM ones dashed) and the undefended transferred-FGSM accuracy."""
    for key, label, colour in _CURVE_LINES:
        points = [(e["iteration"], e["defense_gan_orig"][key]) for e in entries
                  if key in e.get("defense_gan_orig", {})]
        if not points:
            continue
        x = [p[0] for p in points]
        acc = np.array([p[1]["accuracy"] for p in points])
        low = np.array([p[1]["ci95"][0] for p in points])
        high = np.array([p[1]["ci95"][1] for p in points])
        n = points[-1][1]["n"]
        ax.errorbar(x, acc, yerr=[acc - low, high - acc], fmt="o-", capsize=3,
                    color=colour, label=f"{label} (n={n})")
    for key, label, colour in _CURVE_LINES[:2]:  # the averaged generator's
        points = [(e["iteration"], e["average"]["defense_gan_orig"][key]) for e in averaged
                  if key in e["average"].get("defense_gan_orig", {})]
        if points:
            ax.plot([p[0] for p in points], [p[1]["accuracy"] for p in points], "s--",
                    color=colour, alpha=0.7, label=f"{label}, averaged generator")
    undefended = [e["undefended"]["transferred_fgsm"]["accuracy"] for e in entries
                  if "undefended" in e]
    if undefended:
        ax.axhline(undefended[-1], ls=":", c="tab:red", lw=1,
                   label="FGSM, no defense")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Defense-GAN-Orig accuracy (95% intervals)")


def _failures_panel(ax, entries: list, its: list) -> None:
    """Transferred-FGSM failures split into range and optimisation failures."""
    failures = [e.get("transferred_fgsm_failures", {}) for e in entries]
    opt = np.array([f.get("optimisation_failures", 0) for f in failures])
    rng = np.array([f.get("range_failures", 0) for f in failures])
    width = 0.35 * (min(np.diff(its)) if len(its) > 1 else 1.0)
    ax.bar(its, rng, width=width, label="range failures", color="tab:orange")
    ax.bar(its, opt, width=width, bottom=rng, label="optimisation failures",
           color="tab:blue")
    ax.set_title("transferred-FGSM failures")
    ax.legend(fontsize=8)


def plot_quality_curve(entries, path: str, *, title: str = "",
                       real_classifier_score: Optional[float] = None) -> str:
    """Plots a run's ``quality.jsonl`` entries against generator iterations.

    Four panels: classifier score, Frechet distance, Defense-GAN-Orig accuracy
    (clean, transferred FGSM, random-sign noise, paper-style FGSM, with 95%
    intervals, and the undefended transferred-FGSM accuracy), and the split of
    transferred-FGSM failures into optimisation and range failures. Entries that
    scored the averaged generator too (``average``) add its score, distance, clean and
    transferred-FGSM accuracy as dashed lines.

    Returns:
      ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    entries = sorted(entries, key=lambda e: e["iteration"])
    its = [e["iteration"] for e in entries]
    fig = Figure(figsize=(11, 8.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(2, 2, i) for i in range(1, 5)]
    axes[0].plot(its, [e.get("classifier_score", np.nan) for e in entries], "o-")
    if real_classifier_score:
        axes[0].axhline(real_classifier_score, ls="--", c="k", lw=1, label="real test images")
        axes[0].legend(fontsize=8)
    axes[0].set_title("classifier score (higher is better)")
    axes[1].plot(its, [e.get("frechet_distance", np.nan) for e in entries], "o-")
    averaged = [e for e in entries if isinstance(e.get("average"), dict)]
    if averaged:
        a_its = [e["iteration"] for e in averaged]
        for ax, key in ((axes[0], "classifier_score"), (axes[1], "frechet_distance")):
            ax.lines[0].set_label("generator")
            ax.plot(a_its, [e["average"].get(key, np.nan) for e in averaged], "s--",
                    c="tab:purple", label="averaged generator")
            ax.legend(fontsize=8)
    axes[1].set_yscale("log")
    axes[1].set_title("Frechet distance (lower is better)")
    _accuracy_panel(axes[2], entries, averaged)
    _failures_panel(axes[3], entries, its)
    for ax in axes:
        ax.set_xlabel("generator iteration")
        ax.set_xlim(left=0)  # the curve from the start of training
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    # The raw generator's lines (matplotlib lists the error bars last) before the others.
    handles, labels = axes[2].get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: ("averaged" in labels[i]
                                                      or "no defense" in labels[i]))
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    if handles:  # the accuracy panel's key, under the whole figure, clear of every line
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07 if handles else 0, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path


def _accuracy_text(entry: Optional[dict], interval: bool = True) -> str:
    if not entry:
        return "-"
    text = f"{entry['accuracy']:.2f}"
    return text + (f" [{entry['ci95'][0]:.2f}, {entry['ci95'][1]:.2f}]" if interval else "")


def _norms_text(entry: dict, spec: str) -> str:
    """'median / mean' of an entry's input-gradient norms; the mean is over the finite
    norms, and how many were not finite follows (entries before that count existed
    may hold Inf, or null as strict JSON writes it)."""
    def number(key):
        value = entry.get(key)
        return "-" if value is None else format(value, spec)

    text = f"{number('input_gradient_norm_median')} / {number('input_gradient_norm_mean')}"
    nonfinite = entry.get("input_gradient_norm_nonfinite")
    if nonfinite:
        text += f" ({nonfinite} of {entry['n']} not finite)"
    return text


def curve_table(entries) -> str:
    """A run's ``quality.jsonl`` entries as a markdown table, one row per evaluation:
    quality, Defense-GAN-Orig accuracies with 95% intervals, the paper-style attack's
    input-gradient norms, the failure split and the reconstruction errors."""
    entries = sorted(entries, key=lambda e: e["iteration"])
    averaged = any(isinstance(e.get("average"), dict) for e in entries)
    lines = ["| iterations | classifier score | Frechet distance | clean | transferred FGSM | "
             "random-sign noise | paper-style FGSM | its input-gradient norm, median / mean "
             "| range / all transferred failures | clean / transferred MSE |"
             + (" averaged generator: score / FD / clean / transferred FGSM |"
                if averaged else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if averaged else "")]
    for e in entries:
        d = e.get("defense_gan_orig", {})
        paper = d.get("paper_fgsm")
        paper_text = "-" if not paper else f"{_accuracy_text(paper)} n={paper['n']}"
        grads = "-" if not paper or "input_gradient_norm_median" not in paper else (
            _norms_text(paper, ".1e"))
        fail = e.get("transferred_fgsm_failures") or {}
        fail_text = (f"{fail['range_failures']} / {fail['failures']}" if fail else "-")
        mse = [d.get(k, {}).get("mean_reconstruction_error") for k in
               ("clean", "transferred_fgsm")]
        mse_text = ("-" if all(m is None for m in mse) else
                    " / ".join("-" if m is None else f"{m:.4f}" for m in mse))
        score = e.get("classifier_score")
        fd = e.get("frechet_distance")
        lines.append(
            f"| {e['iteration']:,} | {'-' if score is None else f'{score:.2f}'} | "
            f"{'-' if fd is None else f'{fd:.1f}'} | {_accuracy_text(d.get('clean'))} | "
            f"{_accuracy_text(d.get('transferred_fgsm'))} | "
            f"{_accuracy_text(d.get('random_sign'))} | {paper_text} | {grads} | "
            f"{fail_text} | {mse_text} |" + (f" {_average_text(e.get('average'))} |"
                                             if averaged else ""))
    n = next((e["defense_gan_orig"]["clean"]["n"] for e in entries
              if "clean" in e.get("defense_gan_orig", {})), None)
    if n:
        lines += ["", f"Defense-GAN-Orig on the first {n} test images (paper-style FGSM on "
                  "the first n shown); Frechet distance on the run's own sample count."]
    return "\n".join(lines) + "\n"


def _average_text(entry: Optional[dict]) -> str:
    """'score / FD / clean / transferred' of an averaged generator's figures."""
    if not isinstance(entry, dict) or "error" in entry:
        return "-"
    d = entry.get("defense_gan_orig", {})
    score, fd = entry.get("classifier_score"), entry.get("frechet_distance")
    return (f"{'-' if score is None else f'{score:.2f}'} / {'-' if fd is None else f'{fd:.1f}'}"
            f" / {_accuracy_text(d.get('clean'), False)} / "
            f"{_accuracy_text(d.get('transferred_fgsm'))}")


_CONDITIONS = (("clean", "clean"), ("transferred_fgsm", "FGSM transferred from the "
                                    "undefended classifier"),
               ("random_sign", "random-sign noise"),
               ("paper_fgsm", "paper-style FGSM (full gradient through the projection)"),
               ("bpda_fgsm", "FGSM through BPDA (the projection's gradient taken as the "
                             "identity)"))


def defense_table(figures: dict) -> str:
    """Markdown of one probe result: accuracy without and with Defense-GAN-Orig per input,
    with 95% intervals, n and mean reconstruction error, then the failure split."""
    eps = figures.get("settings", {}).get("eps", 0.3)
    lines = ["| input (eps %g) | undefended | Defense-GAN-Orig [95%% interval] | n | "
             "mean reconstruction error |" % eps, "|---|---|---|---|---|"]
    defended, undefended = figures["defense_gan_orig"], figures.get("undefended", {})
    for key, label in _CONDITIONS:
        entry = defended.get(key)
        if not entry:
            continue
        lines.append(f"| {label} | {_accuracy_text(undefended.get(key), interval=False)} | "
                     f"{_accuracy_text(entry)} | {entry['n']} | "
                     f"{entry['mean_reconstruction_error']:.4f} |")
    f = figures.get("transferred_fgsm_failures")
    if f:
        lines.append(f"\nTransferred-FGSM failures: {f['failures']}, of which "
                     f"{f['optimisation_failures']} optimisation and {f['range_failures']} "
                     "range failures (DESIGN.md 5b).")
    for key, name in (("paper_fgsm", "Paper-style FGSM"), ("bpda_fgsm", "BPDA FGSM")):
        attack = defended.get(key)
        if attack and "input_gradient_norm_median" in attack:
            lines.append(f"{name} input-gradient L2 norm, median / mean: "
                         f"{_norms_text(attack, '.2e')}; share of exactly zero "
                         f"gradient pixels {attack['zero_gradient_pixel_share']:.3f}.")
    return "\n".join(lines) + "\n"
