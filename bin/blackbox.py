#!/usr/bin/env python3
r"""Black-box (substitute) attacks on undefended, adversarially trained and Defense-GAN models.

Flags mirror the authors' blackbox.py. Writes one JSON per run to --results_dir and
rebuilds blackbox_table.md there (paper Tables 1-2 layout; rows per epsilon give the
sweep of Table 3).

Example (paper setting: black box F, substitute E, FGSM eps 0.3, Defense-GAN-Rec):
  python bin/blackbox.py --generator=pretrained/mnist/generator.keras \
      --defense_type=defense_gan --train_on_recs --bb_model=F --sub_model=E
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common_flags  # noqa: E402  (bin/common_flags.py)

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "mnist", ["mnist", "f-mnist", "fashion_mnist"], "Dataset.")
flags.DEFINE_enum("bb_model", "F", list("ABCDEF"), "Black-box classifier architecture.")
flags.DEFINE_enum("sub_model", "E", list("ABCDEF"), "Substitute architecture.")
flags.DEFINE_float("fgsm_eps", 0.3, "FGSM epsilon on the substitute (also the "
                   "adversarial-training epsilon).")
flags.DEFINE_enum("defense_type", "none", ["none", "defense_gan", "adv_tr"], "Defense.")
flags.DEFINE_bool("train_on_recs", False, "Black box trained on reconstructions "
                  "(Defense-GAN-Rec).")
flags.DEFINE_integer("holdout", 150, "Test images held out to seed the substitute.")
flags.DEFINE_integer("data_aug", 6, "Substitute training rounds (augmentations + 1).")
flags.DEFINE_float("lmbda", 0.1, "Jacobian augmentation step.")
flags.DEFINE_integer("nb_epochs", 10, "Black-box classifier training epochs.")
flags.DEFINE_integer("nb_epochs_s", 10, "Substitute training epochs per round.")
flags.DEFINE_integer("num_tests", 1000, "Test images attacked (after the holdout).")
flags.DEFINE_integer("num_train", 50_000, "Training images for the black box.")
flags.DEFINE_integer("rec_iters", 200, "Projection steps L.")
flags.DEFINE_integer("rec_rr", 10, "Projection restarts R.")
flags.DEFINE_float("rec_lr", 10.0, "Projection learning rate.")
flags.DEFINE_string("generator", None, "Generator .keras (for defense_gan / --train_on_recs).")
flags.DEFINE_string("classifier", None, "Use this trained black-box classifier (.keras).")
flags.DEFINE_string("results_dir", "results/blackbox", "Where JSON and the table go.")
flags.DEFINE_string("classifier_dir", "runs/classifiers", "Cache of trained classifiers.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("data_dir", None, "Local IDX folder (default: $DEFENSE_GAN_DATA_DIR).")


def validate_flags():
    """Fails before any work, naming the flag."""
    common_flags.check_attack_and_defense_flags()
    for name in ("holdout", "data_aug", "nb_epochs", "nb_epochs_s", "num_tests", "num_train",
                 "rec_rr"):
        if FLAGS[name].value < 1:
            raise app.UsageError(f"--{name} must be >= 1, got {FLAGS[name].value}")
    if FLAGS.holdout + FLAGS.num_tests > 10_000:
        raise app.UsageError("--holdout + --num_tests must not exceed the 10,000 test images")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    validate_flags()
    from defense_gan_tf.config import AttackConfig, ProjectionConfig, preset
    from defense_gan_tf.evaluation.blackbox_run import BlackboxRun, run_blackbox

    run = BlackboxRun(
        dataset=preset(FLAGS.dataset).dataset, model=FLAGS.bb_model,
        substitute_model=FLAGS.sub_model, defense_type=FLAGS.defense_type,
        train_on_recs=FLAGS.train_on_recs, attack=AttackConfig(eps=FLAGS.fgsm_eps),
        projection=ProjectionConfig(iterations=FLAGS.rec_iters, restarts=FLAGS.rec_rr,
                                    learning_rate=FLAGS.rec_lr),
        holdout=FLAGS.holdout, data_aug=FLAGS.data_aug, lmbda=FLAGS.lmbda,
        epochs=FLAGS.nb_epochs, epochs_substitute=FLAGS.nb_epochs_s,
        num_tests=FLAGS.num_tests, num_train=FLAGS.num_train, seed=FLAGS.seed,
        generator=FLAGS.generator, classifier=FLAGS.classifier)
    from defense_gan_tf.console import command_line

    command = command_line(sys.argv)
    with common_flags.input_errors_as_usage_errors():
        summary = run_blackbox(run, results_dir=FLAGS.results_dir,
                               classifier_dir=FLAGS.classifier_dir, data_dir=FLAGS.data_dir,
                               command=command)
    print(summary["table"])
    print(f"results: {summary['json']}")


if __name__ == "__main__":
    app.run(main)
