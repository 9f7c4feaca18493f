#!/usr/bin/env python3
r"""Measures what a shipped generator gives Defense-GAN, in parts if need be.

Projects the first --num_images test images of the package's dataset (clean, FGSM
eps 0.3 made on the undefended classifier, random-sign noise of the same size) and
attacks the first --paper_fgsm_images through the unrolled projection (paper-style
FGSM) and the first --bpda_fgsm_images through BPDA, at the package's L and R (or --rec_iters / --rec_rr), and classifies the
reconstructions with --classifier (Defense-GAN-Orig; paper sections 3.3 and 4).
The figures, with 95% intervals, go into the package's manifest.json under
"defense_measurements" (one entry per file and settings; a measurement that exists is
repeated only with --overwrite) and to defense_figures.md beside it; those of the
shipped generator.keras also become the headline figures ("defense") unless they
measured fewer images or a weaker projection than the figures there
(--generator_file=generator_ema.keras measures the averaged generator).

500 images at L=200, R=10 take hours on 2 CPU cores. Each finished batch is cached
under --cache_dir, so a run stopped by --time_budget_minutes (exit status 3), a
signal or a crash continues where it was when the same command runs again; the
manifest changes only when all batches are done. Several workers sharing --cache_dir
(--shard=I/N each) split every stage's batches and end with the same figures.

Example (MNIST, classifier A, 500 images, 100 minutes per part):
  python bin/measure_generator.py --package_dir=pretrained/mnist \
      --classifier=pretrained/mnist/classifier_A.keras --num_images=500 \
      --data_dir=../shared/data --time_budget_minutes=100
"""

import os
import sys
import time

from absl import app, flags

import flags as shared  # bin/flags.py (turns oneDNN on before TensorFlow loads)

FLAGS = flags.FLAGS
flags.DEFINE_string("package_dir", None, "A bin/package_generator.py folder "
                    "(manifest.json and generator.keras).")
flags.DEFINE_string("classifier", None, "The dataset's classifier A (.keras, logits), "
                    "trained on real images.")
flags.DEFINE_string("data_dir", None, "Local IDX folder (default: $DEFENSE_GAN_DATA_DIR).")
flags.DEFINE_integer("num_images", 500, "First test images: clean, transferred FGSM and "
                     "random-sign figures.")
flags.DEFINE_integer("paper_fgsm_images", None, "First test images attacked by paper-style "
                     "FGSM (default: --num_images; 0 skips it).")
flags.DEFINE_integer("bpda_fgsm_images", 0, "First test images attacked by FGSM through "
                     "BPDA (the projection's gradient taken as the identity; two "
                     "projections per image); 0 skips it.")
flags.DEFINE_float("eps", 0.3, "L-infinity size of FGSM and of the random-sign noise.")
flags.DEFINE_integer("rec_iters", None, "Projection steps L (default: the package's).")
flags.DEFINE_integer("rec_rr", None, "Projection restarts R (default: the package's).")
flags.DEFINE_integer("batch_size", 100, "Images per projection batch (a cached unit).")
flags.DEFINE_integer("attack_batch_size", 5, "Images per paper-style FGSM batch.")
flags.DEFINE_string("cache_dir", "runs/measure_cache", "Where finished batches are kept.")
flags.DEFINE_string("generator_file", None, "The generator file of the package to measure "
                    "(default: the manifest's file, generator.keras; generator_ema.keras for "
                    "the averaged one).")
flags.DEFINE_bool("overwrite", False, "Measure again a file already measured with these "
                  "settings, and let figures that measured less replace the headline ones.")
flags.DEFINE_bool("skip_measured", False, "Exit 0 without measuring when the file was "
                  "measured with these settings already (for a script that repeats a "
                  "sequence of measurements until every one is done).")
shared.define_execution_flags()
shared.define_shard_flags("every stage's batches (it waits for the batches other workers "
                          "hold, so that all finish together)")
shared.define_time_budget_flag("No batch starts after this many minutes",
                               zero_means_none=True)
flags.mark_flags_as_required(["package_dir", "classifier"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    manifest = os.path.join(FLAGS.package_dir, "manifest.json")
    if not os.path.isfile(manifest):
        raise app.UsageError(f"--package_dir {FLAGS.package_dir} has no manifest.json")
    shared.check_paths(files=("classifier",), folders=("data_dir",), outputs=("cache_dir",))
    budget = shared.time_budget_seconds()
    shard, claim_timeout = shared.shard_settings()
    import dataclasses
    import json

    from defense_gan_tf import config as config_lib
    from defense_gan_tf.console import command_line, echo

    with open(manifest) as f:
        cfg = config_lib.Config.from_dict(json.load(f)["config"])
    given = {k: v for k, v in (("iterations", FLAGS.rec_iters), ("restarts", FLAGS.rec_rr))
             if v is not None}
    paper_images = (FLAGS.num_images if FLAGS.paper_fgsm_images is None
                    else FLAGS.paper_fgsm_images)
    from defense_gan_tf.generators import training_curve

    with shared.usage_errors():
        settings = training_curve.CurveSettings(
            num_samples=2000, num_images=FLAGS.num_images, paper_fgsm_images=paper_images,
            bpda_fgsm_images=FLAGS.bpda_fgsm_images,
            eps=FLAGS.eps, projection=dataclasses.replace(cfg.projection, **given),
            batch_size=FLAGS.batch_size, paper_fgsm_batch_size=FLAGS.attack_batch_size)

    from defense_gan_tf.errors import InputError
    from defense_gan_tf.atomic import write_text
    from defense_gan_tf.generators.package import (AlreadyMeasured, add_defense_figures,
                                                   check_measurable,
                                                   defense_figures_markdown)

    try:  # before the probe, whose test images and FGSM take a while to make
        check_measurable(FLAGS.package_dir, settings, file=FLAGS.generator_file,
                         overwrite=FLAGS.overwrite)
    except AlreadyMeasured as e:
        if not FLAGS.skip_measured:
            raise app.UsageError(f"--package_dir: {e}") from None
        echo(f"nothing to do (--skip_measured): {e}")
        return
    except InputError as e:
        raise app.UsageError(f"--package_dir: {e}") from None
    try:
        probe = training_curve.probe_for_dataset(cfg.dataset, FLAGS.classifier,
                                                 data_dir=FLAGS.data_dir, settings=settings,
                                                 pixel_range=cfg.model.pixel_range)
    except ValueError as e:
        raise app.UsageError(f"--classifier: {e}") from None
    deadline = None if budget is None else time.monotonic() + budget
    echo(f"{cfg.dataset}: {probe.planned_batches()} batches at L="
         f"{settings.projection.iterations}, R={settings.projection.restarts}; cache "
         f"{FLAGS.cache_dir}")
    try:
        with shared.projection_execution():
            figures = add_defense_figures(
                FLAGS.package_dir, probe, command=command_line(sys.argv),
                cache_dir=FLAGS.cache_dir, deadline=deadline, log=echo,
                file=FLAGS.generator_file, overwrite=FLAGS.overwrite, shard=shard,
                claim_timeout=claim_timeout)
    except training_curve.BudgetExhausted as stop:
        shared.exit_unfinished(f"{stop}; the manifest is unchanged")
    except InputError as e:
        raise app.UsageError(f"--package_dir: {e}") from None
    with open(manifest) as f:
        write_text(os.path.join(FLAGS.package_dir, "defense_figures.md"),
                   defense_figures_markdown(json.load(f)))
    print(training_curve.defense_table(figures))


if __name__ == "__main__":
    shared.run(main)
