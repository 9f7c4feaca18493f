#!/usr/bin/env python3
r"""Trains a Defense-GAN WGAN-GP generator; rerun with the same --output_dir to resume.

Every call records its command line, its iterations, its in-run evaluations and why it
stopped in --output_dir/progress.json ("runs"); bin/package_generator.py writes them
into the package manifest's train_commands.

Example:
  python bin/train.py --dataset=mnist --output_dir=runs/mnist \
      --data_dir=../shared/data --time_budget_minutes=60
"""

import os
import sys

from absl import app, flags

import flags as shared  # bin/flags.py
from defense_gan_tf.config import PRECISIONS

FLAGS = flags.FLAGS
shared.define_data_flags(with_celeba=True)
flags.DEFINE_string("output_dir", None, "Folder for checkpoints, samples, logs and "
                    "the generator; an existing run there is resumed.")
flags.DEFINE_integer("train_iters", None, "Generator iterations (default: the preset's).")
shared.define_time_budget_flag("Stop cleanly, with a checkpoint, before this much wall "
                               "time has passed")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy.")
flags.DEFINE_integer("num_cpu_devices", None, "Split the CPU into this many logical "
                     "devices (to try --strategy=mirrored without GPUs).")
flags.DEFINE_integer("seed", None, "Random seed (data order, z, penalty weights).")
flags.DEFINE_bool("overwrite", False, "Discard an existing run in --output_dir.")
flags.DEFINE_integer("net_dim", None, "Override model.net_dim (base width).")
flags.DEFINE_integer("latent_dim", None, "Override model.latent_dim.")
flags.DEFINE_integer("batch_size", None, "Override gan.batch_size.")
flags.DEFINE_integer("critic_steps", None, "Override gan.critic_steps.")
flags.DEFINE_float("gradient_penalty_weight", None, "Override gan.gradient_penalty_weight.")
flags.DEFINE_float("learning_rate", None, "Override gan.learning_rate.")
flags.DEFINE_integer("checkpoint_every", None, "Override gan.checkpoint_every.")
flags.DEFINE_integer("sample_every", None, "Override gan.sample_every.")
flags.DEFINE_integer("log_every", None, "Override gan.log_every.")
flags.DEFINE_enum("precision", None, list(PRECISIONS) + ["auto"], "Override gan.precision: "
                  "mixed_bfloat16 computes the networks in bfloat16 with float32 "
                  "weights, losses and gradient penalty (default: float32); auto: "
                  "mixed_bfloat16 where the device in use computes bfloat16 natively (a "
                  "CPU with AVX512-BF16 or AMX-BF16, a GPU from compute capability 8.0, a "
                  "TPU), else float32.")
flags.DEFINE_integer("quality_every", 0, "Every this many iterations, score the generator "
                     "(classifier score, Frechet distance, Defense-GAN-Orig accuracy on "
                     "clean, transferred-FGSM, random-sign and paper-style FGSM images) into "
                     "<output_dir>/quality.jsonl; 0 turns it off. Needs --quality_classifier.")
flags.DEFINE_string("quality_classifier", None, "The dataset's classifier A (.keras, "
                    "logits), e.g. pretrained/mnist/classifier_A.keras.")
flags.DEFINE_integer("quality_samples", 2000, "Generated images for the quality scores.")
flags.DEFINE_integer("quality_images", 100, "First test images for the defense figures.")
flags.DEFINE_integer("quality_paper_fgsm_images", 20, "First test images attacked with "
                     "paper-style FGSM (full gradient through the projection; about four "
                     "projections' cost per image); 0 skips it.")
flags.DEFINE_string("warm_start", None, "A packaged generator folder (e.g. "
                    "pretrained/mnist, with generator.keras, critic.keras and "
                    "manifest.json) to continue from when --output_dir holds no checkpoint: "
                    "weights and iteration count carry over, optimizer state starts afresh. "
                    "Ignored when the run can resume exactly.")
flags.DEFINE_bool("warm_start_fresh_critic", False, "With --warm_start: start the critic "
                  "from fresh initial weights instead of the package's critic.keras (for a "
                  "package shipped without its critic); recorded in the warm start entry.")
flags.DEFINE_integer("critic_warmup", 200, "With --warm_start_fresh_critic: rounds of "
                     "critic-only updates (critic_steps each, generator frozen) that train "
                     "the new critic before the generator trains against it.")
flags.DEFINE_float("ema_decay", None, "Override gan.ema_decay: decay of the averaged "
                   "generator kept beside the trained one and saved as generator_ema.keras "
                   "(default 0.999; 0 keeps no average).")
flags.DEFINE_bool("jit_compile", None, "Override gan.jit_compile: compile the training "
                  "step with XLA (bench/train_step.py --jit tells whether it pays).")
flags.DEFINE_bool("quality_average_full", False, "Score the averaged generator on every "
                  "--quality_every figure; by default only on the classifier score, Frechet "
                  "distance, clean and transferred FGSM (about half the cost).")
flags.DEFINE_multi_string("set", [], "Any other config override as key=value with a "
                          "dotted key, e.g. --set=model.generator_batch_norm=true.")
flags.mark_flag_as_required("output_dir")

# The flags that set GAN and model config fields (bin/flags.py's one table).
_OVERRIDES = {flag: field for field, flag in shared.FLAG_OF_FIELD.items()
              if field.startswith(("gan.", "model."))}


def build_config():
    from defense_gan_tf import config as config_lib

    overrides = {key: FLAGS[name].value for name, key in _OVERRIDES.items()
                 if FLAGS[name].value is not None}
    if overrides.get("gan.precision") == "auto":
        from defense_gan_tf import hardware

        overrides["gan.precision"] = hardware.auto_precision()
        print(f"--precision=auto: {overrides['gan.precision']} on this device")
    for item in FLAGS.set:
        if "=" not in item:
            raise app.UsageError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value.strip()
    try:
        return config_lib.override(config_lib.preset(FLAGS.dataset), overrides)
    except ValueError as e:
        raise app.UsageError(f"bad config override: {shared.with_flags(e)}") from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    shared.time_budget_seconds()  # refused here, before any work, if not > 0
    if FLAGS.num_cpu_devices is not None and FLAGS.num_cpu_devices < 1:
        raise app.UsageError("--num_cpu_devices must be >= 1")
    if FLAGS.data_dir and not os.path.isdir(FLAGS.data_dir):
        raise app.UsageError(f"--data_dir {FLAGS.data_dir} is not a folder")
    shared.check_paths(outputs=("output_dir",))
    if FLAGS.quality_every < 0:
        raise app.UsageError("--quality_every must be >= 0")
    if FLAGS.quality_every and not FLAGS.quality_classifier:
        raise app.UsageError("--quality_every needs --quality_classifier")
    if FLAGS.quality_classifier and not os.path.isfile(FLAGS.quality_classifier):
        raise app.UsageError(f"--quality_classifier {FLAGS.quality_classifier} is not a file")
    if FLAGS.warm_start_fresh_critic and not FLAGS.warm_start:
        raise app.UsageError("--warm_start_fresh_critic needs --warm_start (the package "
                             "whose generator the new critic trains against)")
    if FLAGS.critic_warmup < 0:
        raise app.UsageError(f"--critic_warmup must be >= 0, got {FLAGS.critic_warmup}")
    config = build_config()
    if not FLAGS.overwrite:  # a folder of another config is refused before TensorFlow loads
        from defense_gan_tf.training.run_folder import ConfigMismatchError, check_resumable

        try:
            check_resumable(FLAGS.output_dir, config)
        except ConfigMismatchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    import tensorflow as tf

    if FLAGS.num_cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.num_cpu_devices)

    from defense_gan_tf import training
    from defense_gan_tf.console import command_line
    from defense_gan_tf.data import DatasetUnavailableError
    from defense_gan_tf.errors import InputError

    strategy = training.make_strategy(FLAGS.strategy)
    evaluator = average_evaluator = None
    if FLAGS.quality_every:
        from defense_gan_tf.generators import training_curve

        try:
            settings = training_curve.CurveSettings(
                num_samples=FLAGS.quality_samples, num_images=FLAGS.quality_images,
                paper_fgsm_images=FLAGS.quality_paper_fgsm_images,
                projection=config.projection)
            evaluator = training_curve.probe_for_dataset(
                config.dataset, FLAGS.quality_classifier, data_dir=FLAGS.data_dir,
                settings=settings, pixel_range=config.model.pixel_range)
        except ValueError as e:
            raise app.UsageError(f"--quality_*: {e}") from None
        average_evaluator = evaluator if FLAGS.quality_average_full else evaluator.brief()
    warm_start = None
    if FLAGS.warm_start:
        try:
            warm_start = training.load_warm_start(
                FLAGS.warm_start, fresh_critic=FLAGS.warm_start_fresh_critic,
                critic_warmup=FLAGS.critic_warmup)
        except (OSError, ValueError) as e:
            raise app.UsageError(f"--warm_start: {e}") from None
    try:
        result = training.train_gan(config, FLAGS.output_dir, data_dir=FLAGS.data_dir,
                                    strategy=strategy,
                                    time_budget_minutes=FLAGS.time_budget_minutes,
                                    overwrite=FLAGS.overwrite, evaluator=evaluator,
                                    evaluate_every=FLAGS.quality_every,
                                    warm_start=warm_start,
                                    average_evaluator=average_evaluator,
                                    command=command_line(["bin/train.py"] + sys.argv[1:]),
                                    launcher=os.environ.get("DEFENSE_GAN_LAUNCHER"))
    except (training.ConfigMismatchError, training.CheckpointError,
            training.OutputDirBusyError, training.WarmStartError, InputError,
            FileNotFoundError, DatasetUnavailableError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: iterations {result.start_iteration} -> {result.iteration} "
          f"({result.stop_reason}) in {result.seconds:.1f} s; "
          f"generator: {result.generator_path}"
          + (f", averaged: {result.average_path}" if result.average_path else ""))
    if result.stop_reason == "time_budget":  # stopped with a checkpoint
        shared.exit_unfinished(f"iteration {result.iteration} of {config.gan.train_iters}")
    return 0


if __name__ == "__main__":
    shared.run(main)
