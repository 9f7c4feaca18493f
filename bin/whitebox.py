#!/usr/bin/env python3
r"""White-box attacks on undefended, adversarially trained and Defense-GAN models.

Flags mirror the authors' whitebox.py. Writes one JSON per run to --results_dir,
rebuilds whitebox_table.md there (paper layout), and for Defense-GAN runs a
detection ROC curve and a grid of clean / adversarial / reconstructed images. Each
finished batch is kept under --cache_dir, so an interrupted run (a CW-L2 run through
the projection takes a day on a CPU) continues from its last finished batch when the
same command runs again.

Example (paper setting, model A, FGSM eps 0.3, Defense-GAN-Orig):
  python bin/whitebox.py --generator=pretrained/mnist/generator.keras \
      --classifier=pretrained/mnist/classifier_A.keras --defense_type=defense_gan \
      --attack_type=fgsm --fgsm_eps=0.3 --data_dir=../shared/data
"""

import functools

from absl import app
from absl import flags as absl_flags

import flags as shared  # bin/flags.py
from defense_gan_tf import config as config_lib

FLAGS = absl_flags.FLAGS
shared.define_evaluation_flags(results_dir="runs/whitebox", model_flag="model",
                               model_default="A", model_help="Classifier architecture.",
                               num_tests=100)
absl_flags.DEFINE_enum("attack_type", "fgsm", list(config_lib.WHITEBOX_ATTACKS), "Attack.")
absl_flags.DEFINE_float("alpha", 0.05, "RAND+FGSM random step.")
absl_flags.DEFINE_enum("gradient", "full", list(config_lib.GRADIENT_MODES), "What the "
                       "attacker's gradient through the projection is (full = the paper's "
                       "white box, bpda = identity).")
absl_flags.DEFINE_string("cache_dir", "runs/whitebox_cache", "Finished batches of each "
                         "run are kept here, keyed by its settings and classifier: an "
                         "interrupted run continues after its last finished batch ('' keeps "
                         "nothing).")
absl_flags.DEFINE_bool("same_init", False, "White-box revisited: the attacker knows the "
                       "projection's initial z (the defense uses a fixed seed).")
absl_flags.DEFINE_integer("batch_size", 20, "Test images per attack batch (with "
                          "--gradient=full, at most what --memory_budget_gb allows).")
absl_flags.DEFINE_float("memory_budget_gb", None, "Memory the full gradient through the "
                        "projection may use (default: half the memory available at the "
                        "start); the batch is cut to the largest that fits by estimate.")
absl_flags.DEFINE_integer("cw_iterations", 100, "CW iterations.")
absl_flags.DEFINE_float("cw_lr", 10.0, "CW learning rate.")
absl_flags.DEFINE_float("cw_const", 100.0, "CW initial constant c.")
absl_flags.DEFINE_integer("cw_binary_steps", 1, "CW binary-search steps.")
absl_flags.DEFINE_integer("pgd_iterations", 40, "PGD iterations.")
absl_flags.DEFINE_float("pgd_step_size", 0.01, "PGD step size.")


def build_run():
    """Flags -> WhiteboxRun (validated by the config dataclasses)."""
    from defense_gan_tf.records.specs import WhiteboxRun

    if FLAGS.defense_type != "defense_gan":
        given = [f"--{n}" for n in ("gradient", "same_init") if FLAGS[n].present]
        if given:
            raise app.UsageError(f"{' and '.join(given)} set how the attacker differentiates "
                                 "through the projection: they go with "
                                 "--defense_type=defense_gan")

    attack = config_lib.AttackConfig(
        attack_type=FLAGS.attack_type, eps=FLAGS.fgsm_eps, alpha=FLAGS.alpha,
        cw_binary_steps=FLAGS.cw_binary_steps, cw_iterations=FLAGS.cw_iterations,
        cw_learning_rate=FLAGS.cw_lr, cw_initial_const=FLAGS.cw_const,
        pgd_step_size=FLAGS.pgd_step_size, pgd_iterations=FLAGS.pgd_iterations)
    spec = shared.run_spec(model=FLAGS.model, batch_size=_batch_size(), attack=attack)
    return WhiteboxRun(spec=spec, gradient=FLAGS.gradient, same_init=FLAGS.same_init)


def _batch_size() -> int:
    """--batch_size, cut for the full gradient through the projection to the largest
    batch that --memory_budget_gb holds by estimate (defense_gan_tf/memory.py); a --batch_size
    given explicitly is kept, with a warning when it is estimated not to fit."""
    from defense_gan_tf import memory

    if FLAGS.memory_budget_gb is not None and FLAGS.memory_budget_gb <= 0:
        raise app.UsageError(f"--memory_budget_gb must be > 0, got {FLAGS.memory_budget_gb}")
    if FLAGS.defense_type != "defense_gan" or FLAGS.gradient != "full":
        return FLAGS.batch_size
    projection = shared.projection_config(FLAGS.dataset)
    # FGSM and PGD take their gradient in one compiled graph; CW-L2 with an eager tape.
    per_image = memory.gb_per_image(projection.iterations, projection.restarts,
                                    fused=FLAGS.attack_type != "cw")  # MNIST-shaped
    budget = FLAGS.memory_budget_gb or memory.default_budget_gb()
    if budget is None:
        return FLAGS.batch_size
    fits = memory.batch_for_budget(budget, per_image, FLAGS.batch_size)
    if FLAGS["batch_size"].present:
        if fits < FLAGS.batch_size:
            print(f"warning: --batch_size={FLAGS.batch_size} is estimated to need "
                  f"{memory.BASE_GB + FLAGS.batch_size * per_image:.1f} GB, over the "
                  f"{budget:.1f} GB of --memory_budget_gb", flush=True)
        return FLAGS.batch_size
    if fits < FLAGS.batch_size:
        print(f"batch of {fits} images (not {FLAGS.batch_size}): the full gradient "
              f"through L={projection.iterations}, R={projection.restarts} is estimated at "
              f"{per_image:.2f} GB per image, and --memory_budget_gb is {budget:.1f}",
              flush=True)
    return fits


def _workflow():
    from defense_gan_tf.defense.projection import Projector
    from defense_gan_tf.workflows.whitebox_run import run_whitebox

    iterations = shared.projection_config(FLAGS.dataset).iterations
    if FLAGS.defense_type == "defense_gan" and FLAGS.gradient == "full" and iterations >= 100:
        # A batch through the unrolled projection takes minutes at the paper's L: the
        # compiled loop reports every quarter of L (and the backward pass its segments).
        Projector.progress_every = iterations // 4
    return functools.partial(run_whitebox, cache_dir=FLAGS.cache_dir or None)


if __name__ == "__main__":
    shared.run(shared.evaluation_main(build_run, _workflow))
