#!/usr/bin/env python3
r"""Trains MagNet's detectors and reformer (Meng and Chen 2017), the paper's comparison row.

Writes autoencoder_I.keras, autoencoder_II.keras and magnet.json (thresholds for
--false_positive_rate on the validation split, settings, measured rejection rate of
clean test images, command) to --output_dir.

Example:
  python bin/train_magnet.py --dataset=mnist --data_dir=../shared/data \
      --output_dir=runs/magnet
"""

import os
import sys

from absl import app
from absl import flags as absl_flags

import flags as shared  # bin/flags.py

FLAGS = absl_flags.FLAGS
shared.define_data_flags()
absl_flags.DEFINE_string("output_dir", None, "Folder for the autoencoders and magnet.json.")
absl_flags.DEFINE_integer("epochs", 20, "Epochs of each autoencoder.")
absl_flags.DEFINE_float("false_positive_rate", 0.001, "Share of clean validation images "
                        "the detectors may reject (split between them).")
absl_flags.DEFINE_integer("num_train", 50_000, "Training images.")
absl_flags.DEFINE_integer("seed", 0, "Seed.")
absl_flags.DEFINE_bool("overwrite", False, "Replace an existing MagNet in --output_dir.")
absl_flags.mark_flag_as_required("output_dir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    shared.check_paths(folders=("data_dir",), outputs=("output_dir",))
    if os.path.isfile(os.path.join(FLAGS.output_dir, "magnet.json")) and not FLAGS.overwrite:
        raise app.UsageError(f"--output_dir {FLAGS.output_dir} already holds a MagNet "
                             "(pass --overwrite)")
    from defense_gan_tf import config as config_lib
    from defense_gan_tf import data
    from defense_gan_tf.console import command_line
    from defense_gan_tf.defense import magnet
    from defense_gan_tf.records.loading import take

    with shared.usage_errors():
        config = magnet.MagNetConfig(false_positive_rate=FLAGS.false_positive_rate,
                                     epochs=FLAGS.epochs)
        dataset = config_lib.canonical_dataset_name(FLAGS.dataset)
        train = take(data.load_numpy(dataset, "train", data_dir=FLAGS.data_dir),
                     FLAGS.num_train, "num_train")
    val_x, _ = data.load_numpy(dataset, "validation", data_dir=FLAGS.data_dir)
    test_x, _ = data.load_numpy(dataset, "test", data_dir=FLAGS.data_dir)
    detectors, _ = magnet.train_magnet(train[0], val_x, config, seed=FLAGS.seed)
    test_rejection = float(magnet.rejected_by(detectors, test_x).mean())
    magnet.save_magnet(FLAGS.output_dir, detectors, config, command=command_line(sys.argv),
                       extra={"dataset": dataset, "num_train": FLAGS.num_train,
                              "clean_test_rejection_rate": test_rejection})
    print(f"MagNet written to {FLAGS.output_dir}: thresholds "
          f"{[round(d.threshold, 6) for d in detectors]}, clean test images rejected "
          f"{test_rejection:.4f} (target {FLAGS.false_positive_rate})")


if __name__ == "__main__":
    shared.run(main)
