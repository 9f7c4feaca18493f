#!/usr/bin/env python3
"""Benchmark: the packaged WGAN-GP trainer against a minimal hand-written step.

Measures, in one process, ms per iteration (5 critic steps + 1 generator step,
batch 50) of the paper's 64-wide MNIST model:
  packaged: defense_gan_tf.training.train_gan on real MNIST (data pipeline,
            distribution wrapper, trackers, logging and TensorBoard included),
            once in float32 and once with gan.precision=mixed_bfloat16;
  minimal:  one float32 tf.function with the same updates on batches already in memory;
  jit:      with --jit, the packaged step again with gan.jit_compile=True (XLA), in
            mixed_bfloat16 (float32 with --nobfloat16), to decide whether long runs use it.
The variants are measured in alternating rounds (median of rounds), so that load from
other processes affects all alike. Writes JSON (default bench/results/train_step.json).

  python bench/train_step.py --data_dir=../shared/data --iters=10 --rounds=2
"""

import statistics
import sys
import tempfile
import time

from absl import app, flags

from defense_gan_tf import hardware, jsonio

hardware.enable_onednn()  # before TensorFlow is imported


FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Local IDX folder (default: $DEFENSE_GAN_DATA_DIR).")
flags.DEFINE_integer("iters", 10, "Timed iterations per round (after 3 warm-up ones).")
flags.DEFINE_integer("rounds", 2, "Alternating rounds of each variant.")
flags.DEFINE_string("output", "bench/results/train_step.json", "JSON file to write.")
flags.DEFINE_bool("jit", False, "Also time the packaged step compiled with XLA "
                  "(gan.jit_compile=True), in mixed_bfloat16 (float32 with --nobfloat16).")
flags.DEFINE_bool("bfloat16", True, "Also time the packaged step in mixed_bfloat16 (about "
                  "28 s per iteration on a CPU without hardware bfloat16).")


def minimal_step_ms(images, iters):
    import keras
    import numpy as np
    import tensorflow as tf

    from defense_gan_tf import config as config_lib
    from defense_gan_tf import models

    cfg = config_lib.preset("mnist")
    g, d = models.build_generator(cfg, seed=0), models.build_critic(cfg, seed=0)
    g_opt = keras.optimizers.Adam(1e-4, 0.5, 0.9, epsilon=1e-8)
    d_opt = keras.optimizers.Adam(1e-4, 0.5, 0.9, epsilon=1e-8)
    g_opt.build(g.trainable_variables)
    d_opt.build(d.trainable_variables)

    @tf.function
    def step(real):  # real: [5, 50, 28, 28, 1]
        for k in range(5):
            z = tf.random.normal([50, 128])
            alpha = tf.random.uniform([50, 1, 1, 1])
            with tf.GradientTape() as tape:
                fake = g(z, training=True)
                x_hat = alpha * real[k] + (1 - alpha) * fake
                with tf.GradientTape() as inner:
                    inner.watch(x_hat)
                    s = d(x_hat, training=True)
                grad = inner.gradient(s, x_hat)
                gp = tf.square(tf.sqrt(tf.reduce_sum(tf.square(grad), [1, 2, 3]) + 1e-12) - 1)
                loss = tf.reduce_mean(d(fake, training=True)) - tf.reduce_mean(
                    d(real[k], training=True)) + 10 * tf.reduce_mean(gp)
            d_opt.apply_gradients(zip(tape.gradient(loss, d.trainable_variables),
                                      d.trainable_variables))
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(d(g(tf.random.normal([50, 128]), training=True),
                                     training=True))
        g_opt.apply_gradients(zip(tape.gradient(loss, g.trainable_variables),
                                  g.trainable_variables))
        return loss

    rng = np.random.default_rng(0)
    batches = [tf.constant(images[rng.integers(0, len(images), 250)].reshape(5, 50, 28, 28, 1))
               for _ in range(4)]
    for i in range(3):
        step(batches[i % 4]).numpy()
    times = []
    for i in range(iters):
        t0 = time.perf_counter()
        step(batches[i % 4]).numpy()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def packaged_step_ms(images, iters, precision="float32", jit_compile=False):
    from defense_gan_tf import config as config_lib
    from defense_gan_tf import training

    cfg = config_lib.override(config_lib.preset("mnist"), {
        "gan.train_iters": iters + 3, "gan.log_every": 1, "gan.precision": precision,
        "gan.checkpoint_every": 10**6, "gan.sample_every": 10**6,
        "gan.jit_compile": jit_compile})
    stamps = []

    def log(message):
        if message.startswith("iter "):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        training.train_gan(cfg, out, images=images, log=log)
    deltas = [b - a for a, b in zip(stamps[2:], stamps[3:])]  # Skip 3 warm-up iterations.
    return 1000 * statistics.median(deltas)


def main(argv):
    del argv
    if FLAGS.iters < 2 or FLAGS.rounds < 1:
        raise app.UsageError("--iters must be >= 2 and --rounds >= 1")
    from defense_gan_tf import data

    images, _ = data.load_numpy("mnist", "train", data_dir=FLAGS.data_dir)
    packaged, minimal, bf16, jit = [], [], [], []
    jit_precision = "mixed_bfloat16" if FLAGS.bfloat16 else "float32"
    for r in range(FLAGS.rounds):
        minimal.append(minimal_step_ms(images, FLAGS.iters))
        packaged.append(packaged_step_ms(images, FLAGS.iters))
        if FLAGS.bfloat16:
            bf16.append(packaged_step_ms(images, FLAGS.iters, "mixed_bfloat16"))
        if FLAGS.jit:
            jit.append(packaged_step_ms(images, FLAGS.iters, jit_precision, True))
        print(f"round {r + 1}: minimal {minimal[-1]:.0f} ms, packaged {packaged[-1]:.0f} ms"
              + (f", packaged mixed_bfloat16 {bf16[-1]:.0f} ms" if bf16 else "")
              + (f", with XLA {jit[-1]:.0f} ms" if jit else ""), flush=True)
    bf16_ms = round(statistics.median(bf16), 1) if bf16 else None
    result = {
        "benchmark": "wgan_gp_train_step",
        "model": "mnist generator and critic, net_dim 64, batch 50, 5 critic steps",
        "packaged_ms_per_iter": round(statistics.median(packaged), 1),
        "minimal_ms_per_iter": round(statistics.median(minimal), 1),
        "packaged_over_minimal": round(statistics.median(packaged) /
                                       statistics.median(minimal), 3),
        "packaged_mixed_bfloat16_ms_per_iter": bf16_ms,
        "float32_over_mixed_bfloat16": (
            round(statistics.median(packaged) / statistics.median(bf16), 3) if bf16 else None),
        "packaged_jit_ms_per_iter": (
            round(statistics.median(jit), 1) if jit else None),
        "jit_precision": jit_precision if jit else None,
        "without_over_with_jit": (round(statistics.median(bf16 or packaged)
                                        / statistics.median(jit), 3) if jit else None),
        "rounds": {"packaged": [round(x, 1) for x in packaged],
                   "minimal": [round(x, 1) for x in minimal],
                   "packaged_mixed_bfloat16": [round(x, 1) for x in bf16],
                   "packaged_jit": [round(x, 1) for x in jit]},
        "iters_per_round": FLAGS.iters,
        "goal": "packaged within 15% of minimal (ratio <= 1.15); mixed_bfloat16 used for "
                "long runs if float32_over_mixed_bfloat16 >= 1.25; "
                "XLA used for long runs only if without_over_with_jit > 1.05",
        "machine": hardware.describe(),
        "command": "python bench/train_step.py " + " ".join(sys.argv[1:]),
    }
    jsonio.write_json(FLAGS.output, result, sort_keys=False)
    print(jsonio.dumps(result, indent=2))


if __name__ == "__main__":
    app.run(main)
