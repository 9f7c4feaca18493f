#!/usr/bin/env python3
r"""Exports a Defense-GAN defended classifier as a SavedModel plain TensorFlow can serve.

Example:
  python bin/export.py --generator=pretrained/mnist/generator.keras \
      --classifier=pretrained/mnist/classifier_A.keras --output_dir=runs/export/mnist_A \
      --detection_threshold=0.02

Load it without this package:
  m = tf.saved_model.load("runs/export/mnist_A")
  out = m.signatures["serving_default"](images=x)   # logits, probabilities, ...
"""

import math
import os

from absl import app, flags

import flags as shared  # bin/flags.py


FLAGS = flags.FLAGS
flags.DEFINE_string("generator", None, "Generator .keras file (from bin/train.py).")
flags.DEFINE_string("classifier", None, "Classifier .keras file (outputs logits).")
flags.DEFINE_string("output_dir", None, "SavedModel folder to write.")
shared.define_projection_flags()
flags.DEFINE_float("rec_momentum", 0.7, "Projection momentum.")
flags.DEFINE_float("detection_threshold", None, "Also return is_adversarial = "
                   "reconstruction error > threshold.")
flags.DEFINE_integer("seed", None, "Fix the initial z of every request (default: fresh).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output_dir.")
flags.mark_flags_as_required(["generator", "classifier", "output_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    shared.check_paths(files=("generator", "classifier"), outputs=("output_dir",))
    if os.path.exists(FLAGS.output_dir) and os.listdir(FLAGS.output_dir) and not FLAGS.overwrite:
        raise app.UsageError(f"--output_dir {FLAGS.output_dir} exists and is not empty "
                             "(pass --overwrite)")
    threshold = FLAGS.detection_threshold
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        raise app.UsageError(f"--detection_threshold must be a finite number >= 0, got "
                             f"{threshold}")
    with shared.usage_errors():
        projection = shared.projection_config(momentum=FLAGS.rec_momentum)
    from defense_gan_tf.records.loading import load_classifier, load_generator
    from defense_gan_tf.export import export_saved_model

    with shared.usage_errors():
        generator, _ = load_generator(FLAGS.generator)
        classifier = load_classifier(FLAGS.classifier,
                                     image_shape=generator.output_shape[1:])
        path = export_saved_model(classifier, generator, FLAGS.output_dir,
                                  projection_config=projection,
                                  detection_threshold=threshold, seed=FLAGS.seed)
    print(f"SavedModel written to {path} (signatures: serving_default, project, generate)")


if __name__ == "__main__":
    shared.run(main)
