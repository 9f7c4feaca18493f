"""Flag checks shared by bin/whitebox.py and bin/blackbox.py (both define these flags)."""

import contextlib
import os

from absl import app, flags

FLAGS = flags.FLAGS


def check_attack_and_defense_flags():
    """Fails before any work, naming the flag: --fgsm_eps, --rec_*, --defense_type with
    --generator / --train_on_recs, files and folders."""
    if not 0 <= FLAGS.fgsm_eps <= 1:
        raise app.UsageError(f"--fgsm_eps must be in [0, 1] (the data range), got "
                             f"{FLAGS.fgsm_eps}")
    if FLAGS.rec_iters < 1 or FLAGS.rec_rr < 1 or not FLAGS.rec_lr > 0:
        raise app.UsageError(f"--rec_iters and --rec_rr must be >= 1 and --rec_lr > 0, got "
                             f"{FLAGS.rec_iters}, {FLAGS.rec_rr}, {FLAGS.rec_lr}")
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
    for name in ("results_dir", "classifier_dir"):
        path = FLAGS[name].value
        if path and os.path.exists(path) and not os.path.isdir(path):
            raise app.UsageError(f"--{name} {path} is a file, not a folder")


@contextlib.contextmanager
def input_errors_as_usage_errors():
    """Turns the library's InputError (a bad file or setting, named in the message) into
    a one-line absl usage error; any other exception keeps its traceback."""
    from defense_gan_tf.errors import InputError

    try:
        yield
    except InputError as e:
        raise app.UsageError(str(e)) from None
