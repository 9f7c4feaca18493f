#!/usr/bin/env python3
"""Benchmark: Defense-GAN projection throughput (images/s at L=200, R=10).

For each batch size, in one process, the paper's 64-wide MNIST generator:
  compiled: defense_gan_tf.defense.project (one tf.function, while loop over steps);
  eager:    the same steps as a plain Python loop with a GradientTape;
  tf1:      a graph built the TF1 way: tf.compat.v1 Graph + Session, a tf.while_loop
            updating a z variable in place with the ApplyMomentum kernel that
            tf.compat.v1.train.MomentumOptimizer runs (the authors' approach), and
            the generator written with raw TF ops from the same weights.
Also measured: this machine's float32 matmul peak (4096x4096 tf.matmul).

Timing: each variant runs S + 1 steps and 1 step; per-step time = (t_{S+1} - t_1) / S,
overhead t_1 - per_step, and images/s at L=200 = B / (200 * per_step + overhead). One step of gradient descent
costs the generator's forward pass plus its backward pass to z, counted
analytically as 2 x (forward MACs + input-gradient MACs) = 4 x forward MACs per
latent vector; achieved GFLOP/s = that count x B x R / per-step time.

  python bench/projection.py --batch_sizes=1,4,16,64,256 --steps=4
Writes bench/results/projection.json and bench/results/projection.md.
"""

import statistics
import sys
import time

from absl import app, flags

from defense_gan_tf import hardware, jsonio

hardware.enable_onednn()  # before TensorFlow is imported


FLAGS = flags.FLAGS
flags.DEFINE_list("batch_sizes", ["1", "4", "16", "64", "256"], "Batch sizes.")
flags.DEFINE_integer("steps", 4, "Timed projection steps per measurement.")
flags.DEFINE_integer("repeats", 2, "Repeats per measurement (median).")
flags.DEFINE_integer("restarts", 10, "R.")
flags.DEFINE_integer("iterations", 200, "L to extrapolate to.")
flags.DEFINE_integer("net_dim", 64, "Generator width (64 = the paper's).")
flags.DEFINE_list("variants", ["compiled", "eager", "tf1"], "Variants to time: compiled "
                  "(the package's Projector), xla (the same with jit_compile=True), eager "
                  "(a Python loop over a tape), tf1 (a TF1-style graph and session).")
flags.DEFINE_integer("matmul_size", 4096, "n of the n x n float32 matmul whose speed is "
                     "taken as the machine's peak (smaller only for smoke tests: a small "
                     "matmul understates the peak).")
flags.DEFINE_string("output", "bench/results/projection", "Output path without extension.")


def matmul_peak_gflops(n=4096, repeats=5):
    import tensorflow as tf

    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    f = tf.function(lambda: tf.matmul(a, b))
    f().numpy()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f().numpy()
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(times) / 1e9


def _step_counts(steps):
    """The two loop lengths every variant is timed at: their difference gives the time
    per step, the shorter one the fixed overhead (a projection takes at least 1 step)."""
    return (1, 1 + steps)


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_compiled(generator, images, z_init, steps, repeats, jit_compile=False):
    from defense_gan_tf.config import ProjectionConfig
    from defense_gan_tf.defense import Projector

    out = {}
    for s in _step_counts(steps):
        proj = Projector(generator, ProjectionConfig(iterations=s, restarts=FLAGS.restarts),
                         jit_compile=jit_compile)
        run = lambda: proj(images, z_init=z_init).error.numpy()
        run()  # trace
        out[s] = _median_time(run, repeats)
    return out


def time_eager(generator, images, z_init, steps, repeats):
    import tensorflow as tf

    targets = tf.repeat(images, FLAGS.restarts, axis=0)

    def run(n):
        z, v = tf.identity(z_init), tf.zeros_like(z_init)
        for _ in range(n):
            with tf.GradientTape() as tape:
                tape.watch(z)
                loss = tf.reduce_sum(tf.reduce_mean(tf.square(
                    generator(z, training=False) - targets), axis=[1, 2, 3]))
            v = 0.7 * v + tape.gradient(loss, z)
            z = z - 10.0 * v
        err = tf.reduce_mean(tf.square(generator(z, training=False) - targets), [1, 2, 3])
        return tf.argmin(tf.reshape(err, [-1, FLAGS.restarts]), axis=1).numpy()

    run(1)
    return {s: _median_time(lambda: run(s), repeats) for s in _step_counts(steps)}


def _tf1_generator(weights, z, batch):
    """The 28x28 generator with raw TF ops (dense, relu, conv2d_transpose, crop, sigmoid)."""
    import tensorflow as tf

    (w0, b0), (w1, b1), (w2, b2), (w3, b3) = weights
    c = tf.constant
    d4 = w1.shape[3]  # 4 * net_dim input channels of the first transposed conv
    x = tf.nn.relu(tf.matmul(z, c(w0)) + c(b0))
    x = tf.reshape(x, [batch, 4, 4, d4])
    x = tf.nn.relu(tf.nn.conv2d_transpose(x, c(w1), [batch, 8, 8, w1.shape[2]], 2) + c(b1))
    x = x[:, :7, :7, :]
    x = tf.nn.relu(tf.nn.conv2d_transpose(x, c(w2), [batch, 14, 14, w2.shape[2]], 2) + c(b2))
    return tf.sigmoid(tf.nn.conv2d_transpose(x, c(w3), [batch, 28, 28, 1], 2) + c(b3))


def time_tf1(generator, images, z_init, steps, repeats):
    import numpy as np
    import tensorflow as tf

    weights = [(l.kernel.numpy(), l.bias.numpy()) for l in generator.layers
               if hasattr(l, "kernel")]
    n = int(z_init.shape[0])
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 28, 28, 1])
        z0 = tf.compat.v1.placeholder(tf.float32, [n, z_init.shape[1]])
        num_steps = tf.compat.v1.placeholder(tf.int32, [])
        z = tf.compat.v1.Variable(tf.zeros([n, z_init.shape[1]]), name="z")
        accum = tf.compat.v1.Variable(tf.zeros([n, z_init.shape[1]]), name="momentum")
        targets = tf.repeat(x, FLAGS.restarts, axis=0)
        reset = tf.group(z.assign(z0), accum.assign(tf.zeros_like(z0)))

        def body(i):
            value = z.read_value()
            loss = tf.reduce_sum(tf.reduce_mean(tf.square(
                _tf1_generator(weights, value, n) - targets), axis=[1, 2, 3]))
            grad = tf.gradients(loss, value)[0]
            update = tf.raw_ops.ResourceApplyMomentum(
                var=z.handle, accum=accum.handle, lr=tf.constant(10.0), grad=grad,
                momentum=tf.constant(0.7))
            with tf.control_dependencies([update]):
                return i + 1

        with tf.control_dependencies([reset]):
            start = tf.constant(0)
        loop = tf.compat.v1.while_loop(lambda i: i < num_steps, body, [start],
                                       back_prop=False, parallel_iterations=1)
        with tf.control_dependencies([loop]):
            final = _tf1_generator(weights, z.read_value(), n)
            err = tf.reduce_mean(tf.square(final - targets), axis=[1, 2, 3])
            best = tf.argmin(tf.reshape(err, [-1, FLAGS.restarts]), axis=1)
        init = tf.compat.v1.global_variables_initializer()
    sess = tf.compat.v1.Session(graph=graph)
    sess.run(init)
    feed = {x: images.numpy(), z0: z_init.numpy()}
    # The raw-op generator must equal the Keras one.
    ref = generator(z_init[:2], training=False).numpy()
    with graph.as_default():
        probe = _tf1_generator(weights, tf.constant(z_init.numpy()[:2]), 2)
    np.testing.assert_allclose(sess.run(probe), ref, rtol=1e-4, atol=1e-5)
    sess.run(best, {**feed, num_steps: 1})
    out = {s: _median_time(lambda: sess.run(best, {**feed, num_steps: s}), repeats)
           for s in _step_counts(steps)}
    sess.close()
    return out


def main(argv):
    del argv
    sizes = [int(b) for b in FLAGS.batch_sizes]
    if min(sizes) < 1 or FLAGS.steps < 1 or FLAGS.matmul_size < 1:
        raise app.UsageError("--batch_sizes, --steps and --matmul_size must be >= 1")
    unknown = set(FLAGS.variants) - {"compiled", "xla", "eager", "tf1"}
    if unknown:
        raise app.UsageError(f"unknown --variants {sorted(unknown)}")
    import tensorflow as tf

    from defense_gan_tf import config as config_lib
    from defense_gan_tf import models
    from defense_gan_tf.defense.cost import generator_macs

    cfg = config_lib.override(config_lib.preset("mnist"), {"model.net_dim": FLAGS.net_dim})
    generator = models.build_generator(cfg, seed=0)
    macs = generator_macs(generator)
    flops_per_latent_step = 4 * macs
    peak = matmul_peak_gflops(FLAGS.matmul_size)
    print(f"matmul peak {peak:.1f} GFLOP/s; generator forward {macs / 1e6:.1f} MMAC/sample",
          flush=True)
    timers = {"compiled": time_compiled, "eager": time_eager, "tf1": time_tf1,
              "xla": lambda *a: time_compiled(*a, jit_compile=True)}
    rows = []
    for b in sizes:
        images = generator(tf.random.stateless_normal([b, 128], seed=[1, b]) * 0.1).numpy()
        images = tf.constant(images)
        z_init = tf.random.stateless_normal([b * FLAGS.restarts, 128], seed=[2, b],
                                            stddev=(1 / 128) ** 0.5)
        row = {"batch": b}
        for name in FLAGS.variants:
            t = timers[name](generator, images, z_init, FLAGS.steps, FLAGS.repeats)
            short, long = _step_counts(FLAGS.steps)
            per_step = max(t[long] - t[short], 1e-9) / FLAGS.steps
            seconds = FLAGS.iterations * per_step + max(t[short] - per_step, 0.0)
            gflops = flops_per_latent_step * b * FLAGS.restarts / per_step / 1e9
            row[name] = {"images_per_second": b / seconds, "ms_per_step": 1000 * per_step,
                         "gflops": gflops, "fraction_of_matmul_peak": gflops / peak}
            print(f"batch {b:4d} {name:9s} {b / seconds:8.3f} img/s  "
                  f"{1000 * per_step:9.1f} ms/step  {gflops:6.1f} GFLOP/s "
                  f"({100 * gflops / peak:.0f}% of peak)", flush=True)
        rows.append(row)
    result = {
        "benchmark": "defense_gan_projection",
        "generator": f"mnist, net_dim {FLAGS.net_dim}, latent 128",
        "iterations": FLAGS.iterations, "restarts": FLAGS.restarts,
        "timed_steps": FLAGS.steps, "repeats": FLAGS.repeats,
        "method": "per-step time from runs of S + 1 and 1 steps, extrapolated to L",
        "flops_per_latent_step": flops_per_latent_step,
        "matmul_peak_gflops": peak, "matmul_size": FLAGS.matmul_size,
        "rows": rows,
        "goals": "batch >= 64: compiled >= 70% of matmul peak and not slower than tf1",
        "machine": hardware.describe(),
        "command": "python bench/projection.py " + " ".join(sys.argv[1:]),
    }
    jsonio.write_json(FLAGS.output + ".json", result, sort_keys=False)
    lines = [f"Projection at L={FLAGS.iterations}, R={FLAGS.restarts}, {result['generator']}; "
             f"matmul peak {peak:.1f} GFLOP/s. Command: `{result['command']}`", "",
             "| batch | " + " | ".join(f"{v} img/s | {v} % peak" for v in FLAGS.variants) + " |",
             "|---|" + "---|---|" * len(FLAGS.variants)]
    for row in rows:
        cells = []
        for v in FLAGS.variants:
            cells += [f"{row[v]['images_per_second']:.3f}",
                      f"{100 * row[v]['fraction_of_matmul_peak']:.0f}%"]
        lines.append(f"| {row['batch']} | " + " | ".join(cells) + " |")
    with open(FLAGS.output + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
