#!/usr/bin/env python3
r"""Evaluates a trained generator and packages it under pretrained/<dataset>/.

Writes generator.keras, critic.keras (so training can continue from the
package with bin/train.py --warm_start; --noship_critic leaves it out of a
final package), samples.png, the run's quality.jsonl
with quality_curve.png, and manifest.json (config, precision, iterations, wall
time, warm restarts, machine, sha256, classifier score and Frechet distance
next to the real-data ceiling, and the training commands the run recorded in its
progress.json). The quality classifier is loaded from
--classifier, or trained on the real training set and saved there when the
file is missing. An existing package is replaced only with --overwrite.

Example:
  python bin/package_generator.py --run_dir=runs/mnist --dest_dir=runs/package/mnist \
      --classifier=pretrained/mnist/classifier_A.keras --data_dir=../shared/data
"""

import os
import sys

from absl import app, flags

import flags as shared  # bin/flags.py (turns oneDNN on before TensorFlow loads)


FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "bin/train.py output folder.")
flags.DEFINE_string("dest_dir", None, "Where to write the package.")
flags.DEFINE_string("classifier", None, "Quality classifier (.keras); trained and saved "
                    "here if the file does not exist.")
flags.DEFINE_string("data_dir", None, "Local IDX folder (default: $DEFENSE_GAN_DATA_DIR).")
flags.DEFINE_enum("classifier_model", "A", list("ABCDEF"), "Architecture of a newly "
                  "trained quality classifier.")
flags.DEFINE_integer("classifier_epochs", 3, "Epochs of a newly trained quality classifier.")
flags.DEFINE_integer("num_samples", 10_000, "Generated images for the quality figures.")
flags.DEFINE_multi_string("train_command", [], "Training command(s) the run did not "
                          "record itself (bin/train.py records each call in "
                          "progress.json); the manifest's train_commands are these, then "
                          "the run's own.")
flags.DEFINE_integer("defense_images", 0, "Also measure Defense-GAN-Orig (the run's L, R) "
                     "on this many first test images: clean, transferred FGSM, random-sign "
                     "and paper-style FGSM accuracy, into the manifest (0: skip; 500 at "
                     "L=200, R=10 take 1-3 hours on 2 CPU cores: see "
                     "bin/measure_generator.py to run them in parts).")
flags.DEFINE_string("defense_cache", "runs/measure_cache", "Where the --defense_images "
                    "batches are kept, so that a stopped run continues when rerun "
                    "(bin/measure_generator.py measures a package in parts).")
flags.DEFINE_bool("ship_critic", True, "Copy the run's critic.keras into the package, "
                  "so that bin/train.py --warm_start can continue from it; "
                  "--noship_critic for a final generator (the manifest says so).")
flags.DEFINE_bool("overwrite", False, "Replace a package already in --dest_dir (and allow "
                  "packaging a run of 0 iterations).")
flags.mark_flags_as_required(["run_dir", "dest_dir", "classifier"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for name in ("config.json", "progress.json", "generator.keras"):
        if not os.path.isfile(os.path.join(FLAGS.run_dir, name)):
            raise app.UsageError(f"--run_dir {FLAGS.run_dir} has no {name}")
    if FLAGS.num_samples < 2:
        raise app.UsageError("--num_samples must be >= 2")
    if FLAGS.defense_images < 0:
        raise app.UsageError("--defense_images must be >= 0")
    if os.path.exists(FLAGS.dest_dir) and not os.path.isdir(FLAGS.dest_dir):
        raise app.UsageError(f"--dest_dir {FLAGS.dest_dir} is a file, not a folder")
    if os.path.isfile(os.path.join(FLAGS.dest_dir, "manifest.json")) and not FLAGS.overwrite:
        raise app.UsageError(f"--dest_dir {FLAGS.dest_dir} already holds a packaged "
                             "generator; pass --overwrite to replace it")
    import json

    from defense_gan_tf import config as config_lib
    from defense_gan_tf import data
    from defense_gan_tf.console import command_line, echo, relative_argument
    from defense_gan_tf.generators import training_curve
    from defense_gan_tf.generators.package import package_generator, quality_classifier

    with open(os.path.join(FLAGS.run_dir, "config.json")) as f:
        cfg = config_lib.Config.from_dict(json.load(f))
    test_x, test_y = data.load_numpy(cfg.dataset, "test", data_dir=FLAGS.data_dir)
    val_x, _ = data.load_numpy(cfg.dataset, "validation", data_dir=FLAGS.data_dir)
    classifier, description = quality_classifier(
        FLAGS.classifier, cfg.dataset, data_dir=FLAGS.data_dir, model=FLAGS.classifier_model,
        epochs=FLAGS.classifier_epochs)
    probe = None
    if FLAGS.defense_images:
        probe = training_curve.DefenseQualityProbe(
            classifier, test_x, test_y, training_curve.CurveSettings(
                num_samples=2000, num_images=FLAGS.defense_images,
                paper_fgsm_images=FLAGS.defense_images, projection=cfg.projection),
            pixel_range=cfg.model.pixel_range)
    try:
        manifest = package_generator(
            FLAGS.run_dir, FLAGS.dest_dir, classifier=classifier, test_images=test_x,
            reference_images=val_x, num_samples=FLAGS.num_samples,
            command=command_line(sys.argv), classifier_description=description,
            train_commands=[" ".join(relative_argument(w) for w in c.split(" "))
                            for c in FLAGS.train_command],
            overwrite=FLAGS.overwrite, include_critic=FLAGS.ship_critic,
            defense_probe=probe,
            defense_cache=FLAGS.defense_cache if probe else None, log=echo)
    except ValueError as e:
        raise app.UsageError(f"--run_dir: {e}") from None
    print(json.dumps({k: manifest[k] for k in ("iterations", "train_wall_seconds",
                                               "sha256", "quality")}, indent=2))


if __name__ == "__main__":
    shared.run(main)
