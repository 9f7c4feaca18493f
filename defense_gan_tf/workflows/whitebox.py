"""White-box evaluation (paper section 4.2, Table 3 layout; Figure 4 for detection).

The attacker differentiates through whatever model it is given: the
undefended classifier, the adversarially trained one, or the classifier behind
the Defense-GAN projection. Next to each accuracy the result records the mean
norm of the loss gradient that reaches the input, so that gradient masking
(vanishing gradients through the unrolled projection) is visible, not hidden.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from defense_gan_tf import attacks
from defense_gan_tf.batch_cache import ResumableBatches, in_turn
from defense_gan_tf.config import WHITEBOX_ATTACKS, AttackConfig
from defense_gan_tf.console import echo
from defense_gan_tf.metrics.detection import roc_curve
from defense_gan_tf.records.runs import AttackResult
from defense_gan_tf.metrics.stats import accuracy_entry, gradient_norm_summary
from defense_gan_tf.sharding import Shard


def make_attack(config: AttackConfig, clip_min: float, clip_max: float,
                seed: Optional[int] = None) -> Callable:
    """``attack(model_fn, x, y) -> x_adv`` for the configured attack (paper section 4)."""
    algorithm = WHITEBOX_ATTACKS[config.attack_type].algorithm
    settings = {
        "fgsm": lambda: dict(eps=config.eps),
        "rand_fgsm": lambda: dict(eps=config.eps, alpha=config.alpha, seed=seed),
        "pgd": lambda: dict(eps=config.eps, step_size=config.pgd_step_size,
                            iterations=config.pgd_iterations, seed=seed),
        "cw": lambda: dict(binary_search_steps=config.cw_binary_steps,
                           max_iterations=config.cw_iterations,
                           learning_rate=config.cw_learning_rate,
                           initial_const=config.cw_initial_const,
                           confidence=config.cw_confidence),
    }[algorithm]()
    return lambda f, x, y: attacks.perturb(algorithm, f, x, y=y, clip_min=clip_min,
                                           clip_max=clip_max, **settings)


def evaluate_whitebox(model_fn: Callable, images: np.ndarray, labels: np.ndarray,
                      attack: AttackConfig, *, clip_min: float = 0.0, clip_max: float = 1.0,
                      batch_size: int = 20, seed: Optional[int] = None,
                      score_fn: Optional[Callable] = None, gradient_norm_images: int = 20,
                      log: Optional[Callable[[str], None]] = None,
                      batches: Optional[ResumableBatches] = None,
                      streams: Sequence = (),
                      shard: Optional[Shard] = None) -> AttackResult:
    """Attacks ``model_fn`` on (images, labels) and measures accuracy before and after.

    Args:
      model_fn: images -> logits; the model the attacker differentiates.
      images, labels: test data.
      attack: which attack and its settings.
      clip_min, clip_max: the data range.
      batch_size: images per attack call.
      seed: seeds random parts of the attacks.
      score_fn: images -> (logits, per-image detection score or None: Defense-GAN's
        reconstruction error, 1.0 where MagNet's detectors reject): the model the
        clean and adversarial images are scored on (default: ``model_fn``, no score).
        With scores, the detection ROC of clean vs adversarial ones is computed.
      gradient_norm_images: the input-gradient norm is measured on the first
        this many images (one more backward pass).
      log: progress output.
      batches: keeps every finished batch (a CW-L2 cell through the projection runs for
        a day on a CPU): an interrupted evaluation continues from them; None keeps none.
      streams: the models whose random draws (``DefendedClassifier.draws``) a batch
        uses: batch b draws from position ``b * DRAW_STRIDE`` of each, so a resumed or
        shared evaluation draws what an uninterrupted one draws.
      shard: this worker's share when several share ``batches``' folder (with claims):
        its batches first, then the others', then it waits for those others hold.

    Returns:
      An :class:`AttackResult`: clean and adversarial accuracy entries, the input
      gradient's L2 norm on clean images (mean over the finite norms, median, the count
      that overflowed), distortions, ``seconds`` (the batches' own, earlier sittings'
      included), ``detection`` (AUC, raw errors) when ``score_fn`` gives errors, and the
      first batch's ``adversarial_examples`` for figures.
    """
    log = log or echo
    score_fn = score_fn or (lambda x: (model_fn(x), None))
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels).astype(np.int64)
    run_attack = make_attack(attack, clip_min, clip_max, seed)
    batches = batches or ResumableBatches(None)
    starts = list(range(0, len(images), batch_size))
    done, t0 = [], time.monotonic()

    def batch(b: int, wait: bool):
        start = starts[b]
        x, y = images[start:start + batch_size], labels[start:start + batch_size]

        def compute():
            for model in streams:  # batch b's own stretch of each random stream
                model.draws = b * DRAW_STRIDE
            t = time.monotonic()
            out = _attack_batch(model_fn, score_fn, run_attack, x, y,
                                max(0, min(len(x), gradient_norm_images - start)))
            _check_stride(streams, b)
            out["x_adv"] = out["x_adv"] if start == 0 else out["x_adv"][:0]
            out["seconds"] = np.float64(time.monotonic() - t)
            return out
        out = batches.get(f"batch_{start:06d}", compute, required=_BATCH_KEYS, wait=wait)
        if out is not None:
            done.append(out)
            _say_progress(log, done, len(images), t0)
        return out

    # this worker's share, the others'; then what other workers held
    outs = in_turn((shard or Shard()).order(len(starts)), batch)
    for model in streams:  # past every batch's stretch, whichever worker ran which
        model.draws = len(starts) * DRAW_STRIDE
    parts = {k: [np.asarray(o[k]) for o in outs] for k in _BATCH_KEYS}
    seconds = float(sum(np.sum(s) for s in parts.pop("seconds")))
    if not all(len(e) for e in parts["clean_err"]):  # no detection score
        parts["clean_err"], parts["adv_err"] = [], []
    first_adv = np.asarray(outs[0]["x_adv"]) if outs else None
    return _attack_result(parts, first_adv, seconds, len(images))


# Batch b of an evaluation draws its projections' random starts from positions
# b * DRAW_STRIDE on of each defense's stream (DefendedClassifier.draws), so that its
# results do not depend on which batches ran before it, or where: a resumed or shared
# evaluation gives what one uninterrupted run gives. A batch makes one draw per call of
# the defense (CW-L2: binary steps x iterations, some thousands).
DRAW_STRIDE = 100_000


def _check_stride(streams, b: int) -> None:
    for model in streams:
        if model.draws > (b + 1) * DRAW_STRIDE:
            raise RuntimeError(f"batch {b} made {model.draws - b * DRAW_STRIDE} draws of "
                               f"the defense's random starts, more than DRAW_STRIDE "
                               f"({DRAW_STRIDE}); use smaller batches")


def _say_progress(log, done_batches: list, total: int, t0: float) -> None:
    clean = np.concatenate([o["clean_ok"] for o in done_batches])
    adversarial = np.concatenate([o["adv_ok"] for o in done_batches])
    done = len(clean)
    rate = done / max(time.monotonic() - t0, 1e-9)
    log(f"[{done}/{total}] {rate:.2f} img/s  clean acc {clean.mean():.3f}  adversarial acc "
        f"{adversarial.mean():.3f}  ETA {(total - done) / rate:.0f} s")


# The arrays of one finished batch, as kept on disk.
_BATCH_KEYS = ("clean_ok", "adv_ok", "grad_norms", "linf", "l2", "clean_err", "adv_err",
               "seconds")


def _attack_batch(model_fn, score_fn, run_attack, x: np.ndarray, y: np.ndarray,
                  norm_images: int) -> dict:
    """One batch: clean and adversarial correctness, the input-gradient norms of its
    first ``norm_images``, distortions, detection scores (empty without), ``x_adv``."""
    x, y = tf.constant(x), tf.constant(y)
    truth = y.numpy()
    logits, errors = score_fn(x)
    grad_norms = (attacks.input_gradient_norm(model_fn, x[:norm_images], y[:norm_images])
                  .numpy() if norm_images else np.zeros(0, np.float32))
    x_adv = run_attack(model_fn, x, y)
    adv_logits, adv_errors = score_fn(x_adv)
    delta = (x_adv - x).numpy().reshape(len(x), -1)
    empty = np.zeros(0, np.float32)
    return {"clean_ok": np.argmax(np.asarray(logits), axis=1) == truth,
            "adv_ok": np.argmax(np.asarray(adv_logits), axis=1) == truth,
            "grad_norms": grad_norms, "linf": np.abs(delta).max(axis=1),
            "l2": np.sqrt((delta ** 2).sum(axis=1)),
            "clean_err": empty if errors is None else np.asarray(errors),
            "adv_err": empty if adv_errors is None else np.asarray(adv_errors),
            "x_adv": x_adv.numpy()}


def _attack_result(parts: dict, first_adv, seconds: float, n: int) -> AttackResult:
    """The AttackResult of the per-batch lists in ``parts`` (see evaluate_whitebox)."""
    joined = {k: np.concatenate(v) for k, v in parts.items() if v}
    detection = None
    if "clean_err" in joined:
        roc = roc_curve(joined["clean_err"], joined["adv_err"])
        detection = {"auc": roc.auc, "clean_errors": joined["clean_err"].tolist(),
                     "adversarial_errors": joined["adv_err"].tolist(),
                     "adversarial_correct": joined["adv_ok"].tolist()}
    norms = gradient_norm_summary(joined.get("grad_norms", np.zeros(0)))
    return AttackResult(
        clean=accuracy_entry(joined["clean_ok"]),
        adversarial=accuracy_entry(joined["adv_ok"]),
        gradient_norm_mean=norms["mean"],
        gradient_norm_zero_fraction=norms["zero_fraction"],
        gradient_norm_images=norms["n"],
        gradient_norm_median=norms["median"],
        gradient_norm_nonfinite=norms["nonfinite"],
        linf_mean=float(joined["linf"].mean()),
        l2_mean=float(joined["l2"].mean()),
        seconds=seconds,
        images_per_second=n / max(seconds, 1e-9),
        detection=detection,
        adversarial_examples=first_adv)
