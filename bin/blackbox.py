#!/usr/bin/env python3
r"""Black-box (substitute) attacks on undefended, adversarially trained and Defense-GAN models.

Flags mirror the authors' blackbox.py. Writes one JSON per run to --results_dir and
rebuilds blackbox_table.md there (paper Tables 1-2 layout; rows per epsilon give the
sweep of Table 3). The trained substitute and the oracle's clean labels are cached in
--classifier_dir/substitutes: a run differing only in --fgsm_eps reuses them.

Example (paper setting: black box F, substitute E, FGSM eps 0.3, Defense-GAN-Rec):
  python bin/blackbox.py --generator=pretrained/mnist/generator.keras \
      --defense_type=defense_gan --train_on_recs --bb_model=F --sub_model=E \
      --data_dir=../shared/data
"""

from absl import flags as absl_flags

import flags as shared  # bin/flags.py
from defense_gan_tf import config as config_lib

FLAGS = absl_flags.FLAGS
shared.define_evaluation_flags(results_dir="runs/blackbox", model_flag="bb_model",
                               model_default="F", model_help="Black-box classifier "
                               "architecture.", num_tests=1000)
absl_flags.DEFINE_enum("sub_model", "E", list(config_lib.CLASSIFIER_MODELS),
                       "Substitute architecture.")
absl_flags.DEFINE_integer("holdout", 150, "Test images held out to seed the substitute.")
absl_flags.DEFINE_integer("data_aug", 6, "Substitute training rounds (augmentations + 1).")
absl_flags.DEFINE_float("lmbda", 0.1, "Jacobian augmentation step.")
absl_flags.DEFINE_integer("nb_epochs_s", 10, "Substitute training epochs per round.")


def build_run():
    """Flags -> BlackboxRun (validated by the config dataclasses)."""
    from defense_gan_tf.records.specs import BlackboxRun

    spec = shared.run_spec(model=FLAGS.bb_model, batch_size=100)
    return BlackboxRun(spec=spec, substitute_model=FLAGS.sub_model, holdout=FLAGS.holdout,
                       data_aug=FLAGS.data_aug, lmbda=FLAGS.lmbda,
                       epochs_substitute=FLAGS.nb_epochs_s)


def _workflow():
    from defense_gan_tf.workflows.blackbox_run import run_blackbox

    return run_blackbox


if __name__ == "__main__":
    shared.run(shared.evaluation_main(build_run, _workflow))
