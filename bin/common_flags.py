"""Flag checks shared by bin/whitebox.py and bin/blackbox.py (both define these flags)."""

import os

from absl import app, flags

FLAGS = flags.FLAGS


def check_attack_and_defense_flags():
    """Fails before any work, naming the flag: --fgsm_eps, --rec_*, --defense_type with
    --generator / --train_on_recs, files and folders."""
    if not 0 <= FLAGS.fgsm_eps <= 1:
        raise app.UsageError(f"--fgsm_eps must be in [0, 1] (the data range), got "
                             f"{FLAGS.fgsm_eps}")
    if FLAGS.rec_iters < 0 or FLAGS.rec_lr <= 0:
        raise app.UsageError("--rec_iters must be >= 0 and --rec_lr > 0")
    if (FLAGS.defense_type == "defense_gan" or FLAGS.train_on_recs) and not FLAGS.generator:
        raise app.UsageError("--generator is required with --defense_type=defense_gan or "
                             "--train_on_recs")
    if FLAGS.train_on_recs and FLAGS.defense_type != "defense_gan":
        raise app.UsageError("--train_on_recs goes with --defense_type=defense_gan")
    for name in ("generator", "classifier"):
        if FLAGS[name].value and not os.path.isfile(FLAGS[name].value):
            raise app.UsageError(f"--{name} {FLAGS[name].value} is not a file")
    if FLAGS.data_dir and not os.path.isdir(FLAGS.data_dir):
        raise app.UsageError(f"--data_dir {FLAGS.data_dir} is not a folder")
