"""The white-box workflow behind ``bin/whitebox.py``: data, classifier, defense, attack, report."""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Callable, Optional

import numpy as np

from defense_gan_tf.config import AttackConfig, ProjectionConfig, preset
from defense_gan_tf.console import echo
from defense_gan_tf.defense import DefendedClassifier
from defense_gan_tf.evaluation import report
from defense_gan_tf.evaluation.detection import plot_roc, roc_curve
from defense_gan_tf.evaluation.loading import (get_classifier, load_generator, load_splits,
                                               prepare_output_dir, take)
from defense_gan_tf.evaluation.whitebox import evaluate_whitebox
from defense_gan_tf.plots import save_image_grid
from defense_gan_tf.training.classifier import weights_digest


DEFENSES = ("none", "defense_gan", "adv_tr")


def check_defense_settings(defense_type: str, train_on_recs: bool,
                           generator: Optional[str]) -> None:
    """Raises ValueError for an unknown defense or a missing generator."""
    if defense_type not in DEFENSES:
        raise ValueError(f"defense_type must be one of {list(DEFENSES)}, got {defense_type!r}")
    if (defense_type == "defense_gan" or train_on_recs) and not generator:
        raise ValueError("a generator is needed for defense_gan / train_on_recs")


@dataclasses.dataclass(frozen=True)
class WhiteboxRun:
    """Settings of one white-box run (the flags of ``bin/whitebox.py``)."""

    dataset: str = "mnist"
    model: str = "A"
    defense_type: str = "none"          # none | defense_gan | adv_tr
    train_on_recs: bool = False         # Defense-GAN-Rec when True
    attack: AttackConfig = dataclasses.field(default_factory=AttackConfig)
    projection: ProjectionConfig = dataclasses.field(default_factory=ProjectionConfig)
    gradient: str = "full"              # full | bpda | none
    same_init: bool = False
    num_tests: int = 100
    num_train: int = 50_000
    epochs: int = 10
    seed: int = 0
    batch_size: int = 20
    generator: Optional[str] = None
    classifier: Optional[str] = None    # a trained .keras classifier to use as given

    def __post_init__(self):
        check_defense_settings(self.defense_type, self.train_on_recs, self.generator)

    def name(self) -> str:
        a = self.attack
        parts = [self.dataset, a.attack_type, f"eps{a.eps}", self.model, self.defense_type]
        if self.defense_type == "defense_gan":
            parts += ["rec" if self.train_on_recs else "orig", f"L{self.projection.iterations}",
                      f"R{self.projection.restarts}", self.gradient]
            if self.same_init:
                parts.append("sameinit")
        if self.classifier:
            parts.append("clf-" + os.path.splitext(os.path.basename(self.classifier))[0])
        parts += [f"n{self.num_tests}", f"s{self.seed}"]
        return "_".join(str(p) for p in parts)


def run_whitebox(run: WhiteboxRun, *, results_dir: str, classifier_dir: str,
                 data_dir: Optional[str] = None, command: str = "",
                 train_data: Optional[tuple] = None, test_data: Optional[tuple] = None,
                 log: Callable[[str], None] = echo) -> dict:
    """Runs one white-box evaluation and writes its JSON, table and figures.

    Args:
      run: the settings.
      results_dir: where ``whitebox_<name>.json``, ``whitebox_table.md`` and PNGs go.
      classifier_dir: cache of trained classifiers and reconstructions.
      data_dir: local IDX folder.
      command: the command line, recorded next to the numbers.
      train_data, test_data: (images, labels) to use instead of loading (test seam).
      log: progress output.

    Returns:
      dict with ``json`` (path), ``table`` (markdown) and ``result``.

    Raises:
      InputError: an output folder is a file or not writable, a model file is
        missing, corrupt or of the wrong kind, or more images are asked for than
        the splits hold; all before any attack runs.
    """
    prepare_output_dir(results_dir, "results_dir")
    generator, generator_iterations = load_generator(run.generator, dataset=run.dataset)
    train_data, test_data = load_splits(run.dataset, data_dir, train_data, test_data)
    train_x, train_y = take(train_data, run.num_train, "num_train")
    test_x, test_y = take(test_data, run.num_tests, "num_tests")
    if not run.classifier:
        prepare_output_dir(classifier_dir, "classifier_dir")
    classifier = get_classifier(run, train_x, train_y, classifier_dir=classifier_dir,
                                generator=generator, log=log)
    model_fn, score_fn, scorer = classifier, None, None
    if run.defense_type == "defense_gan":
        seed = run.seed if run.same_init else None
        model_fn = DefendedClassifier(classifier, generator, run.projection,
                                      gradient=run.gradient, seed=seed)
        scorer = DefendedClassifier(classifier, generator, run.projection, gradient="none",
                                    seed=seed)

        def score_fn(x):
            logits, projection = scorer.call_with_details(x)
            return logits, projection.error
    lo, hi = preset(run.dataset).model.pixel_range
    result = evaluate_whitebox(model_fn, test_x, test_y, run.attack, clip_min=lo, clip_max=hi,
                               batch_size=run.batch_size, seed=run.seed, score_fn=score_fn,
                               log=log)
    settings = {**dataclasses.asdict(run), "generator_iterations": generator_iterations,
                "generator_sha": weights_digest(generator)[:16] if generator else None,
                "classifier_sha": report.file_digest(run.classifier)}
    name = f"{run.name()}_{report.settings_id(settings)}"
    adv = result.pop("adversarial_examples")
    if scorer is not None:
        clean_rec = scorer.reconstruct(test_x[:10]).numpy()
        adv_rec = scorer.reconstruct(adv[:10]).numpy()
        rows = np.concatenate([test_x[:10], adv[:10], clean_rec, adv_rec])
        save_image_grid(rows, os.path.join(results_dir, f"whitebox_{name}_grid.png"),
                        columns=min(10, len(test_x)), pixel_range=(lo, hi),
                        row_labels=["clean", "adversarial", "G(z*) of clean",
                                    "G(z*) of adversarial"])
        det = result["detection"]
        roc = roc_curve(det["clean_errors"], det["adversarial_errors"])
        plot_roc({f"{run.attack.attack_type} eps {run.attack.eps}": roc},
                 os.path.join(results_dir, f"whitebox_{name}_roc.png"),
                 title=f"reconstruction-error detection, model {run.model}")
    else:
        rows = np.concatenate([test_x[:10], adv[:10]])
        save_image_grid(rows, os.path.join(results_dir, f"whitebox_{name}_grid.png"),
                        columns=min(10, len(test_x)), pixel_range=(lo, hi),
                        row_labels=["clean", "adversarial"])
    payload = {
        "kind": "whitebox",
        "settings": settings,
        "run_id": report.settings_id(settings),
        "result": result,
        "versions": report.versions(),
        "command": command,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    json_path = report.write_json(os.path.join(results_dir, f"whitebox_{name}.json"), payload)
    table_path = report.update_table(results_dir, "whitebox")
    with open(table_path) as f:
        table = f.read()
    return {"json": json_path, "table": table, "result": result}
