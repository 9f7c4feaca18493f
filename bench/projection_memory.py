#!/usr/bin/env python3
"""Benchmark: memory and time per image of a gradient through the projection.

What a white-box attack through Defense-GAN costs: one forward projection of the
shipped MNIST generator at L=200, R=10 and the input gradient of the classifier's
loss through it, in these modes:
  full_plain:     the gradient through every one of the L unrolled steps, all kept
                  (checkpoint_segment=0, what the package did before);
  full_segmented: the same gradient, the loop recomputed in segments of about
                  sqrt(L) steps during the backward pass (the default);
  bpda:           the identity as the projection's gradient (no unrolled backward);
  full_plain_compiled, full_segmented_compiled:
                  the full modes with the attacker's loss and gradient inside one
                  tf.function (forward and backward in one graph), as a compiled attack
                  step would take them; the others take them with an eager tape around
                  the compiled projection, as the package's attacks do today.
Each (mode, batch) runs in a fresh process, so its peak resident memory (ru_maxrss)
is its own; memory per image is the slope between the two batch sizes, time per
image the slope of the timed call (after one untimed call that traces and warms).
Beside each peak: the estimate that sizes the white-box batches (defense_gan_tf/memory.py).

  python bench/projection_memory.py --batches=1,2
Writes bench/results/projection_memory.json.
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

from defense_gan_tf import hardware, jsonio

FLAGS = flags.FLAGS
flags.DEFINE_list("batches", ["1", "2"], "Two batch sizes (the slope between them is the "
                  "per-image figure).")
flags.DEFINE_list("modes", ["full_plain", "full_segmented", "bpda", "full_plain_compiled",
                            "full_segmented_compiled"], "Modes to measure.")
flags.DEFINE_integer("iterations", 200, "L.")
flags.DEFINE_integer("restarts", 10, "R.")
flags.DEFINE_string("generator", "pretrained/mnist/generator.keras", "Generator.")
flags.DEFINE_string("classifier", "pretrained/mnist/classifier_A.keras", "Classifier.")
flags.DEFINE_string("output", "bench/results/projection_memory.json", "JSON to write.")
flags.DEFINE_string("child", None, "Internal: measure one 'mode:batch' and print JSON.")

# mode: (gradient, checkpoint segment (None: the default), gradient inside a tf.function)
_MODES = {"full_plain": ("full", 0, False), "full_segmented": ("full", None, False),
          "bpda": ("bpda", 0, False), "full_plain_compiled": ("full", 0, True),
          "full_segmented_compiled": ("full", None, True)}


def measure_one(mode: str, batch: int) -> dict:
    """Peak RSS and seconds of one gradient through the projection (in this process)."""
    import resource

    import numpy as np
    import tensorflow as tf

    from defense_gan_tf.config import ProjectionConfig
    from defense_gan_tf.defense.projection import Projector
    from defense_gan_tf.evaluation.loading import load_classifier, load_generator

    generator, _ = load_generator(FLAGS.generator)
    classifier = load_classifier(FLAGS.classifier)
    gradient, segment, compiled = _MODES[mode]
    projector = Projector(generator, ProjectionConfig(iterations=FLAGS.iterations,
                                                      restarts=FLAGS.restarts),
                          gradient=gradient, checkpoint_segment=segment)
    x = tf.constant(np.random.default_rng(0).uniform(0, 1, (batch, 28, 28, 1)), tf.float32)
    y = tf.zeros([batch], tf.int64)

    def input_gradient(images):
        with tf.GradientTape() as tape:
            tape.watch(images)
            logits = classifier(projector(images, seed=1).reconstruction, training=False)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        return tape.gradient(loss, images)

    step = tf.function(input_gradient) if compiled else input_gradient

    def gradient_once():
        return step(x).numpy()

    gradient_once()  # trace and warm up
    t0 = time.perf_counter()
    grad = gradient_once()
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from defense_gan_tf import memory

    estimate = memory.BASE_GB + batch * memory.gb_per_image(
        FLAGS.iterations, FLAGS.restarts, gradient=gradient, segment=projector.segment)
    return {"mode": mode, "batch": batch, "seconds": seconds, "peak_gb": peak_kb / 2**20,
            "estimated_peak_gb": round(estimate, 3), "segment": projector.segment,
            "gradient_norm": float(np.linalg.norm(grad))}


def main(argv):
    del argv
    if FLAGS.child:
        mode, batch = FLAGS.child.split(":")
        print("RESULT " + json.dumps(measure_one(mode, int(batch))), flush=True)
        return
    batches = sorted(int(b) for b in FLAGS.batches)
    if len(batches) != 2 or batches[0] < 1 or batches[0] == batches[1]:
        raise app.UsageError("--batches takes two different batch sizes >= 1")
    unknown = set(FLAGS.modes) - set(_MODES)
    if unknown:
        raise app.UsageError(f"--modes: unknown {sorted(unknown)}; known {sorted(_MODES)}")
    runs = []
    for mode in FLAGS.modes:
        for batch in batches:
            cmd = [sys.executable, os.path.abspath(__file__), f"--child={mode}:{batch}",
                   f"--iterations={FLAGS.iterations}", f"--restarts={FLAGS.restarts}",
                   f"--generator={FLAGS.generator}", f"--classifier={FLAGS.classifier}"]
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode != 0 or not line:
                runs.append({"mode": mode, "batch": batch, "failed": out.returncode,
                             "stderr": out.stderr[-500:]})
                print(f"{mode} batch {batch}: failed ({out.returncode})", flush=True)
                continue
            runs.append(json.loads(line[0][len("RESULT "):]))
            r = runs[-1]
            print(f"{mode} batch {batch}: peak {r['peak_gb']:.2f} GB, {r['seconds']:.1f} s",
                  flush=True)
    summary = {}
    for mode in FLAGS.modes:
        pair = [r for r in runs if r["mode"] == mode and "failed" not in r]
        if len(pair) == 2:
            a, b = sorted(pair, key=lambda r: r["batch"])
            span = b["batch"] - a["batch"]
            summary[mode] = {"gb_per_image": round((b["peak_gb"] - a["peak_gb"]) / span, 3),
                             "estimated_gb_per_image": round(
                                 (b["estimated_peak_gb"] - a["estimated_peak_gb"]) / span, 3),
                             "base_gb": round(a["peak_gb"] - a["batch"] *
                                              (b["peak_gb"] - a["peak_gb"]) / span, 3),
                             "seconds_per_image": round((b["seconds"] - a["seconds"]) / span
                                                        if b["seconds"] > a["seconds"] else
                                                        b["seconds"] / b["batch"], 2)}
    plain, segmented = summary.get("full_plain"), summary.get("full_segmented")
    compiled = summary.get("full_plain_compiled")
    result = {
        "benchmark": "projection_memory",
        "setting": f"shipped MNIST generator and classifier A, L={FLAGS.iterations}, "
                   f"R={FLAGS.restarts}, input gradient of the cross-entropy",
        "per_mode": summary,
        "segmented_over_plain_memory": (round(segmented["gb_per_image"] / plain["gb_per_image"],
                                              3) if plain and segmented and
                                        plain["gb_per_image"] > 0 else None),
        "segmented_over_plain_time": (round(segmented["seconds_per_image"] /
                                            plain["seconds_per_image"], 3)
                                      if plain and segmented else None),
        "compiled_over_eager_memory": (round(compiled["gb_per_image"] / plain["gb_per_image"],
                                             3) if plain and compiled and
                                       plain["gb_per_image"] > 0 else None),
        "runs": runs,
        "goal": "full mode at most 2 GB per image and at most 1.5x the plain time per image",
        "machine": hardware.describe(),
        "command": "python bench/projection_memory.py " + " ".join(sys.argv[1:]),
    }
    jsonio.write_json(FLAGS.output, result, sort_keys=False)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    hardware.enable_onednn()
    app.run(main)
