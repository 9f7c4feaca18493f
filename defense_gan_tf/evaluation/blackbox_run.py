"""The black-box workflow behind ``bin/blackbox.py`` (paper section 4.1, Tables 1-3).

The black-box model (defended or not) is an oracle queried for labels only.
The attacker trains a substitute on a held-out seed set grown by Jacobian-based
augmentation (Papernot et al. 2017), crafts FGSM on the substitute (using the
substitute's own predictions: the attacker has no test labels) and transfers
the examples to the oracle.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np

from defense_gan_tf import attacks
from defense_gan_tf.console import echo
from defense_gan_tf.defense import DefendedClassifier
from defense_gan_tf.defense.magnet import load_magnet
from defense_gan_tf.evaluation.loading import load_run_inputs
from defense_gan_tf.evaluation.runs import (BlackboxResult, RunOutcome, flat_settings,
                                            write_run_record)
from defense_gan_tf.evaluation.specs import BlackboxRun
from defense_gan_tf.evaluation.stats import accuracy_entry
from defense_gan_tf.models import build_classifier


PROGRESS_SECONDS = 60.0  # at most one progress line per this many seconds of labelling


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
    generator, black_box = inputs.generator, inputs.classifier
    seed_x = inputs.test_split[0][:run.holdout]
    eval_x, eval_y = inputs.test_x, inputs.test_y
    oracle = black_box
    if spec.defense_type == "defense_gan":
        oracle = DefendedClassifier(black_box, generator, spec.projection, gradient="none",
                                    draw_seed=spec.seed * 2 + 1)
    elif spec.defense_type == "magnet":  # labels of the reformed images
        oracle = load_magnet(spec.magnet, black_box)
    queries = {"n": 0}

    def oracle_labels(x):
        # A Defense-GAN oracle projects every query (about a second each here): report
        # progress at most once a minute.
        out, t_call = [], time.monotonic()
        t_said = t_call
        for start in range(0, len(x), spec.batch_size):
            out.append(np.argmax(np.asarray(oracle(x[start:start + spec.batch_size])), axis=1))
            done = min(start + spec.batch_size, len(x))
            if time.monotonic() - t_said >= PROGRESS_SECONDS and done < len(x):
                rate = done / max(time.monotonic() - t_call, 1e-9)
                log(f"  oracle: {done}/{len(x)} labelled, {rate:.2f} img/s, ETA "
                    f"{(len(x) - done) / rate:.0f} s")
                t_said = time.monotonic()
        queries["n"] += len(x)
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    t0 = time.monotonic()
    sub = attacks.train_substitute(
        oracle_labels, seed_x, lambda: build_classifier(run.substitute_model,
                                                        input_shape=seed_x.shape[1:],
                                                        seed=spec.seed),
        rounds=run.data_aug, lmbda=run.lmbda, flip_every=run.flip_every,
        epochs=run.epochs_substitute, seed=spec.seed, log=log)
    substitute_seconds = time.monotonic() - t0
    lo, hi = spec.pixel_range
    adv = np.concatenate([attacks.fgsm(sub.substitute, eval_x[s:s + spec.batch_size],
                                       eps=spec.attack.eps, clip_min=lo, clip_max=hi).numpy()
                          for s in range(0, len(eval_x), spec.batch_size)])
    training_queries = queries["n"]
    clean_pred = oracle_labels(eval_x)
    adv_pred = oracle_labels(adv)
    sub_pred = np.argmax(sub.substitute.predict(eval_x, verbose=0), axis=1)
    result = BlackboxResult(
        clean=accuracy_entry(clean_pred == eval_y),
        adversarial=accuracy_entry(adv_pred == eval_y),
        substitute_accuracy=float(np.mean(sub_pred == eval_y)),
        substitute_agreement=sub.agreement,
        substitute_set_sizes=sub.set_sizes,
        oracle_queries=training_queries,
        linf_mean=float(np.abs(adv - eval_x).reshape(len(adv), -1).max(axis=1).mean()),
        substitute_seconds=substitute_seconds,
        seconds=time.monotonic() - t0,
        magnet=_magnet_rejections(oracle, eval_x, adv, adv_pred == eval_y)
        if spec.defense_type == "magnet" else None)
    settings = {**flat_settings(run), **inputs.record_fields(spec)}
    log(f"black box {spec.model} ({spec.defense_type}): clean "
        f"{result.clean['accuracy']:.3f}, adversarial {result.adversarial['accuracy']:.3f}, "
        f"{training_queries} queries")
    return write_run_record(results_dir, "blackbox", run.name(), settings, result, command)


def _magnet_rejections(magnet, clean: np.ndarray, adversarial: np.ndarray,
                       correct: np.ndarray) -> dict:
    """MagNet's rejection rates and the accuracy counting rejected inputs as defended."""
    rejected = magnet.rejected(adversarial)
    return {"clean_rejection_rate": float(magnet.rejected(clean).mean()),
            "adversarial_rejection_rate": float(rejected.mean()),
            "adversarial_defended_counting_detections": accuracy_entry(correct | rejected)}
