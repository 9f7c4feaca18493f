#!/usr/bin/env python3
r"""Trains a Defense-GAN WGAN-GP generator; rerun with the same --output_dir to resume.

Example:
  python bin/train.py --dataset=mnist --output_dir=runs/mnist \
      --data_dir=../shared/data --time_budget_minutes=60
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "mnist", ["mnist", "f-mnist", "fashion_mnist", "celeba"],
                  "Dataset (and config preset) to train on.")
flags.DEFINE_string("output_dir", None, "Folder for checkpoints, samples, logs and "
                    "the generator; an existing run there is resumed.")
flags.DEFINE_string("data_dir", None, "Local folder holding mnist/ and fashion-mnist/ "
                    "IDX files (default: $DEFENSE_GAN_DATA_DIR, then tensorflow-datasets).")
flags.DEFINE_integer("train_iters", None, "Generator iterations (default: the preset's).")
flags.DEFINE_float("time_budget_minutes", None, "Stop cleanly, with a checkpoint, "
                   "before this much wall time has passed.")
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
flags.DEFINE_multi_string("set", [], "Any other config override as key=value with a "
                          "dotted key, e.g. --set=model.generator_batch_norm=true.")
flags.mark_flag_as_required("output_dir")

_OVERRIDES = {
    "net_dim": "model.net_dim", "latent_dim": "model.latent_dim",
    "batch_size": "gan.batch_size", "critic_steps": "gan.critic_steps",
    "gradient_penalty_weight": "gan.gradient_penalty_weight",
    "learning_rate": "gan.learning_rate", "train_iters": "gan.train_iters",
    "checkpoint_every": "gan.checkpoint_every", "sample_every": "gan.sample_every",
    "log_every": "gan.log_every", "seed": "gan.seed",
}


def build_config():
    from defense_gan_tf import config as config_lib

    overrides = {key: FLAGS[name].value for name, key in _OVERRIDES.items()
                 if FLAGS[name].value is not None}
    for item in FLAGS.set:
        if "=" not in item:
            raise app.UsageError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value.strip()
    try:
        return config_lib.override(config_lib.preset(FLAGS.dataset), overrides)
    except ValueError as e:
        raise app.UsageError(f"bad config override: {e}") from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.time_budget_minutes is not None and FLAGS.time_budget_minutes <= 0:
        raise app.UsageError("--time_budget_minutes must be > 0")
    if FLAGS.num_cpu_devices is not None and FLAGS.num_cpu_devices < 1:
        raise app.UsageError("--num_cpu_devices must be >= 1")
    if FLAGS.data_dir and not os.path.isdir(FLAGS.data_dir):
        raise app.UsageError(f"--data_dir {FLAGS.data_dir} is not a folder")
    config = build_config()

    import tensorflow as tf

    if FLAGS.num_cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.num_cpu_devices)

    from defense_gan_tf import training

    strategy = training.make_strategy(FLAGS.strategy)
    try:
        result = training.train_gan(config, FLAGS.output_dir, data_dir=FLAGS.data_dir,
                                    strategy=strategy,
                                    time_budget_minutes=FLAGS.time_budget_minutes,
                                    overwrite=FLAGS.overwrite)
    except (training.ConfigMismatchError, training.CheckpointError,
            training.OutputDirBusyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: iterations {result.start_iteration} -> {result.iteration} "
          f"({result.stop_reason}) in {result.seconds:.1f} s; "
          f"generator: {result.generator_path}")
    return 0


if __name__ == "__main__":
    app.run(main)
