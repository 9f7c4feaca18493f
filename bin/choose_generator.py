#!/usr/bin/env python3
r"""Ships as generator.keras whichever of a package's generators defends better.

A package holds the trained generator and the exponential moving average of its weights
(generator_ema.keras). Once both are measured by bin/measure_generator.py on at least
--num_images test images at the package's L and R, this picks the one with the higher
accuracy on FGSM images transferred from the undefended classifier among those whose
clean accuracy through Defense-GAN-Orig reaches --min_clean (default 0.98 for MNIST,
0.85 for Fashion-MNIST; if neither does, the higher clean accuracy; ties keep the trained
one). If that is the average, it becomes generator.keras and the trained generator moves
to generator_raw.keras, from which bin/train.py --warm_start continues. The manifest
says which one is shipped ("shipped_generator") and on which figures ("shipped_choice");
the headline figures become the shipped generator's. Running it again is harmless.

Example (after bin/measure_generator.py has measured generator.keras and, with
--generator_file=generator_ema.keras, the average):
  python bin/choose_generator.py --package_dir=pretrained/mnist
"""

import os
import sys

from absl import app, flags

import flags as shared  # bin/flags.py

FLAGS = flags.FLAGS
flags.DEFINE_string("package_dir", None, "A bin/package_generator.py folder with both "
                    "generators measured (e.g. pretrained/mnist).")
flags.DEFINE_float("min_clean", None, "Clean accuracy through Defense-GAN-Orig a generator "
                   "must keep to be chosen on its transferred-FGSM figure (default: 0.98 "
                   "MNIST, 0.85 Fashion-MNIST).")
flags.DEFINE_integer("num_images", 500, "Only measurements of at least this many test "
                     "images count.")
flags.mark_flag_as_required("package_dir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not os.path.isfile(os.path.join(FLAGS.package_dir, "manifest.json")):
        raise app.UsageError(f"--package_dir {FLAGS.package_dir} has no manifest.json")
    if FLAGS.min_clean is not None and not 0.0 <= FLAGS.min_clean <= 1.0:
        raise app.UsageError(f"--min_clean must be in [0, 1], not {FLAGS.min_clean}")
    if FLAGS.num_images < 1:
        raise app.UsageError(f"--num_images must be >= 1, not {FLAGS.num_images}")
    from defense_gan_tf.console import command_line
    from defense_gan_tf.errors import InputError
    from defense_gan_tf.generators.choice import choose_shipped_generator

    try:
        choice = choose_shipped_generator(FLAGS.package_dir, min_clean=FLAGS.min_clean,
                                          num_images=FLAGS.num_images,
                                          command=command_line(sys.argv))
    except InputError as e:
        raise app.UsageError(f"--package_dir: {e}") from None
    for which in ("raw", "average"):
        f = choice[which]
        print(f"{which:>7}: clean {f['clean']:.3f}, transferred FGSM "
              f"{f['transferred_fgsm']:.3f} ({f['num_images']} images)")
    shipped = "averaged" if choice["shipped"] == "average" else "trained"
    print(f"generator.keras is now the {shipped} generator")


if __name__ == "__main__":
    shared.run(main)
