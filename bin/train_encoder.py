#!/usr/bin/env python3
r"""Trains the projection's encoder E (x -> z) for a trained generator.

E starts one restart of each projection (ProjectionConfig.encoder_start). It is
fitted on pairs (G(z), z) and on the reconstruction error of real training
images; writes encoder.keras and encoder.json (generator sha256, settings,
losses, command) beside the generator by default.

Example:
  python bin/train_encoder.py --generator=pretrained/mnist/generator.keras \
      --data_dir=../shared/data --steps=3000 --output=runs/encoder/mnist.keras
"""

import os
import sys

from absl import app
from absl import flags as absl_flags

import flags as shared  # bin/flags.py

FLAGS = absl_flags.FLAGS
shared.define_data_flags()
absl_flags.DEFINE_string("generator", None, "Generator .keras file.")
absl_flags.DEFINE_string("output", None, "Encoder .keras to write (default: encoder.keras "
                         "beside the generator).")
absl_flags.DEFINE_integer("steps", 3000, "Adam steps.")
absl_flags.DEFINE_integer("batch_size", 64, "z draws and real images per step.")
absl_flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
absl_flags.DEFINE_float("reconstruction_weight", 1.0, "Weight of the real-image "
                        "reconstruction term.")
absl_flags.DEFINE_integer("seed", 0, "Seed.")
absl_flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
absl_flags.mark_flag_as_required("generator")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    shared.check_paths(files=("generator",), folders=("data_dir",))
    output = FLAGS.output or os.path.join(os.path.dirname(FLAGS.generator), "encoder.keras")
    FLAGS.output = output  # named in the refusal below
    shared.check_not_shipped("output")
    if os.path.exists(output) and not FLAGS.overwrite:
        raise app.UsageError(f"--output {output} exists (pass --overwrite to replace it)")
    if not FLAGS.learning_rate > 0:
        raise app.UsageError(f"--learning_rate must be > 0, got {FLAGS.learning_rate}")
    for name in ("steps", "batch_size"):
        if FLAGS[name].value < 1:
            raise app.UsageError(f"--{name} must be >= 1, got {FLAGS[name].value}")
    from defense_gan_tf import config as config_lib
    from defense_gan_tf import data
    from defense_gan_tf.console import command_line
    from defense_gan_tf.records.loading import load_generator
    from defense_gan_tf.training.encoder import fit_encoder_file

    cfg = config_lib.preset(FLAGS.dataset)
    with shared.usage_errors():
        generator, _ = load_generator(FLAGS.generator, dataset=cfg.dataset)
        model_config = config_lib.ModelConfig(
            image_shape=tuple(generator.output_shape[1:]),
            latent_dim=int(generator.input_shape[-1]),
            output_activation=cfg.model.output_activation)
        images, _ = data.load_numpy(cfg.dataset, "train", data_dir=FLAGS.data_dir)
    record = fit_encoder_file(
        FLAGS.generator, images, output, model_config=model_config, steps=FLAGS.steps,
        batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        reconstruction_weight=FLAGS.reconstruction_weight, seed=FLAGS.seed,
        command=command_line(sys.argv))
    print(f"encoder written to {output}: latent loss {record['latent_loss']}, "
          f"reconstruction error {record['reconstruction_error']} ({record['seconds']} s)")


if __name__ == "__main__":
    shared.run(main)
