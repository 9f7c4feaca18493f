#!/usr/bin/env python3
"""Do mixed_bfloat16 WGAN-GP losses track float32 from the same seed?

Trains the paper's 64-wide MNIST model twice from the same seed, weights and
data order, once per precision, for --iters iterations each, and records the
logged (window-averaged) critic loss, generator loss, gradient penalty and
Wasserstein estimate. Writes JSON and a PNG with one panel per loss:

  python bench/precision_losses.py --data_dir=../shared/data --iters=300
"""

import os
import sys
import tempfile
import time

from absl import app, flags

from defense_gan_tf import hardware, jsonio

hardware.enable_onednn()  # before TensorFlow is imported


FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Local IDX folder (default: $DEFENSE_GAN_DATA_DIR).")
flags.DEFINE_integer("iters", 300, "Iterations per precision.")
flags.DEFINE_integer("log_every", 10, "Iterations averaged per logged point.")
flags.DEFINE_string("output", "bench/results/precision_losses.json", "JSON file to write; "
                    "the plot goes beside it with the extension .png.")

_KEYS = ("critic_loss", "generator_loss", "gradient_penalty", "wasserstein")


def train_once(images, precision):
    from defense_gan_tf import config as config_lib
    from defense_gan_tf import training

    cfg = config_lib.override(config_lib.preset("mnist"), {
        "gan.train_iters": FLAGS.iters, "gan.log_every": FLAGS.log_every,
        "gan.precision": precision, "gan.checkpoint_every": 10**6,
        "gan.sample_every": 10**6})
    points = []

    def log(message):
        if message.startswith("iter "):
            fields = message.split()
            values = dict(zip(fields[::2], fields[1::2]))
            points.append({"iteration": int(fields[1].split("/")[0]),
                           "critic_loss": float(values["critic"]),
                           "generator_loss": float(values["gen"]),
                           "gradient_penalty": float(values["gp"]),
                           "wasserstein": float(values["W"])})

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        training.train_gan(cfg, out, images=images, log=log)
    return points, time.perf_counter() - t0


def plot(series, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6.5), dpi=100)
    FigureCanvasAgg(fig)
    for i, key in enumerate(_KEYS):
        ax = fig.add_subplot(2, 2, i + 1)
        for precision, points in series.items():
            ax.plot([p["iteration"] for p in points], [p[key] for p in points],
                    label=precision)
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("generator iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"WGAN-GP on MNIST from one seed: float32 vs mixed_bfloat16 "
                 f"(means over {FLAGS.log_every} iterations)")
    fig.tight_layout()
    fig.savefig(path)


def main(argv):
    del argv
    if FLAGS.iters < FLAGS.log_every or FLAGS.log_every < 1:
        raise app.UsageError("--iters must be >= --log_every >= 1")
    import numpy as np

    from defense_gan_tf import data

    images, _ = data.load_numpy("mnist", "train", data_dir=FLAGS.data_dir)
    series, seconds = {}, {}
    for precision in ("float32", "mixed_bfloat16"):
        series[precision], seconds[precision] = train_once(images, precision)
        print(f"{precision}: {FLAGS.iters} iterations in {seconds[precision]:.0f} s",
              flush=True)
    summary = {}
    for key in _KEYS:
        a = np.array([p[key] for p in series["float32"]])
        b = np.array([p[key] for p in series["mixed_bfloat16"]])
        half = len(a) // 2  # The second half, after the fast early transient.
        summary[key] = {
            "float32_mean_second_half": round(float(a[half:].mean()), 4),
            "mixed_bfloat16_mean_second_half": round(float(b[half:].mean()), 4),
            "mean_abs_difference": round(float(np.abs(a - b).mean()), 4),
            "float32_window_std_second_half": round(float(a[half:].std()), 4),
            "correlation": round(float(np.corrcoef(a, b)[0, 1]), 4),
        }
    png = os.path.splitext(FLAGS.output)[0] + ".png"
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    plot(series, png)
    result = {
        "benchmark": "wgan_gp_precision_losses",
        "model": "mnist generator and critic, net_dim 64, batch 50, 5 critic steps, seed 0",
        "iterations": FLAGS.iters,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "summary": summary,
        "series": series,
        "plot": os.path.basename(png),
        "machine": hardware.describe(),
        "command": "python bench/precision_losses.py " + " ".join(sys.argv[1:]),
    }
    jsonio.write_json(FLAGS.output, result, sort_keys=False)
    print(jsonio.dumps({k: result[k] for k in ("seconds", "summary")}, indent=2))


if __name__ == "__main__":
    app.run(main)
