"""Adaptive attacks on Defense-GAN and one worst-case number per budget (``bin/adaptive.py``).

Run the way the adaptive-attack literature asks (Athalye, Carlini and Wagner 2018;
Carlini et al. 2019, "On evaluating adversarial robustness"): several attacks per
budget, each crafted against the defense (the paper's full gradient through the
unrolled projection, BPDA, BPDA with expectation over the random starts, BPDA that
follows z* from step to step, PGD in L2, CW-L2 through BPDA, the latent-space
attack) or, as a check, blind to it (FGSM and PGD transferred from the classifier
alone), every adversarial image then scored through a fresh projection. An image
counts as robust at a budget only if it survived every attack of that budget. The
same attacks on the undefended classifier give the "no defense" line.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from defense_gan_tf.atomic import write_text
from defense_gan_tf import attacks
from defense_gan_tf.attacks import TrackingBPDA
from defense_gan_tf.console import echo
from defense_gan_tf.defense import DefendedClassifier, Projector
from defense_gan_tf.defense.projection import attach_gradient
from defense_gan_tf.records import report
from defense_gan_tf.batch_cache import OutOfTime, ResumableBatches
from defense_gan_tf.records.loading import load_run_inputs
from defense_gan_tf.records.runs import RunOutcome, flat_settings, write_run_record
from defense_gan_tf.config import ADAPTIVE_ATTACKS
from defense_gan_tf.records.specs import AdaptiveRun
from defense_gan_tf.metrics.stats import accuracy_entry, gradient_norm_summary
from defense_gan_tf.sharding import CLAIM_TIMEOUT_SECONDS, Claims, Shard


@dataclasses.dataclass(frozen=True)
class AttackCell:
    """One attack at one budget, against the defense and the undefended classifier."""

    attack: str
    norm: str
    budget: float
    defended: dict           # accuracy entry through a fresh projection
    undefended: dict         # the same attack on the classifier alone
    correct: list            # per image, defended (for the worst case)
    mean_distortion: float   # L-inf, L2 or MSE per pixel, by the norm
    gradient_norm: Optional[float]
    seconds_per_image: float
    found: Optional[float] = None  # latent attack: the share found within the budget

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def worst_case(cells: list) -> dict:
    """{(norm, budget): accuracy entry}: an image is robust only if every attack at that
    budget failed on it."""
    groups: dict = {}
    for cell in cells:
        key = (cell.norm, cell.budget)
        ok = np.asarray(cell.correct, bool)
        groups[key] = ok if key not in groups else groups[key] & ok
    return {key: accuracy_entry(ok) for key, ok in sorted(groups.items())}


def _distortion(norm: str, x_adv: np.ndarray, x: np.ndarray) -> float:
    delta = (x_adv - x).reshape(len(x), -1)
    if norm == "linf":
        return float(np.abs(delta).max(axis=1).mean())
    if norm == "l2":
        return float(np.sqrt((delta ** 2).sum(axis=1)).mean())
    return float((delta ** 2).mean(axis=1).mean())


class SearchMemo:
    """Searches of one run that do not depend on the budget (the latent search, the
    CW-L2 optimisation, FGSM's gradient), by batch, in memory and, with ``folder``, kept
    on disk as :class:`ResumableBatches`, so that the other budgets of a batch, and a
    rerun's, reuse them. ``wrap`` rebuilds a stored result from its arrays (default: the
    dict of arrays itself)."""

    def __init__(self, folder: Optional[str] = None, wrap: Optional[Callable] = None):
        self.batches = ResumableBatches(folder)
        self.wrap = wrap
        self.searches: dict = {}

    def get_or_compute(self, key, compute: Callable):
        """The search stored under ``key``, or ``compute()``'s result, stored."""
        if key not in self.searches:
            fresh = []

            def arrays():
                fresh.append(compute())
                out = fresh[0]
                out = out._asdict() if hasattr(out, "_asdict") else out
                return {k: np.asarray(v) for k, v in out.items()}

            name = "search_" + "_".join(str(int(k) if isinstance(k, bool) else k)
                                        for k in key)
            kept = self.batches.get(name, arrays, required=getattr(self.wrap, "_fields", ()))
            self.searches[key] = fresh[0] if fresh else (
                self.wrap(**kept) if self.wrap else kept)
        return self.searches[key]


# The random stream of the input-gradient probe's projection starts.
_PROBE_STREAM = 99

# What a cached batch of an adaptive cell holds.
_BATCH_FIELDS = ("ok", "ok_plain", "distortion", "found", "grads", "seconds")

# Attacks whose search does not depend on the budget: one search per batch serves all.
_BUDGET_FREE = tuple(name for name, entry in ADAPTIVE_ATTACKS.items()
                     if entry.algorithm in ("latent", "cw", "fgsm"))


def search_memo(cache_dir: Optional[str], settings: dict, attack: str) -> SearchMemo:
    """The memo of ``attack``'s budget-free searches (under ``cache_dir`` when given)."""
    folder = os.path.join(cache_dir, cell_key(settings, attack, 0.0)) if cache_dir else None
    return SearchMemo(folder, attacks.LatentAttackResult if attack == "latent" else None)


def craft(attack: str, budget: float, run: AdaptiveRun, x, y, *, model_fn, classifier,
          generator, start_projector: Optional[Projector], seed: int,
          memo: Optional[SearchMemo] = None):
    """Adversarial images of ``attack`` at ``budget`` against ``model_fn`` (the defended
    model with the attack's gradient mode, or the classifier alone). The latent attack
    searches G's range for ``classifier``, starting from ``start_projector``'s z* of x
    (random starts without one); where it found nothing within ``budget`` the clean
    image is kept (a failed attack), and so does CW-L2 where its result lies outside
    ``budget``. Neither search depends on the budget, nor does FGSM's gradient, so with
    ``memo`` (kept across budgets, one per attack) one serves every budget of a batch.
    Returns (x_adv, found share or None)."""
    lo, hi = run.spec.pixel_range
    entry = ADAPTIVE_ATTACKS[attack]
    memo = SearchMemo() if memo is None else memo
    if entry.algorithm == "latent":
        def search():
            z_init = (None if start_projector is None else
                      start_projector(x, seed=[seed, 9]).z)
            return attacks.latent_attack(
                generator, classifier, x, y=y, budget=budget, z_init=z_init,
                steps=run.latent_steps, search_steps=run.latent_search_steps,
                learning_rate=run.latent_learning_rate, initial_const=run.latent_const,
                clip_min=lo, clip_max=hi, seed=seed)
        out = memo.get_or_compute((seed, start_projector is not None), search)
        # out.found holds for the attack's own budget; any budget is judged here.
        found = np.isfinite(out.distortion) & (out.distortion <= budget) & (
            np.argmax(classifier(out.x_adv), -1) != np.asarray(y))
        return _clean_where_failed(out.x_adv, x, found)
    steps = run.pgd_l2_steps if entry.norm == "l2" else run.pgd_steps
    common = dict(y=y, clip_min=lo, clip_max=hi)
    if entry.algorithm == "fgsm":
        # FGSM's step is eps times one gradient's sign: one gradient per batch and target
        # (through the unrolled projection, the costly part) serves every budget.
        out = memo.get_or_compute((seed, model_fn is classifier), lambda: {
            "direction": attacks.fgsm_direction(model_fn, x, y=y, seed=seed).numpy()})
        step = budget * out["direction"]
        return tf.clip_by_value(tf.convert_to_tensor(x, tf.float32) + step, lo,
                                hi).numpy(), None
    if entry.algorithm in ("pgd", "pgd_l2"):
        # The tracking EOT attacker averages its K draws itself (one batched call).
        k = run.eot_samples if entry.eot and entry.gradient == "bpda" else 1
        return attacks.perturb(entry.algorithm, model_fn, x, eps=budget,
                               step_size=2.5 * budget / steps, iterations=steps, seed=seed,
                               eot_samples=k, **common).numpy(), None
    if entry.algorithm == "cw":
        # CW minimises distortion without a budget: one optimisation per batch (and per
        # target: the defense, or the classifier alone) serves every budget.
        out = memo.get_or_compute((seed, model_fn is classifier), lambda: {
            "x_adv": attacks.perturb("cw", model_fn, x, binary_search_steps=1,
                                     max_iterations=run.cw_iterations,
                                     learning_rate=run.cw_learning_rate,
                                     initial_const=run.cw_const, **common).numpy()})
        x_cw, x_np = np.asarray(out["x_adv"]), np.asarray(x)
        within = np.sqrt(((x_cw - x_np) ** 2).reshape(len(x_np), -1).sum(axis=1)) <= \
            budget + 1e-6
        return _clean_where_failed(x_cw, x_np, within)
    raise ValueError(f"unknown attack {attack!r}")


def _clean_where_failed(x_adv, x, found) -> tuple:
    """(images, share found): an attack's result outside its budget counts as failed,
    so the clean image is kept there."""
    return np.where(found[:, None, None, None], x_adv, np.asarray(x)), float(found.mean())


class IdentityDefense:
    """The defended classifier with its projection replaced by the identity, behind the
    same BPDA gradient as the real defense: an attack on it must equal the attack on the
    classifier alone (Carlini et al. 2019, section 5)."""

    def __init__(self, classifier):
        self.classifier = classifier

    def __call__(self, images, training=False):
        images = tf.convert_to_tensor(images, tf.float32)
        return self.classifier(attach_gradient(images, images, "bpda"), training=False)


def _check(name: str, description: str, passed: bool, **figures) -> dict:
    return {"name": name, "description": description, "passed": bool(passed), **figures}


def sanity_checks(run: AdaptiveRun, x, y, *, classifier, defended_bpda, defended_correct,
                  cells: list, tracker: Optional[TrackingBPDA] = None,
                  log: Callable[[str], None] = echo) -> list:
    """The checklist of Carlini et al. (2019, "On evaluating adversarial robustness")
    on the first ``len(x)`` test images, each a dict with ``passed``, the ``attack`` it
    used and its figures:

    * ``full_range``: BPDA-PGD with eps the whole pixel range must leave accuracy near 0
      (at most 0.1); otherwise the attack, not the defense, is what fails.
    * ``more_steps``: BPDA-PGD at the largest L-infinity budget with twice the steps must
      not raise accuracy by more than the half-width of the first run's 95% interval.
    * ``identity_bpda``: BPDA-PGD through an identity "projection" must give the same
      images and labels as PGD on the classifier alone (the BPDA plumbing is right).
    * ``undefended_broken``: every attack of ``cells`` but the latent one must leave the
      undefended classifier at most 0.1 at its norm's largest budget (on all the
      cells' images); one that does not is too weak to say anything of the defense.

    With ``tracker`` the first two checks run the tracking BPDA-PGD (``bpda_track_pgd``,
    a projection's cost or so per image) instead of BPDA-PGD with a full projection at
    every step (``defended_bpda``, 100 projections per image at 100 steps).
    """
    lo, hi = run.spec.pixel_range
    x = tf.constant(x)
    y = np.asarray(y, np.int64)
    steps = run.pgd_steps
    eps_max = max(run.eps_linf)
    attack, label = (("bpda_pgd", "BPDA-PGD") if tracker is None else
                     ("bpda_track_pgd", "Tracking BPDA-PGD"))

    def bpda_pgd(model_fn, eps, iterations, seed):
        if model_fn is tracker:  # a fresh start for every attack
            tracker.reset(seed=seed)
        return attacks.pgd_linf(model_fn, x, y=y, eps=eps, step_size=2.5 * eps / iterations,
                                iterations=iterations, clip_min=lo, clip_max=hi,
                                seed=seed).numpy()

    defended = defended_bpda if tracker is None else tracker
    checks = []
    seed = run.spec.seed * 1_000_003 + 77
    t0 = time.monotonic()
    whole = accuracy_entry(defended_correct(bpda_pgd(defended, hi - lo, steps, seed),
                                            y, seed))
    checks.append(_check(
        "full_range", f"{label} ({steps} steps) at eps {hi - lo:g} (the whole range) "
        "leaves accuracy <= 0.1", whole["accuracy"] <= 0.1, attack=attack, accuracy=whole,
        seconds=time.monotonic() - t0))

    t0 = time.monotonic()
    base = [c for c in cells if c.attack == attack and c.budget == eps_max]
    if base:  # the evaluation's own run on these images
        first = accuracy_entry(np.asarray(base[0].correct[:len(y)], bool))
    else:
        first = accuracy_entry(defended_correct(bpda_pgd(defended, eps_max, steps, seed),
                                                y, seed))
    double = accuracy_entry(defended_correct(
        bpda_pgd(defended, eps_max, 2 * steps, seed), y, seed))
    slack = first["ci95"][1] - first["accuracy"]
    checks.append(_check(
        "more_steps", f"{label} at eps {eps_max:g} with {2 * steps} steps is not more than "
        f"the 95% half-width above {steps} steps", double["accuracy"] <= first["accuracy"] +
        slack, attack=attack, accuracy=first, accuracy_double_steps=double,
        seconds=time.monotonic() - t0))

    checks.append(_identity_check(classifier, bpda_pgd, eps_max, steps, seed))
    checks.append(_undefended_check(run, cells))
    for c in checks:
        log(f"sanity {c['name']}: {'passed' if c['passed'] else 'FAILED'} "
            f"({c['description']})")
    return checks


def _identity_check(classifier, bpda_pgd: Callable, eps: float, steps: int,
                    seed: int) -> dict:
    """``identity_bpda`` of :func:`sanity_checks`."""
    t0 = time.monotonic()
    through = bpda_pgd(IdentityDefense(classifier), eps, steps, seed)
    alone = bpda_pgd(classifier, eps, steps, seed)
    diff = float(np.abs(through - alone).max())
    same_labels = bool(np.array_equal(np.argmax(classifier(through), -1),
                                      np.argmax(classifier(alone), -1)))
    return _check(
        "identity_bpda", "BPDA-PGD through an identity projection equals PGD on the "
        "classifier alone", diff <= 1e-5 and same_labels, attack="bpda_pgd",
        max_abs_difference=diff, same_labels=same_labels, seconds=time.monotonic() - t0)


def _undefended_check(run: AdaptiveRun, cells: list) -> dict:
    """``undefended_broken`` of :func:`sanity_checks`: an attack that cannot break the
    undefended classifier at its largest budget says nothing about the defense (the
    latent attack, bound to G's range, is exempt)."""
    weak = [f"{c.attack} {c.norm} {c.budget:g}: {c.undefended['accuracy']:.3f}"
            for c in cells if c.attack != "latent" and c.budget == max(run.budgets(c.attack))
            and c.undefended["accuracy"] > 0.1]
    return _check(
        "undefended_broken", "every attack but the latent one leaves the undefended "
        "classifier at most 0.1 at its largest budget (all test images)", not weak,
        attack="all", weak=weak, seconds=0.0)


# Settings that say which cells a run has, not what one cell measures: a cell's cache key
# leaves them out, so a later run with more attacks or budgets reuses the cells it shares.
_RUN_ONLY = ("attacks", "eps_linf", "eps_l2", "latent_budget", "sanity_images")


# Settings of one attack family alone: the other attacks' keys leave them out.
_FAMILY_ONLY = {"latent": ("latent_search_steps", "latent_learning_rate", "latent_const"),
                "cw": ("cw_iterations", "cw_learning_rate", "cw_const"),
                "eot": ("eot_samples",)}


def _family(attack: str) -> Optional[str]:
    """The family of :data:`_FAMILY_ONLY` whose settings ``attack`` depends on, if any."""
    entry = ADAPTIVE_ATTACKS[attack]
    if entry.algorithm in ("latent", "cw"):
        return entry.algorithm
    return "eot" if entry.eot else None


def cell_key(settings: dict, attack: str, budget: float) -> str:
    """Digest of everything one cell's numbers depend on (its batch cache's folder)."""
    family = _family(attack)
    foreign = {k for f, names in _FAMILY_ONLY.items() if f != family for k in names}
    own = {k: v for k, v in settings.items() if k not in _RUN_ONLY and k not in foreign}
    return report.settings_id({**own, "attack": attack, "budget": float(budget)})


def _cell_file(results_dir: str, dataset: str, attack: str, norm: str, budget: float,
               run_id: str) -> str:
    return os.path.join(results_dir,
                        f"adaptive_{dataset}_{attack}_{norm}{budget}_{run_id}.json")


def finished_cell(results_dir: str, dataset: str, attack: str, norm: str, budget: float,
                  key: str, num_images: int) -> Optional[tuple]:
    """A cell already measured with exactly these settings, read back from its JSON in
    ``results_dir`` (any run that had it, whatever its other attacks and budgets):
    ``(AttackCell, path)``, or None. The JSONs are what is committed, so a table whose
    batch cache was lost continues from its finished cells; a record whose settings
    differ in anything the cell depends on (``key``, recomputed from the record's full
    settings by today's :func:`cell_key`) is never used."""
    pattern = _cell_file(glob.escape(results_dir), dataset, attack, norm, budget, "*")
    for path in sorted(glob.glob(pattern)):
        try:
            with open(path) as f:
                record = json.load(f)
            if record.get("kind") != "adaptive":
                continue
            if cell_key(record["settings"], attack, budget) != key:
                continue
            cell = AttackCell(**record["result"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable or from an older layout: measured again
        if len(cell.correct) == num_images and cell.attack == attack:
            return cell, path
    return None


@dataclasses.dataclass(frozen=True)
class AdaptiveResult:
    """What :func:`run_adaptive` measured: the finished cells (of this sitting or read
    back from earlier records), whether every cell is done, the worst case per budget
    and the sanity checks (both once every cell is done), the partial table and plot
    a stopped run leaves, and how many cells it left to other workers."""

    run_id: str
    cells: list
    finished: bool
    worst_case: dict = dataclasses.field(default_factory=dict)
    sanity: list = dataclasses.field(default_factory=list)
    partial_table: Optional[str] = None
    partial_plot: Optional[str] = None
    held: int = 0  # cells left to the other workers that hold their claims

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "finished": self.finished,
                "cells": [c.to_json() for c in self.cells], "sanity": self.sanity,
                "worst_case": {f"{norm} {budget:g}": entry
                               for (norm, budget), entry in self.worst_case.items()}}


@dataclasses.dataclass(frozen=True)
class _SanityRecord:
    num_images: int
    checks: list

    def to_json(self) -> dict:
        return {"num_images": self.num_images, "checks": self.checks}


class _Models:
    """The models of one adaptive run: the scorer (a fresh projection with the defense's
    settings), the defended classifier by gradient mode (the paper's white box
    differentiates through the defense's own projection; BPDA attacks run the attacker's,
    possibly cheaper, projection forward), the tracking attackers, and the input-gradient
    probe at clean images."""

    def __init__(self, run: AdaptiveRun, generator, classifier):
        spec = run.spec
        self.run, self.generator, self.classifier = run, generator, classifier
        self.scorer = Projector(generator, spec.projection)
        self.defended = {
            mode: DefendedClassifier(classifier, generator, projection, gradient=mode,
                                     draw_seed=spec.seed * 2 + 1)
            for mode, projection in (("full", spec.projection),
                                     ("bpda", run.attack_projection))}
        self.trackers = {mode: TrackingBPDA(classifier, generator, run.attack_projection,
                                            track_steps=run.track_steps, draws=draws)
                         for mode, draws in (("track", 1), ("track_eot", run.eot_samples))}
        self._probes: dict = {}

    def defended_correct(self, images, y, seed):
        rec = self.scorer(images, seed=[seed, 11]).reconstruction
        return np.argmax(self.classifier(rec, training=False), -1) == y

    def attacker(self, mode, seed):
        """The model an attack of gradient ``mode`` differentiates (None and transfer:
        the classifier); the tracking attacker starts every batch afresh (it keeps that
        batch's z*)."""
        if mode in self.trackers:
            self.trackers[mode].reset(seed=seed)
            return self.trackers[mode]
        return self.defended.get(mode, self.classifier)

    def probe(self, mode, start, x, y):
        """Input-gradient norms of the model ``mode``'s attacker follows (tracking: BPDA's
        at its first step; transfer: the classifier's alone) at five clean images, once
        per batch (in memory: cheap next to the attacks; draws keyed by the batch)."""
        if mode is None:
            return np.zeros(0)
        if (mode, start) not in self._probes:
            model = (self.classifier if mode == "transfer" else
                     self.defended["bpda" if mode in self.trackers else mode])
            self._probes[mode, start] = attacks.input_gradient_norm(
                model, x[:5], y[:5],
                seed=[self.run.spec.seed * 1_000_003 + start, _PROBE_STREAM]).numpy()
        return self._probes[mode, start]


def _attack_batch(models: _Models, attack: str, budget: float, x_np, y_np, start: int,
                  memo: Optional[SearchMemo]) -> dict:
    """One batch of one cell: the attack on the defense (scored through a fresh
    projection) and on the classifier alone, the distortion, the gradient probe."""
    run, classifier = models.run, models.classifier
    norm, mode = ADAPTIVE_ATTACKS[attack].norm, ADAPTIVE_ATTACKS[attack].gradient
    t0 = time.monotonic()
    x, y = tf.constant(x_np), y_np.astype(np.int64)
    seed = run.spec.seed * 1_000_003 + start
    common = dict(classifier=classifier, generator=models.generator, seed=seed, memo=memo)
    x_adv, share = craft(attack, budget, run, x, y, model_fn=models.attacker(mode, seed),
                         start_projector=models.scorer, **common)
    # Transfer and latent attacks are crafted on the classifier alone already: their
    # undefended figure is that classifier on x_adv.
    plain = x_adv if mode in ("transfer", None) else craft(
        attack, budget, run, x, y, model_fn=classifier, start_projector=None, **common)[0]
    batch = {"ok": models.defended_correct(x_adv, y, seed),
             "ok_plain": np.argmax(classifier(plain), -1) == y,
             "distortion": np.float64(_distortion(norm, x_adv, x_np) * len(y)),
             "found": np.asarray([] if share is None else [share * len(y)]),
             "grads": models.probe(mode, start, x, y)}
    batch["seconds"] = np.float64(time.monotonic() - t0)
    return batch


def _measure_cell(models: _Models, attack: str, budget: float, key: str, x_all, y_all, *,
                  cache_dir: Optional[str], memo: Optional[SearchMemo],
                  deadline: Optional[float],
                  log: Callable[[str], None]) -> Optional[AttackCell]:
    """Every batch of one cell, each read from ``cache_dir/<key>/`` when an earlier
    sitting finished it (else attacked, then kept there); None when the ``deadline``
    (``time.monotonic()``) passed before a batch to attack."""
    norm = ADAPTIVE_ATTACKS[attack].norm
    batch_size = models.run.spec.batch_size
    cache = ResumableBatches(os.path.join(cache_dir, key) if cache_dir else None,
                             deadline=deadline)
    batches, starts = [], range(0, len(x_all), batch_size)
    for number, start in enumerate(starts, 1):
        def attack_batch():
            batch = _attack_batch(models, attack, budget, x_all[start:start + batch_size],
                                  y_all[start:start + batch_size], start, memo)
            if len(starts) > 1:
                log(f"  {attack} {norm} {budget}: batch {number}/{len(starts)} in "
                    f"{float(batch['seconds']):.0f} s")
            return batch

        try:
            batches.append(cache.get(f"batch_{start:06d}", attack_batch,
                                     required=_BATCH_FIELDS))
        except OutOfTime:
            log(f"{attack} {norm} {budget}: time budget spent at batch "
                f"{number}/{len(starts)}; run again to continue")
            return None
    n = len(x_all)
    ok = np.concatenate([b["ok"] for b in batches])
    found = [f for b in batches for f in np.asarray(b["found"]).tolist()]
    grads = [b["grads"] for b in batches if len(b["grads"])]
    return AttackCell(
        attack=attack, norm=norm, budget=float(budget), defended=accuracy_entry(ok),
        undefended=accuracy_entry(np.concatenate([b["ok_plain"] for b in batches])),
        correct=ok.tolist(),
        mean_distortion=sum(float(b["distortion"]) for b in batches) / n,
        gradient_norm=(gradient_norm_summary(np.concatenate(grads))["mean"]
                       if grads else None),
        seconds_per_image=sum(float(b["seconds"]) for b in batches) / n,
        found=float(sum(found) / n) if found else None)


def run_adaptive(run: AdaptiveRun, *, results_dir: str, classifier_dir: str,
                 data_dir: Optional[str] = None, command: str = "",
                 train_data: Optional[tuple] = None, test_data: Optional[tuple] = None,
                 cache_dir: Optional[str] = None,
                 time_budget_seconds: Optional[float] = None,
                 shard: Optional[Shard] = None,
                 claim_timeout: float = CLAIM_TIMEOUT_SECONDS,
                 log: Callable[[str], None] = echo) -> RunOutcome:
    """Runs every attack at every budget; writes one record per attack and budget
    (through :func:`~defense_gan_tf.records.runs.write_run_record`), the run's table
    (``adaptive_table_<run id>.md``) and ``robustness_curve_<run id>.png``; returns a
    ``RunOutcome`` whose result is an :class:`AdaptiveResult`.

    A cell whose record is already in ``results_dir`` with the same settings (from any
    run) is read back, not measured again (:func:`finished_cell`). With ``cache_dir``
    every finished batch of a cell is kept in ``cache_dir/<cell key>/`` (the key digests
    every setting the cell depends on), and a rerun continues from them; with
    ``time_budget_seconds`` no batch starts after that long, and the result says
    ``finished=False`` (the outcome's table is None then; a partial table and plot show
    the cells so far). A resumed batch's defended model draws its random starts afresh,
    so a resumed cell is a valid sample of the same attack but not bit-identical to an
    uninterrupted one.

    Several workers may share ``results_dir`` (and ``cache_dir``): the cells go in units
    (all budgets of an attack whose search serves every budget, else one cell), each
    worker takes its ``shard``'s units first, then the others', claiming a unit before it
    measures it (:mod:`defense_gan_tf.sharding`). Units other workers hold are left to
    them (``AdaptiveResult.held``); the worker that finds every cell recorded writes the
    table.
    """
    started = time.monotonic()
    spec = run.spec
    inputs = load_run_inputs(spec, results_dir=results_dir, classifier_dir=classifier_dir,
                             data_dir=data_dir, train_data=train_data, test_data=test_data,
                             log=log)
    models = _Models(run, inputs.generator, inputs.classifier)
    x_all, y_all = inputs.test_x, inputs.test_y
    settings = {**flat_settings(run), **inputs.record_fields(spec)}
    run_id = report.settings_id(settings)
    # One latent search (CW optimisation, FGSM gradient) per batch serves every budget of
    # that attack: its memo's key leaves the budget out.
    memos = {a: search_memo(cache_dir, settings, a) for a in run.attacks if a in _BUDGET_FREE}

    def recorded(attack: str, budget: float) -> Optional[tuple]:
        return finished_cell(results_dir, spec.dataset, attack, ADAPTIVE_ATTACKS[attack].norm,
                             budget, cell_key(settings, attack, budget), len(x_all))

    def measure(attack: str, budget: float) -> Optional[AttackCell]:
        norm, key = ADAPTIVE_ATTACKS[attack].norm, cell_key(settings, attack, budget)
        cell = _measure_cell(models, attack, budget, key, x_all, y_all,
                             cache_dir=cache_dir, memo=memos.get(attack), deadline=deadline,
                             log=log)
        if cell is not None:
            log(f"{attack} {norm} {budget}: Defense-GAN {cell.defended['accuracy']:.3f}, "
                f"no defense {cell.undefended['accuracy']:.3f} "
                f"({cell.seconds_per_image:.1f} s/image)")
            write_run_record(results_dir, "adaptive", f"{spec.dataset}_{attack}_{norm}{budget}",
                             settings, cell, command, extra={"cell_key": key}, table=False)
        return cell

    deadline = None if time_budget_seconds is None else started + time_budget_seconds
    claims = Claims(os.path.join(results_dir, ".claims"), timeout=claim_timeout)
    found, stopped, held = _measure_units(run, shard or Shard(), claims, run_id, recorded,
                                          measure, log)
    order = [(a, b) for a in run.attacks for b in run.budgets(a)]
    cells = [found[ab] for ab in order if ab in found]
    if stopped or held:  # stopped by the deadline, or the last cells are others' work
        return _stopped(run, cells, settings, run_id, results_dir, command, log,
                        held=0 if stopped else held)
    return _finished(models, cells, settings, run_id, x_all, y_all, results_dir, command,
                     log)


def cell_units(run: AdaptiveRun) -> list:
    """The run's cells in the units workers claim: [(attack, [budgets])], all budgets of
    an attack whose search serves every budget (:data:`_BUDGET_FREE`) in one unit."""
    units = []
    for attack in run.attacks:
        budgets = list(run.budgets(attack))
        units += ([(attack, budgets)] if attack in _BUDGET_FREE
                  else [(attack, [b]) for b in budgets])
    return units


def unit_claim_name(run_id: str, attack: str, budgets) -> str:
    """The name of a unit's claim (:func:`cell_units`)."""
    return f"{run_id}_{attack}_" + "_".join(f"{b:g}" for b in budgets)


def _measure_units(run: AdaptiveRun, shard: Shard, claims: Claims, run_id: str,
                   recorded: Callable, measure: Callable, log) -> tuple:
    """Measures the cells not recorded yet, by unit in ``shard``'s order, each under its
    claim: ({(attack, budget): AttackCell}, stopped by the deadline, cells left to other
    workers)."""
    units, found, held = cell_units(run), {}, 0
    for u in shard.order(len(units)):
        attack, budgets = units[u]
        todo = []
        for budget in budgets:
            done = recorded(attack, budget)
            if done is not None:
                found[(attack, budget)] = done[0]
                log(f"{attack} {ADAPTIVE_ATTACKS[attack].norm} {budget}: measured before "
                    f"with these settings ({os.path.basename(done[1])}): Defense-GAN "
                    f"{done[0].defended['accuracy']:.3f}")
            else:
                todo.append(budget)
        if not todo:
            continue
        claim = claims.claim(unit_claim_name(run_id, attack, budgets))
        if claim is None:
            log(f"{attack} {todo}: being measured by another worker; left to it")
            held += len(todo)
            continue
        with claim:
            for budget in todo:
                done = recorded(attack, budget)  # another worker may have measured it
                cell = done[0] if done is not None else measure(attack, budget)
                if cell is None:
                    return found, True, held
                found[(attack, budget)] = cell
    if held:  # measured by the others meanwhile?
        for attack, budgets in units:
            for budget in budgets:
                done = None if (attack, budget) in found else recorded(attack, budget)
                if done is not None:
                    found[(attack, budget)] = done[0]
                    held -= 1
    return found, False, held


def _partial_paths(results_dir: str, run_id: str) -> tuple:
    return (os.path.join(results_dir, f"adaptive_table_{run_id}.partial.md"),
            os.path.join(results_dir, f"robustness_curve_{run_id}.partial.png"))


def _stopped(run: AdaptiveRun, cells: list, settings: dict, run_id: str, results_dir: str,
             command: str, log: Callable[[str], None], held: int = 0) -> RunOutcome:
    """A run the time budget stopped, or whose last cells other workers measure
    (``held``): a partial table and plot of its cells so far (so a stopped run still
    shows its numbers), no run table."""
    partial_table, partial_plot = _partial_paths(results_dir, run_id)
    if not cells:
        return RunOutcome(json_path=None, table=None, result=AdaptiveResult(
            run_id=run_id, cells=[], finished=False, held=held))
    total = sum(len(run.budgets(a)) for a in run.attacks)
    worst = worst_case(cells)
    write_text(partial_table, adaptive_table(cells, worst, settings, command,
                                             partial=(len(cells), total)))
    plot_robustness(cells, worst, partial_plot,
                    title=f"partial: {len(cells)} of {total} cells")
    log(f"partial table ({len(cells)} of {total} cells): {partial_table}")
    return RunOutcome(json_path=partial_table, table=None, result=AdaptiveResult(
        run_id=run_id, cells=cells, finished=False, partial_table=partial_table,
        partial_plot=partial_plot, held=held))


def _finished(models: _Models, cells: list, settings: dict, run_id: str, x_all, y_all,
              results_dir: str, command: str, log: Callable[[str], None]) -> RunOutcome:
    """Every cell done: the sanity checks (recorded apart), the run's table and plot."""
    run = models.run
    for stale in _partial_paths(results_dir, run_id):
        if os.path.exists(stale):
            os.remove(stale)
    worst = worst_case(cells)
    sanity = []
    if run.sanity_images:
        n = min(run.sanity_images, len(x_all))
        sanity = sanity_checks(run, x_all[:n], y_all[:n], classifier=models.classifier,
                               defended_bpda=models.defended["bpda"],
                               defended_correct=models.defended_correct, cells=cells,
                               # the cheap attacker unless the run pays for plain BPDA
                               tracker=(None if "bpda_pgd" in run.attacks
                                        else models.trackers["track"]),
                               log=log)
        write_run_record(results_dir, "adaptive_sanity", run.spec.dataset, settings,
                         _SanityRecord(n, sanity), command, table=False)
    table = adaptive_table(cells, worst, settings, command, sanity)
    table_path = write_text(os.path.join(results_dir, f"adaptive_table_{run_id}.md"), table)
    plot_robustness(cells, worst, os.path.join(results_dir,
                                               f"robustness_curve_{run_id}.png"))
    return RunOutcome(json_path=table_path, table=table, result=AdaptiveResult(
        run_id=run_id, cells=cells, finished=True, worst_case=worst, sanity=sanity))


def adaptive_table(cells: list, worst: dict, settings: dict, command: str,
                   sanity: Optional[list] = None, partial: Optional[tuple] = None) -> str:
    """Markdown: attack x budget with 95% intervals, distortion, gradient norm and cost,
    then the worst case per budget, the sanity checks and the command.

    ``partial`` = (cells done, cells in the run) marks a stopped run's table: its worst
    case covers only the attacks finished so far, so it can only fall when the rest run.
    """
    def cell_text(e):
        return f"{e['accuracy']:.3f} [{e['ci95'][0]:.2f}, {e['ci95'][1]:.2f}]"

    proj = settings["projection"]
    lines = [f"# Adaptive attacks ({settings['dataset']}, classifier {settings['model']}, "
             f"Defense-GAN-{'Rec' if settings['train_on_recs'] else 'Orig'} at "
             f"L={proj['iterations']}, R={proj['restarts']}, "
             f"{settings['num_tests']} test images, generator iterations "
             f"{settings['generator_iterations']})", "",
             f"BPDA attacks project with L={settings.get('attack_iterations') or proj['iterations']}"
             f", R={settings.get('attack_restarts') or proj['restarts']} in their forward "
             "passes" + (f" (the tracking attacks in their first; later steps descend "
                         f"{settings['track_steps']} steps from the previous z*)"
                         if any(ADAPTIVE_ATTACKS[c.attack].gradient in ("track", "track_eot")
                                for c in cells) else "")
             + (f"; EOT attacks average {settings['eot_samples']} draws per step"
                if any(_family(c.attack) == "eot" for c in cells) else "")
             + "; every adversarial image is scored through a fresh projection of the "
             "defense.", "",
             *([f"**Partial: {partial[0]} of {partial[1]} cells.** The run stopped "
                "(time budget); the same command continues it. The worst case below "
                "covers only the attacks finished so far, an upper bound on the final "
                "one; no sanity checks yet.", ""] if partial else []),
             "| attack | norm | budget | Defense-GAN | no defense | mean distortion | "
             "input-gradient norm | found | s / image |", "|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        grad = "-" if c.gradient_norm is None else f"{c.gradient_norm:.3g}"
        found = "-" if c.found is None else f"{c.found:.2f}"
        lines.append(f"| {c.attack} | {c.norm} | {c.budget:g} | {cell_text(c.defended)} | "
                     f"{cell_text(c.undefended)} | {c.mean_distortion:.4g} | {grad} | "
                     f"{found} | {c.seconds_per_image:.1f} |")
    lines += ["", "Worst case (an image is robust only if every attack at the budget failed"
              + ("; attacks finished so far" if partial else "") + "):",
              "", "| norm | budget | Defense-GAN |", "|---|---|---|"]
    lines += [f"| {norm} | {budget:g} | {cell_text(e)} |" for (norm, budget), e in worst.items()]
    if sanity:
        lines += ["", "Sanity checks (Carlini et al. 2019):", "",
                  "| check | passed | figures |", "|---|---|---|"]
        for c in sanity:
            figures = []
            for key in ("accuracy", "accuracy_double_steps"):
                if key in c:
                    figures.append(f"{key.replace('_', ' ')} {cell_text(c[key])}")
            if "max_abs_difference" in c:
                figures.append(f"max difference {c['max_abs_difference']:.2g}, same labels "
                               f"{c['same_labels']}")
            lines.append(f"| {c['description']} | {'yes' if c['passed'] else '**no**'} | "
                         f"{'; '.join(figures)} |")
    lines += ["", f"`{command}`", ""]
    return "\n".join(lines)


def plot_robustness(cells: list, worst: dict, path: str, title: str = "") -> str:
    """Accuracy against budget, one line per attack and the worst case, per norm; dotted
    lines for the undefended classifier; ``title`` is added to the figure's title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    norms = sorted({c.norm for c in cells})
    fig = Figure(figsize=(5 * len(norms), 4), dpi=100)
    FigureCanvasAgg(fig)
    markers = "osD^v<>pPXh*"
    for i, norm in enumerate(norms):
        ax = fig.add_subplot(1, len(norms), i + 1)
        attacks = sorted({c.attack for c in cells if c.norm == norm})
        for k, attack in enumerate(attacks):
            pts = sorted((c.budget, c) for c in cells if c.norm == norm and c.attack == attack)
            b = [p[0] for p in pts]
            # Series that coincide (several attacks leave the undefended classifier at 0)
            # stay visible: each has its own marker, drawn smaller the later it comes.
            marker, size = markers[k % len(markers)], 4 + 2.5 * (len(attacks) - k)
            line, = ax.plot(b, [p[1].defended["accuracy"] for p in pts], "-", marker=marker,
                            markersize=size, markerfacecolor="none", label=attack)
            ax.plot(b, [p[1].undefended["accuracy"] for p in pts], ":", marker=marker,
                    markersize=size, markerfacecolor="none", color=line.get_color())
        w = [(budget, e["accuracy"]) for (n, budget), e in worst.items() if n == norm]
        ax.plot([p[0] for p in w], [p[1] for p in w], "k-", lw=2.5,
                label="worst case (Defense-GAN)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel({"linf": "L-infinity eps", "l2": "L2 eps",
                       "mse": "MSE per pixel"}[norm])
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Defense-GAN under adaptive attacks (dotted: no defense)"
                 + (f" [{title}]" if title else ""))
    fig.tight_layout()
    fig.savefig(path)
    return path
