"""The white-box workflow behind ``bin/whitebox.py``: data, classifier, defense, attack, report."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

import numpy as np

from defense_gan_tf.batch_cache import ResumableBatches
from defense_gan_tf.console import echo
from defense_gan_tf.defense import DefendedClassifier
from defense_gan_tf.defense.magnet import MagNet, load_magnet
from defense_gan_tf.records import report
from defense_gan_tf.metrics.detection import plot_roc, roc_curve
from defense_gan_tf.records.loading import load_run_inputs
from defense_gan_tf.records.runs import (RunOutcome, RunSpec, flat_settings,
                                         write_run_record)
from defense_gan_tf.metrics.stats import accuracy_entry
from defense_gan_tf.models.saving import weights_digest
from defense_gan_tf.records.specs import WhiteboxRun
from defense_gan_tf.sharding import CLAIM_TIMEOUT_SECONDS, Shard
from defense_gan_tf.workflows.whitebox import evaluate_whitebox
from defense_gan_tf.plots import save_image_grid


def run_whitebox(run: WhiteboxRun, *, results_dir: str, classifier_dir: str,
                 data_dir: Optional[str] = None, command: str = "",
                 train_data: Optional[tuple] = None, test_data: Optional[tuple] = None,
                 cache_dir: Optional[str] = None, shard: Optional[Shard] = None,
                 claim_timeout: float = CLAIM_TIMEOUT_SECONDS,
                 log: Callable[[str], None] = echo) -> RunOutcome:
    """Runs one white-box evaluation and writes its JSON, table and figures.

    Args:
      run: the settings.
      results_dir: where ``whitebox_<name>_<id>.json``, ``whitebox_table.md`` and PNGs go.
      classifier_dir: cache of trained classifiers and reconstructions.
      data_dir: local IDX folder.
      command: the command line, recorded next to the numbers.
      train_data, test_data: (images, labels) to use instead of loading (test seam).
      cache_dir: every finished batch is kept in ``cache_dir/<run>/`` (the run's name,
        settings digest and classifier weights' digest), so an interrupted run continues
        after its last finished batch with the results an uninterrupted one gives; None
        keeps nothing.
      shard: this worker's share when several run this same evaluation into one
        ``cache_dir`` (and ``classifier_dir``): they split its batches (each claimed,
        this worker's share first, then the others', then it waits for those held),
        train the classifier once, and each ends by writing the same record.
      claim_timeout: seconds after which a claim whose worker stopped is taken over.
      log: progress output.

    Returns:
      A :class:`RunOutcome` whose result is an :class:`AttackResult`.

    Raises:
      InputError: an output folder is a file or not writable, a model file is
        missing, corrupt or of the wrong kind, or more images are asked for than
        the splits hold; all before any attack runs.
    """
    spec = run.spec
    shared = shard is not None and shard.count > 1
    inputs = load_run_inputs(spec, results_dir=results_dir, classifier_dir=classifier_dir,
                             data_dir=data_dir, train_data=train_data, test_data=test_data,
                             log=log, claim_timeout=claim_timeout if shared else None)
    generator, classifier = inputs.generator, inputs.classifier
    test_x, test_y = inputs.test_x, inputs.test_y
    model_fn, score_fn, scorer, streams = classifier, None, None, ()
    if spec.defense_type == "defense_gan":
        # Fresh starts on every call (unless same_init), drawn from seeded streams.
        seed = spec.seed if run.same_init else None
        model_fn = DefendedClassifier(classifier, generator, spec.projection,
                                      gradient=run.gradient, seed=seed,
                                      draw_seed=spec.seed * 2 + 1)
        scorer = DefendedClassifier(classifier, generator, spec.projection, gradient="none",
                                    seed=seed, draw_seed=spec.seed * 2 + 2)
        score_fn = _scores_with_errors(scorer)
        streams = (model_fn, scorer)
    elif spec.defense_type == "magnet":
        # White box through the reformer (the detectors are not differentiated);
        # adversarial images the detectors reject are reported apart.
        model_fn = load_magnet(spec.magnet, classifier)
        score_fn = _scores_with_rejections(model_fn)
    lo, hi = spec.pixel_range
    settings = {**flat_settings(run), **inputs.record_fields(spec)}
    name = f"whitebox_{run.name()}_{report.settings_id(settings)}"
    # The classifier by its weights too: a cached one may be trained again.
    folder = (os.path.join(cache_dir, f"{name}_{weights_digest(classifier)[:12]}")
              if cache_dir else None)
    batches = ResumableBatches(folder, claim_timeout=claim_timeout if shared else None)
    result = evaluate_whitebox(model_fn, test_x, test_y, spec.attack, clip_min=lo,
                               clip_max=hi, batch_size=spec.batch_size, seed=spec.seed,
                               score_fn=score_fn, log=log, batches=batches, streams=streams,
                               shard=shard)
    if batches.loaded:
        log(f"{batches.loaded} batch(es) read back from {batches.folder}")
    if spec.defense_type == "magnet":
        result = dataclasses.replace(result, magnet=magnet_summary(result.detection))
    stem = os.path.join(results_dir, name)
    _figures(stem, spec, test_x, test_y, result, model_fn, scorer, (lo, hi))
    return write_run_record(results_dir, "whitebox", run.name(), settings, result, command)


def _scores_with_errors(scorer: DefendedClassifier):
    """images -> (logits, reconstruction errors) from one projection."""
    def score(x):
        logits, projection = scorer.call_with_details(x)
        return logits, projection.error
    return score


def _scores_with_rejections(magnet: MagNet):
    """images -> (logits after reforming, 1.0 where MagNet's detectors reject)."""
    def score(x):
        return magnet(x), magnet.rejected(np.asarray(x)).astype(np.float32)
    return score


def magnet_summary(detection: dict) -> dict:
    """Rejection rates and the accuracy that counts a rejected adversarial input as
    defended, from the per-image flags (``evaluate_whitebox``'s detection entry)."""
    clean = np.asarray(detection["clean_errors"]) > 0.5
    adversarial = np.asarray(detection["adversarial_errors"]) > 0.5
    correct = np.asarray(detection["adversarial_correct"], bool)
    return {"clean_rejection_rate": float(clean.mean()),
            "adversarial_rejection_rate": float(adversarial.mean()),
            "adversarial_defended_counting_detections": accuracy_entry(correct | adversarial)}


def _figures(stem: str, spec: RunSpec, test_x, test_y, result, model_fn, scorer,
             pixel_range) -> None:
    """The image grid (clean, adversarial and, when defended, their reconstructions),
    each clean and adversarial image marked with the class the evaluated model gave it
    (red and framed when wrong), and, for Defense-GAN, the detection ROC curve."""
    adv = result.adversarial_examples
    n = min(10, len(test_x), len(adv))
    columns = max(n, 1)
    clean, adv = test_x[:n], adv[:n]
    if scorer is None:
        predicted = [np.argmax(np.asarray(model_fn(x)), axis=1) for x in (clean, adv)]
        rows, labels = np.concatenate([clean, adv]), np.concatenate(predicted)
        save_image_grid(rows, f"{stem}_grid.png", columns=columns, pixel_range=pixel_range,
                        row_labels=["clean", "adversarial"],
                        cell_labels=[str(k) for k in labels],
                        cell_wrong=labels != np.tile(test_y[:n], 2))
        return
    (clean_logits, clean_p), (adv_logits, adv_p) = (scorer.call_with_details(x)
                                                    for x in (clean, adv))
    predicted = np.concatenate([np.argmax(np.asarray(t), axis=1)
                                for t in (clean_logits, adv_logits)])
    rows = np.concatenate([clean, adv, clean_p.reconstruction.numpy(),
                           adv_p.reconstruction.numpy()])
    save_image_grid(rows, f"{stem}_grid.png", columns=columns, pixel_range=pixel_range,
                    row_labels=["clean", "adversarial", "G(z*) of clean",
                                "G(z*) of adversarial"],
                    cell_labels=[str(k) for k in predicted] + [None] * (2 * n),
                    cell_wrong=np.concatenate([predicted != np.tile(test_y[:n], 2),
                                               np.zeros(2 * n, bool)]))
    det = result.detection
    roc = roc_curve(det["clean_errors"], det["adversarial_errors"])
    plot_roc({f"{spec.attack.attack_type} eps {spec.attack.eps}": roc}, f"{stem}_roc.png",
             title=f"reconstruction-error detection, model {spec.model}")
