#!/usr/bin/env python3
r"""White-box attacks on undefended, adversarially trained and Defense-GAN models.

Flags mirror the authors' whitebox.py. Writes one JSON per run to --results_dir,
rebuilds whitebox_table.md there (paper layout), and for Defense-GAN runs a
detection ROC curve and a grid of clean / adversarial / reconstructed images.

Example (paper setting, model A, FGSM eps 0.3, Defense-GAN-Orig):
  python bin/whitebox.py --generator=pretrained/mnist/generator.keras \
      --defense_type=defense_gan --model=A --attack_type=fgsm --fgsm_eps=0.3
"""

import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common_flags  # noqa: E402  (bin/common_flags.py)

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "mnist", ["mnist", "f-mnist", "fashion_mnist"], "Dataset.")
flags.DEFINE_enum("attack_type", "fgsm", ["fgsm", "rand_fgsm", "cw", "pgd"], "Attack.")
flags.DEFINE_enum("defense_type", "none", ["none", "defense_gan", "adv_tr"], "Defense.")
flags.DEFINE_enum("model", "A", list("ABCDEF"), "Classifier architecture.")
flags.DEFINE_bool("train_on_recs", False, "Train the classifier on reconstructions "
                  "(Defense-GAN-Rec) instead of originals (Defense-GAN-Orig).")
flags.DEFINE_float("fgsm_eps", 0.3, "L-infinity epsilon of FGSM, RAND+FGSM and PGD; also "
                   "the adversarial-training epsilon.")
flags.DEFINE_float("alpha", 0.05, "RAND+FGSM random step.")
flags.DEFINE_integer("rec_iters", 200, "Projection steps L.")
flags.DEFINE_integer("rec_rr", 10, "Projection restarts R.")
flags.DEFINE_float("rec_lr", 10.0, "Projection learning rate.")
flags.DEFINE_enum("gradient", "full", ["full", "bpda", "none"], "What the attacker's "
                  "gradient through the projection is (full = the paper's white box).")
flags.DEFINE_integer("num_tests", 100, "Test images attacked.")
flags.DEFINE_integer("num_train", 50_000, "Training images for the classifier.")
flags.DEFINE_integer("nb_epochs", 10, "Classifier training epochs.")
flags.DEFINE_bool("same_init", False, "White-box revisited: the attacker knows the "
                  "projection's initial z (the defense uses a fixed seed).")
flags.DEFINE_string("generator", None, "Generator .keras (needed for defense_gan and "
                    "--train_on_recs).")
flags.DEFINE_string("results_dir", "results/whitebox", "Where JSON, table and figures go.")
flags.DEFINE_string("classifier", None, "Use this trained classifier (.keras, logits) "
                    "instead of training one; it must fit the run (e.g. trained on "
                    "reconstructions for --train_on_recs).")
flags.DEFINE_string("classifier_dir", "runs/classifiers", "Cache of trained classifiers "
                    "and reconstructions.")
flags.DEFINE_integer("seed", 0, "Seed of classifier training, attacks and projections.")
flags.DEFINE_integer("batch_size", 20, "Test images per attack batch.")
flags.DEFINE_string("data_dir", None, "Local IDX folder (default: $DEFENSE_GAN_DATA_DIR).")
flags.DEFINE_integer("cw_iterations", 100, "CW iterations.")
flags.DEFINE_float("cw_lr", 10.0, "CW learning rate.")
flags.DEFINE_float("cw_const", 100.0, "CW initial constant c.")
flags.DEFINE_integer("cw_binary_steps", 1, "CW binary-search steps.")
flags.DEFINE_integer("pgd_iterations", 40, "PGD iterations.")
flags.DEFINE_float("pgd_step_size", 0.01, "PGD step size.")


def validate_flags():
    """Fails before any work, naming the flag."""
    common_flags.check_attack_and_defense_flags()
    if FLAGS.attack_type == "rand_fgsm" and not 0 <= FLAGS.alpha <= FLAGS.fgsm_eps:
        raise app.UsageError(f"--alpha must be in [0, --fgsm_eps], got {FLAGS.alpha}")
    for name in ("num_tests", "num_train", "nb_epochs", "rec_rr", "batch_size"):
        if FLAGS[name].value < 1:
            raise app.UsageError(f"--{name} must be >= 1, got {FLAGS[name].value}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    validate_flags()
    from defense_gan_tf.config import AttackConfig, ProjectionConfig, preset

    attack = AttackConfig(
        attack_type=FLAGS.attack_type, eps=FLAGS.fgsm_eps, alpha=FLAGS.alpha,
        cw_binary_steps=FLAGS.cw_binary_steps, cw_iterations=FLAGS.cw_iterations,
        cw_learning_rate=FLAGS.cw_lr, cw_initial_const=FLAGS.cw_const,
        pgd_step_size=FLAGS.pgd_step_size, pgd_iterations=FLAGS.pgd_iterations)
    projection = ProjectionConfig(iterations=FLAGS.rec_iters, restarts=FLAGS.rec_rr,
                                  learning_rate=FLAGS.rec_lr)
    cfg = preset(FLAGS.dataset)
    from defense_gan_tf.evaluation.whitebox_run import WhiteboxRun, run_whitebox

    run = WhiteboxRun(
        dataset=cfg.dataset, model=FLAGS.model, defense_type=FLAGS.defense_type,
        train_on_recs=FLAGS.train_on_recs, attack=attack, projection=projection,
        gradient=FLAGS.gradient, same_init=FLAGS.same_init, num_tests=FLAGS.num_tests,
        num_train=FLAGS.num_train, epochs=FLAGS.nb_epochs, seed=FLAGS.seed,
        batch_size=FLAGS.batch_size, generator=FLAGS.generator, classifier=FLAGS.classifier)
    from defense_gan_tf.console import command_line

    command = command_line(sys.argv)
    t0 = time.monotonic()
    with common_flags.input_errors_as_usage_errors():
        summary = run_whitebox(run, results_dir=FLAGS.results_dir,
                               classifier_dir=FLAGS.classifier_dir, data_dir=FLAGS.data_dir,
                               command=command)
    print(summary["table"])
    print(f"results: {summary['json']} ({time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    app.run(main)
