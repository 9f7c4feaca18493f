"""The black-box workflow behind ``bin/blackbox.py`` (paper section 4.1, Tables 1-3).

The black-box model (defended or not) is an oracle queried for labels only.
The attacker trains a substitute on a held-out seed set grown by Jacobian-based
augmentation (Papernot et al. 2017), crafts FGSM on the substitute (using the
substitute's own predictions: the attacker has no test labels) and transfers
the examples to the oracle.

Everything before the FGSM step (the substitute, its oracle queries and the oracle's
labels of the clean test images) does not depend on the FGSM epsilon, so it is cached
in ``<classifier_dir>/substitutes`` and reused by runs that differ only in epsilon (the
paper's Table 2 sweep). A Defense-GAN oracle's random-start stream is restored to where
the first run left it, so a reused substitute gives the figures a fresh run would.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import time
from typing import Callable, Optional

import numpy as np

from defense_gan_tf import attacks
from defense_gan_tf.console import echo
from defense_gan_tf.defense import DefendedClassifier
from defense_gan_tf.defense.magnet import load_magnet
from defense_gan_tf.atomic import replacing
from defense_gan_tf.batch_cache import load_batch, save_batch
from defense_gan_tf.records import report
from defense_gan_tf.records.loading import load_run_inputs
from defense_gan_tf.records.runs import (BlackboxResult, RunOutcome, flat_settings,
                                         write_run_record)
from defense_gan_tf.records.specs import BlackboxRun
from defense_gan_tf.metrics.stats import accuracy_entry
from defense_gan_tf.models import build_classifier
from defense_gan_tf.plots import save_image_grid


PROGRESS_SECONDS = 60.0  # at most one progress line per this many seconds of labelling
SUBSTITUTE_CACHE_VERSION = 1  # bump when what a cached substitute holds changes


def run_blackbox(run: BlackboxRun, *, results_dir: str, classifier_dir: str,
                 data_dir: Optional[str] = None, command: str = "",
                 train_data: Optional[tuple] = None, test_data: Optional[tuple] = None,
                 log: Callable[[str], None] = echo) -> RunOutcome:
    """Runs one black-box evaluation; writes its JSON and rebuilds blackbox_table.md.

    Returns:
      A :class:`RunOutcome` whose result is a :class:`BlackboxResult`.

    Raises:
      InputError: an output folder is a file or not writable, a model file is
        missing, corrupt or of the wrong kind, or holdout + num_tests exceed the
        test split; all before any training or querying.
    """
    spec = run.spec
    inputs = load_run_inputs(spec, results_dir=results_dir, classifier_dir=classifier_dir,
                             data_dir=data_dir, train_data=train_data, test_data=test_data,
                             test_start=run.holdout, test_start_name="holdout", log=log)
    seed_x = inputs.test_split[0][:run.holdout]
    eval_x, eval_y = inputs.test_x, inputs.test_y
    oracle = _oracle(spec, inputs.classifier, inputs.generator)
    oracle_labels = _labeller(oracle, spec.batch_size, log)
    t0 = time.monotonic()
    loaded = inputs.record_fields(spec)
    cache = SubstituteCache(run, loaded, inputs.classifier, classifier_dir)
    sub = _substitute(run, cache, oracle, oracle_labels, seed_x, log)
    # A resumed training counts the time its interrupted calls spent too.
    t0 -= 0.0 if sub.reused else sub.result.earlier_seconds
    lo, hi = spec.pixel_range
    adv = np.concatenate([attacks.fgsm(sub.result.substitute, eval_x[s:s + spec.batch_size],
                                       eps=spec.attack.eps, clip_min=lo, clip_max=hi).numpy()
                          for s in range(0, len(eval_x), spec.batch_size)])
    if sub.clean_pred is None:
        sub.clean_pred = oracle_labels(eval_x)
        sub.draws_after_clean = _draws(oracle)
        cache.save(sub)
    else:
        _resume(oracle, sub.draws_after_clean)
    clean_pred, adv_pred = sub.clean_pred, oracle_labels(adv)
    sub_pred = np.argmax(sub.result.substitute.predict(eval_x, verbose=0), axis=1)
    result = BlackboxResult(
        clean=accuracy_entry(clean_pred == eval_y),
        adversarial=accuracy_entry(adv_pred == eval_y),
        substitute_accuracy=float(np.mean(sub_pred == eval_y)),
        substitute_agreement=sub.result.agreement,
        substitute_set_sizes=sub.result.set_sizes,
        oracle_queries=sub.result.queries,
        linf_mean=float(np.abs(adv - eval_x).reshape(len(adv), -1).max(axis=1).mean()),
        substitute_seconds=sub.seconds,
        substitute_reused=sub.reused,
        seconds=time.monotonic() - t0,
        magnet=_magnet_rejections(oracle, eval_x, adv, adv_pred == eval_y)
        if spec.defense_type == "magnet" else None)
    settings = {**flat_settings(run), **loaded}
    _save_grid(eval_x, adv, eval_y, clean_pred, adv_pred, (lo, hi),
               os.path.join(results_dir, f"blackbox_{run.name()}_"
                                         f"{report.settings_id(settings)}_grid.png"))
    log(f"black box {spec.model} ({spec.defense_type}): clean "
        f"{result.clean['accuracy']:.3f}, adversarial {result.adversarial['accuracy']:.3f}, "
        f"{sub.result.queries} queries")
    return write_run_record(results_dir, "blackbox", run.name(), settings, result, command)


def _oracle(spec, black_box, generator):
    """The black box as the attacker queries it: the classifier behind the defense."""
    if spec.defense_type == "defense_gan":
        return DefendedClassifier(black_box, generator, spec.projection, gradient="none",
                                  draw_seed=spec.seed * 2 + 1)
    if spec.defense_type == "magnet":  # labels of the reformed images
        return load_magnet(spec.magnet, black_box)
    return black_box


def _labeller(oracle, batch_size: int, log: Callable[[str], None]) -> Callable:
    """images -> the oracle's labels, in batches; a Defense-GAN oracle projects every
    query (about a second each here), so progress is reported at most once a minute."""
    def oracle_labels(x):
        out, t_call = [], time.monotonic()
        t_said = t_call
        for start in range(0, len(x), batch_size):
            out.append(np.argmax(np.asarray(oracle(x[start:start + batch_size])), axis=1))
            done = min(start + batch_size, len(x))
            if time.monotonic() - t_said >= PROGRESS_SECONDS and done < len(x):
                rate = done / max(time.monotonic() - t_call, 1e-9)
                log(f"  oracle: {done}/{len(x)} labelled, {rate:.2f} img/s, ETA "
                    f"{(len(x) - done) / rate:.0f} s")
                t_said = time.monotonic()
        return np.concatenate(out) if out else np.zeros(0, np.int64)
    return oracle_labels


def _substitute(run: BlackboxRun, cache, oracle, oracle_labels, seed_x,
                log: Callable[[str], None]):
    """The substitute of ``run``: from the cache (the oracle's draw counter moved to
    where its training left it), else trained (resuming an interrupted training's
    labels) and cached."""
    spec = run.spec

    def build():
        return build_classifier(run.substitute_model, input_shape=seed_x.shape[1:],
                                seed=spec.seed)

    sub = cache.load(build, log)
    if sub is not None:
        _resume(oracle, sub.draws_after_training)
        return sub
    t0 = time.monotonic()
    trained = attacks.train_substitute(
        oracle_labels, seed_x, build, rounds=run.data_aug, lmbda=run.lmbda,
        flip_every=run.flip_every, epochs=run.epochs_substitute, seed=spec.seed,
        progress_path=cache.progress_path, label_chunk=spec.batch_size,
        oracle_position=(lambda: _draws(oracle), lambda n: _resume(oracle, n)), log=log)
    sub = CachedSubstitute(trained, time.monotonic() - t0 + trained.earlier_seconds,
                           _draws(oracle))
    cache.save(sub)
    return sub


def _save_grid(eval_x, adv, eval_y, clean_pred, adv_pred, pixel_range, path) -> None:
    """The first images, clean and adversarial, marked with the oracle's labels (red and
    framed when wrong)."""
    n = min(10, len(eval_x))
    if not n:
        return
    shown = np.concatenate([clean_pred[:n], adv_pred[:n]])
    save_image_grid(np.concatenate([eval_x[:n], adv[:n]]), path, columns=n,
                    pixel_range=pixel_range, row_labels=["clean", "adversarial"],
                    cell_labels=[str(k) for k in shown],
                    cell_wrong=shown != np.tile(eval_y[:n], 2))


def _draws(oracle) -> int:
    """Where a Defense-GAN oracle's random-start stream stands (0 for other oracles)."""
    return oracle.draws if isinstance(oracle, DefendedClassifier) else 0


def _resume(oracle, draws: int) -> None:
    """Moves a Defense-GAN oracle's random-start stream to ``draws`` (others have none)."""
    if isinstance(oracle, DefendedClassifier):
        oracle.draws = draws


@dataclasses.dataclass
class CachedSubstitute:
    """A trained substitute with what a later run at another epsilon needs to continue
    exactly where this one was: the oracle's random-start position after training and,
    once labelled, the oracle's clean test labels and its position after them."""

    result: attacks.SubstituteResult
    seconds: float
    draws_after_training: int
    clean_pred: Optional[np.ndarray] = None
    draws_after_clean: int = 0
    reused: bool = False


class SubstituteCache:
    """Substitutes on disk, keyed by every setting of a black-box run but the attack and by
    the digests of the models it loaded; no folder, no cache."""

    def __init__(self, run: BlackboxRun, loaded: dict, classifier,
                 classifier_dir: Optional[str]):
        """``loaded``: the run record's digests of what was loaded
        (``RunInputs.record_fields``); ``classifier``: the black box itself."""
        from defense_gan_tf.models.saving import weights_digest

        self.stem = None
        if not classifier_dir:
            return
        settings = flat_settings(run)
        settings.pop("attack")
        key = {"version": SUBSTITUTE_CACHE_VERSION, "settings": settings,
               "loaded": loaded, "classifier_weights": weights_digest(classifier)}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode())
        self.stem = f"{_named_stem(run, classifier_dir)}_{digest.hexdigest()[:12]}"

    @property
    def progress_path(self) -> Optional[str]:
        """Where an interrupted training of this substitute keeps its oracle labels."""
        return None if self.stem is None else self.stem + ".progress.npz"

    def save(self, sub: CachedSubstitute) -> None:
        """Writes the substitute's weights, then its record (the record marks it whole)."""
        if self.stem is None:
            return
        os.makedirs(os.path.dirname(self.stem), exist_ok=True)
        if not sub.reused:
            with replacing(self.stem + ".weights.h5") as tmp:
                sub.result.substitute.save_weights(tmp)
        arrays = dict(queries=sub.result.queries, set_sizes=np.asarray(sub.result.set_sizes),
                      agreement=np.asarray(sub.result.agreement), seconds=sub.seconds,
                      draws_after_training=sub.draws_after_training)
        if sub.clean_pred is not None:
            arrays.update(clean_pred=sub.clean_pred, draws_after_clean=sub.draws_after_clean)
        save_batch(self.stem + ".npz", **arrays)

    def load(self, build: Callable, log: Callable[[str], None]
             ) -> Optional[CachedSubstitute]:
        """The cached substitute, or None when there is none or it cannot be read."""
        if self.stem is None:
            return None
        record = load_batch(self.stem + ".npz", required=(
            "queries", "set_sizes", "agreement", "seconds", "draws_after_training"))
        if record is None or not os.path.isfile(self.stem + ".weights.h5"):
            return None
        substitute = build()
        try:
            substitute.load_weights(self.stem + ".weights.h5")
        except (OSError, ValueError) as e:
            log(f"substitute cache {self.stem}.weights.h5 unreadable ({e}); training again")
            return None
        result = attacks.SubstituteResult(substitute, int(record["queries"]),
                                          [int(v) for v in record["set_sizes"]],
                                          [float(v) for v in record["agreement"]])
        clean = record.get("clean_pred")
        log(f"substitute: reusing the one trained for these settings at another epsilon "
            f"({self.stem}; {result.queries} oracle queries, trained in "
            f"{float(record['seconds']) / 60:.1f} min)")
        return CachedSubstitute(result, float(record["seconds"]),
                                int(record["draws_after_training"]),
                                None if clean is None else clean.astype(np.int64),
                                int(record.get("draws_after_clean", 0)), reused=True)


def substitute_cache_status(run: BlackboxRun, classifier_dir: Optional[str]
                            ) -> tuple[bool, int]:
    """For estimates: whether a substitute for ``run`` at any epsilon is cached in
    ``classifier_dir``, and how many oracle labels an interrupted training of it kept.

    Files are matched by the run's readable name alone; the digest of the models they
    were made with is not checked (that needs the black box loaded), so a substitute of
    an earlier classifier with the same settings counts too."""
    if not classifier_dir:
        return False, 0
    stem = glob.escape(_named_stem(run, classifier_dir))
    done = any(os.path.isfile(p[:-len(".weights.h5")] + ".npz")
               for p in glob.glob(stem + "_*.weights.h5"))
    labelled = 0
    for path in glob.glob(stem + "_*.progress.npz"):
        saved = load_batch(path, keys=("labels",), required=("labels",))  # not the images
        if saved:
            labelled = max(labelled, len(saved["labels"]))
    return done, labelled


def _named_stem(run: BlackboxRun, classifier_dir: str) -> str:
    """A substitute's cache files without their digest: named by every setting but the
    epsilon, so runs that differ only in epsilon share them."""
    name = run.name().replace(f"eps{run.spec.attack.eps}_", "")
    return os.path.join(classifier_dir, "substitutes", name)


def _magnet_rejections(magnet, clean: np.ndarray, adversarial: np.ndarray,
                       correct: np.ndarray) -> dict:
    """MagNet's rejection rates and the accuracy counting rejected inputs as defended."""
    rejected = magnet.rejected(adversarial)
    return {"clean_rejection_rate": float(magnet.rejected(clean).mean()),
            "adversarial_rejection_rate": float(rejected.mean()),
            "adversarial_defended_counting_detections": accuracy_entry(correct | rejected)}
