"""The black-box workflow behind ``bin/blackbox.py`` (paper section 4.1, Tables 1-3).

The black-box model (defended or not) is an oracle queried for labels only.
The attacker trains a substitute on a held-out seed set grown by Jacobian-based
augmentation (Papernot et al. 2017), crafts FGSM on the substitute (using the
substitute's own predictions: the attacker has no test labels) and transfers
the examples to the oracle.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from typing import Callable, Optional

import numpy as np

from defense_gan_tf import attacks
from defense_gan_tf.config import AttackConfig, ProjectionConfig, preset
from defense_gan_tf.errors import InputError
from defense_gan_tf.console import echo
from defense_gan_tf.defense import DefendedClassifier
from defense_gan_tf.evaluation import report
from defense_gan_tf.evaluation.loading import (get_classifier, load_generator, load_splits,
                                               prepare_output_dir, take)
from defense_gan_tf.evaluation.stats import accuracy_entry
from defense_gan_tf.evaluation.whitebox_run import check_defense_settings
from defense_gan_tf.models import build_classifier
from defense_gan_tf.training.classifier import weights_digest


@dataclasses.dataclass(frozen=True)
class BlackboxRun:
    """Settings of one black-box run (the flags of ``bin/blackbox.py``).

    ``model`` is the black-box architecture; field names shared with the
    white-box run select and cache the black-box classifier the same way.
    """

    dataset: str = "mnist"
    model: str = "F"                    # --bb_model
    substitute_model: str = "E"         # --sub_model
    defense_type: str = "none"          # none | defense_gan | adv_tr
    train_on_recs: bool = False
    attack: AttackConfig = dataclasses.field(default_factory=AttackConfig)
    projection: ProjectionConfig = dataclasses.field(default_factory=ProjectionConfig)
    holdout: int = 150
    data_aug: int = 6
    lmbda: float = 0.1
    flip_every: int = 3
    epochs: int = 10                    # --nb_epochs (black-box model)
    epochs_substitute: int = 10         # --nb_epochs_s
    num_tests: int = 1000
    num_train: int = 50_000
    seed: int = 0
    batch_size: int = 100
    generator: Optional[str] = None
    classifier: Optional[str] = None

    def __post_init__(self):
        check_defense_settings(self.defense_type, self.train_on_recs, self.generator)

    def name(self) -> str:
        parts = [self.dataset, f"eps{self.attack.eps}", self.model, self.substitute_model,
                 self.defense_type]
        if self.defense_type == "defense_gan":
            parts += ["rec" if self.train_on_recs else "orig", f"L{self.projection.iterations}",
                      f"R{self.projection.restarts}"]
        parts += [f"h{self.holdout}", f"aug{self.data_aug}", f"n{self.num_tests}",
                  f"s{self.seed}"]
        return "_".join(str(p) for p in parts)


def run_blackbox(run: BlackboxRun, *, results_dir: str, classifier_dir: str,
                 data_dir: Optional[str] = None, command: str = "",
                 train_data: Optional[tuple] = None, test_data: Optional[tuple] = None,
                 log: Callable[[str], None] = echo) -> dict:
    """Runs one black-box evaluation; writes its JSON and rebuilds blackbox_table.md.

    Returns:
      dict with ``json`` (path), ``table`` (markdown) and ``result``.

    Raises:
      InputError: an output folder is a file or not writable, a model file is
        missing, corrupt or of the wrong kind, or holdout + num_tests exceed the
        test split; all before any training or querying.
    """
    prepare_output_dir(results_dir, "results_dir")
    generator, generator_iterations = load_generator(run.generator, dataset=run.dataset)
    train_data, test_data = load_splits(run.dataset, data_dir, train_data, test_data)
    if run.holdout + run.num_tests > len(test_data[0]):
        raise InputError(f"holdout ({run.holdout}) + num_tests ({run.num_tests}) exceed the "
                         f"{len(test_data[0])} test images")
    train_x, train_y = take(train_data, run.num_train, "num_train")
    seed_x = test_data[0][:run.holdout]
    eval_x, eval_y = take(test_data, run.num_tests, "num_tests", start=run.holdout)
    if not run.classifier:
        prepare_output_dir(classifier_dir, "classifier_dir")
    black_box = get_classifier(run, train_x, train_y, classifier_dir=classifier_dir,
                               generator=generator, log=log)
    oracle = black_box
    if run.defense_type == "defense_gan":
        oracle = DefendedClassifier(black_box, generator, run.projection, gradient="none")
    queries = {"n": 0}

    def oracle_labels(x):
        out = []
        for start in range(0, len(x), run.batch_size):
            out.append(np.argmax(np.asarray(oracle(x[start:start + run.batch_size])), axis=1))
        queries["n"] += len(x)
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    t0 = time.monotonic()
    sub = attacks.train_substitute(
        oracle_labels, seed_x, lambda: build_classifier(run.substitute_model,
                                                        input_shape=seed_x.shape[1:]),
        rounds=run.data_aug, lmbda=run.lmbda, flip_every=run.flip_every,
        epochs=run.epochs_substitute, seed=run.seed, log=log)
    substitute_seconds = time.monotonic() - t0
    lo, hi = preset(run.dataset).model.pixel_range
    adv = np.concatenate([attacks.fgsm(sub.substitute, eval_x[s:s + run.batch_size],
                                       eps=run.attack.eps, clip_min=lo, clip_max=hi).numpy()
                          for s in range(0, len(eval_x), run.batch_size)])
    training_queries = queries["n"]
    clean_pred = oracle_labels(eval_x)
    adv_pred = oracle_labels(adv)
    sub_pred = np.argmax(sub.substitute.predict(eval_x, verbose=0), axis=1)
    result = {
        "clean": accuracy_entry(clean_pred == eval_y),
        "adversarial": accuracy_entry(adv_pred == eval_y),
        "substitute_accuracy": float(np.mean(sub_pred == eval_y)),
        "substitute_agreement": sub.agreement,
        "substitute_set_sizes": sub.set_sizes,
        "oracle_queries": training_queries,
        "linf_mean": float(np.abs(adv - eval_x).reshape(len(adv), -1).max(axis=1).mean()),
        "substitute_seconds": substitute_seconds,
        "seconds": time.monotonic() - t0,
    }
    settings = {**dataclasses.asdict(run), "generator_iterations": generator_iterations,
                "generator_sha": weights_digest(generator)[:16] if generator else None,
                "classifier_sha": report.file_digest(run.classifier)}
    payload = {
        "kind": "blackbox",
        "settings": settings,
        "run_id": report.settings_id(settings),
        "result": result,
        "versions": report.versions(),
        "command": command,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    json_path = report.write_json(
        os.path.join(results_dir, f"blackbox_{run.name()}_{payload['run_id']}.json"), payload)
    with open(report.update_table(results_dir, "blackbox")) as f:
        table = f.read()
    log(f"black box {run.model} ({run.defense_type}): clean {result['clean']['accuracy']:.3f}, "
        f"adversarial {result['adversarial']['accuracy']:.3f}, {training_queries} queries")
    return {"json": json_path, "table": table, "result": result}
