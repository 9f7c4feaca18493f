#!/usr/bin/env python3
r"""Adaptive attacks on Defense-GAN, with one worst-case accuracy per budget.

Every attack in --attacks runs at every budget of its norm (--eps_linf, --eps_l2,
--latent_budget) against Defense-GAN-Orig (Rec with --train_on_recs), each
adversarial image scored through a fresh projection; the same attacks on the
undefended classifier give the "no defense" line. Writes one JSON per attack and
budget, adaptive_table_<id>.md and robustness_curve_<id>.png to --results_dir.

Example (MNIST, classifier A, paper projection, 200 test images):
  python bin/adaptive.py --generator=pretrained/mnist/generator.keras \
      --classifier=pretrained/mnist/classifier_A.keras --num_tests=200 \
      --data_dir=../shared/data

Every finished batch is cached under --cache_dir, so a run stopped by
--time_budget_minutes (exit status 3) or interrupted continues when the same command
runs again; a run with more attacks or budgets reuses the cells it shares. A finished
cell's JSON in --results_dir is reused too (when its settings match), so committed
cells carry over to a fresh clone without the cache.
"""

from absl import app
from absl import flags as absl_flags

import flags as shared  # bin/flags.py
from defense_gan_tf.config import ADAPTIVE_ATTACKS

FLAGS = absl_flags.FLAGS
shared.define_evaluation_flags(results_dir="runs/adaptive", model_flag="model",
                               model_default="A", model_help="Classifier architecture.",
                               num_tests=200, choose_defense=False)
absl_flags.DEFINE_list("attacks", list(ADAPTIVE_ATTACKS),
                       "Attacks to run (fgsm: through the unrolled projection; bpda_*, "
                       "cw_bpda: BPDA; *track*: BPDA following z* from step to step; *eot*: "
                       "averaging --eot_samples draws of the random starts per step; "
                       "latent: latent-space search; transfer_*: crafted on the "
                       "classifier alone).")
absl_flags.DEFINE_list("eps_linf", ["0.1", "0.2", "0.3"], "L-infinity budgets.")
absl_flags.DEFINE_list("eps_l2", ["1", "2", "4"], "L2 budgets.")
absl_flags.DEFINE_list("latent_budget", ["0.005"], "Budgets (mean squared error per "
                       "pixel) of the latent attack (Athalye et al.: 0.005 on MNIST); one "
                       "search serves them all.")
absl_flags.DEFINE_integer("latent_search_steps", 5, "Rounds of the latent search over its "
                          "constant (Carlini-Wagner bisection).")
absl_flags.DEFINE_float("latent_learning_rate", 0.01, "Adam learning rate on z of the "
                        "latent search.")
absl_flags.DEFINE_integer("pgd_steps", 100, "PGD iterations (L-infinity and L2).")
absl_flags.DEFINE_integer("eot_samples", 10, "Draws averaged per EOT step (the *eot* "
                          "attacks).")
absl_flags.DEFINE_integer("cw_iterations", 100, "CW iterations.")
absl_flags.DEFINE_float("cw_learning_rate", 0.1, "CW's Adam learning rate (in tanh space).")
absl_flags.DEFINE_float("cw_const", 1.0, "CW's constant on the misclassification term.")
absl_flags.DEFINE_integer("latent_steps", 200, "Latent search steps per constant.")
absl_flags.DEFINE_integer("batch_size", 10, "Test images per attack batch.")
absl_flags.DEFINE_integer("attack_rec_iters", 0, "L of the projection the BPDA attacks run "
                          "forward (0: the defense's). Cheaper only weakens the attack.")
absl_flags.DEFINE_integer("attack_rec_rr", 0, "R of the attacker's projection (0: the "
                          "defense's).")
absl_flags.DEFINE_integer("track_steps", 10, "Descent steps per attack step of the "
                          "tracking attacks (*track*), from the previous step's z*.")
absl_flags.DEFINE_string("cache_dir", "runs/adaptive_cache", "Finished batches of every "
                        "cell are kept here, keyed by the cell's settings; a rerun continues "
                        "from them ('' keeps nothing).")
shared.define_time_budget_flag("No attack batch starts after this many minutes")
shared.define_shard_flags("the cells (all budgets of an attack whose one search serves "
                          "every budget go together: fgsm, transfer_fgsm, cw_*, latent)")
absl_flags.DEFINE_integer("sanity_images", 20, "Test images for the sanity checks (whole-"
                          "range budget, twice the PGD steps, identity BPDA; tracking "
                          "BPDA-PGD unless bpda_pgd is in --attacks); 0 skips them.")


def build_run():
    """Flags -> AdaptiveRun (validated by the dataclasses)."""
    from defense_gan_tf.records.specs import AdaptiveRun

    shared.time_budget_seconds()  # refused here, before any work, if not > 0
    shared.shard_settings()
    try:
        eps_linf = tuple(float(e) for e in FLAGS.eps_linf)
        eps_l2 = tuple(float(e) for e in FLAGS.eps_l2)
        latent_budget = tuple(float(e) for e in FLAGS.latent_budget)
    except ValueError:
        raise app.UsageError("--eps_linf, --eps_l2 and --latent_budget take comma-separated "
                             "numbers") from None
    spec = shared.run_spec(model=FLAGS.model, batch_size=FLAGS.batch_size,
                           defense_type="defense_gan")
    return AdaptiveRun(spec=spec, attacks=tuple(FLAGS.attacks), eps_linf=eps_linf,
                       eps_l2=eps_l2, latent_budget=latent_budget,
                       latent_search_steps=FLAGS.latent_search_steps,
                       latent_learning_rate=FLAGS.latent_learning_rate,
                       pgd_steps=FLAGS.pgd_steps, pgd_l2_steps=FLAGS.pgd_steps,
                       eot_samples=FLAGS.eot_samples, cw_iterations=FLAGS.cw_iterations,
                       cw_learning_rate=FLAGS.cw_learning_rate, cw_const=FLAGS.cw_const,
                       latent_steps=FLAGS.latent_steps, sanity_images=FLAGS.sanity_images,
                       attack_iterations=FLAGS.attack_rec_iters,
                       attack_restarts=FLAGS.attack_rec_rr, track_steps=FLAGS.track_steps)


def _workflow():
    from defense_gan_tf.workflows.adaptive import run_adaptive

    def run(*args, **kwargs):
        shard, claim_timeout = shared.shard_settings()
        outcome = run_adaptive(*args, cache_dir=FLAGS.cache_dir or None,
                               time_budget_seconds=shared.time_budget_seconds(),
                               shard=shard, claim_timeout=claim_timeout, **kwargs)
        if outcome.result.held:
            print(f"{outcome.result.held} cell(s) being measured by other workers: the last "
                  "worker to finish writes the table (if one died, run this command again "
                  "after --claim_timeout_minutes)")
        elif not outcome.result.finished:
            shared.exit_unfinished(f"{len(outcome.result.cells)} cells complete, the rest "
                                   f"cached by batch under {FLAGS.cache_dir}")
        return outcome
    return run


if __name__ == "__main__":
    shared.run(shared.evaluation_main(build_run, _workflow))
