#!/usr/bin/env python3
r"""Exports a Defense-GAN defended classifier as a SavedModel plain TensorFlow can serve.

Example:
  python bin/export.py --generator=pretrained/mnist/generator.keras \
      --classifier=runs/classifier_A.keras --output_dir=exports/mnist_A \
      --detection_threshold=0.02

Load it without this package:
  m = tf.saved_model.load("exports/mnist_A")
  out = m.signatures["serving_default"](images=x)   # logits, probabilities, ...
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_string("generator", None, "Generator .keras file (from bin/train.py).")
flags.DEFINE_string("classifier", None, "Classifier .keras file (outputs logits).")
flags.DEFINE_string("output_dir", None, "SavedModel folder to write.")
flags.DEFINE_integer("rec_iters", 200, "Projection steps L.")
flags.DEFINE_integer("rec_rr", 10, "Random restarts R.")
flags.DEFINE_float("rec_lr", 10.0, "Projection learning rate.")
flags.DEFINE_float("rec_momentum", 0.7, "Projection momentum.")
flags.DEFINE_float("detection_threshold", None, "Also return is_adversarial = "
                   "reconstruction error > threshold.")
flags.DEFINE_integer("seed", None, "Fix the initial z of every request (default: fresh).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output_dir.")
flags.mark_flags_as_required(["generator", "classifier", "output_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for name in ("generator", "classifier"):
        if not os.path.isfile(FLAGS[name].value):
            raise app.UsageError(f"--{name} {FLAGS[name].value} is not a file")
    if os.path.exists(FLAGS.output_dir) and os.listdir(FLAGS.output_dir) and not FLAGS.overwrite:
        raise app.UsageError(f"--output_dir {FLAGS.output_dir} exists and is not empty "
                             "(pass --overwrite)")
    if FLAGS.detection_threshold is not None and FLAGS.detection_threshold < 0:
        raise app.UsageError("--detection_threshold must be >= 0")
    from defense_gan_tf.config import ProjectionConfig

    try:
        projection = ProjectionConfig(iterations=FLAGS.rec_iters, restarts=FLAGS.rec_rr,
                                      learning_rate=FLAGS.rec_lr,
                                      momentum=FLAGS.rec_momentum)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    import keras

    from defense_gan_tf.export import export_saved_model

    generator = keras.models.load_model(FLAGS.generator)
    classifier = keras.models.load_model(FLAGS.classifier)
    path = export_saved_model(classifier, generator, FLAGS.output_dir,
                              projection_config=projection,
                              detection_threshold=FLAGS.detection_threshold,
                              seed=FLAGS.seed)
    print(f"SavedModel written to {path} (signatures: serving_default, project, generate)")


if __name__ == "__main__":
    app.run(main)
