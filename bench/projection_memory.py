#!/usr/bin/env python3
"""Benchmark: memory and time per image of a gradient through the projection.

What a white-box attack through Defense-GAN costs: one forward projection of the
shipped MNIST generator at L=200, R=10 and the input gradient of the classifier's
loss through it, in these modes:
  fused_segmented: the package's path for FGSM and PGD
                  (DefendedClassifier.loss_and_input_gradient): loss and gradient in one
                  compiled graph, the descent recomputed in segments of about sqrt(L)
                  steps during the backward pass (the default);
  fused_plain:    the same with every unrolled step kept (checkpoint_segment=0);
  eager_plain:    an eager tape around the compiled projection, every step kept (what
                  the package did before; CW-L2's path);
  eager_segmented: an eager tape around the segmented projection;
  bpda:           the identity as the projection's gradient (no unrolled backward).
Each (mode, batch) runs in a fresh process, so its peak resident memory (ru_maxrss)
is its own; memory per image is the slope between the two batch sizes, time per
image the slope of the timed call (after one untimed call that traces and warms).
Beside each peak: the estimate that sizes the white-box batches (defense_gan_tf/memory.py).

  python bench/projection_memory.py --batches=1,4
Writes bench/results/projection_memory.json, with the peak memory and time of the
README's paper-setting white-box command run with default flags (PAPER_COMMAND;
--paper_command_only measures only that, keeping the modes' figures).
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

from defense_gan_tf import hardware, jsonio

FLAGS = flags.FLAGS
flags.DEFINE_list("batches", ["1", "4"], "Two batch sizes (the slope between them is the "
                  "per-image figure).")
flags.DEFINE_list("modes", ["fused_segmented", "fused_plain", "eager_plain",
                            "eager_segmented", "bpda"], "Modes to measure.")
flags.DEFINE_integer("iterations", 200, "L.")
flags.DEFINE_integer("restarts", 10, "R.")
flags.DEFINE_string("generator", "pretrained/mnist/generator.keras", "Generator.")
flags.DEFINE_string("classifier", "pretrained/mnist/classifier_A.keras", "Classifier.")
flags.DEFINE_string("output", "bench/results/projection_memory.json", "JSON to write.")
flags.DEFINE_string("child", None, "Internal: measure one 'mode:batch' and print JSON.")
flags.DEFINE_bool("paper_command", True, "Also run the paper-setting white-box command with "
                  "default flags (PAPER_COMMAND) and record its peak memory and time.")
flags.DEFINE_bool("paper_command_only", False, "Run only the paper-setting command and update "
                  "its entry in --output, keeping the modes measured before.")
flags.DEFINE_string("data_dir", "../shared/data", "Data folder of the paper-setting command.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The README's paper white box: FGSM (eps 0.3) through Defense-GAN-Orig at L=200, R=10 with
# the attacker's gradient through the unrolled projection (paper section 4.1, Table 3), on
# 20 images with default flags (the batch is whatever --memory_budget_gb's default picks).
PAPER_COMMAND = ["bin/whitebox.py", "--generator=pretrained/mnist/generator.keras",
                 "--classifier=pretrained/mnist/classifier_A.keras",
                 "--defense_type=defense_gan", "--attack_type=fgsm", "--fgsm_eps=0.3",
                 "--num_tests=20"]

# mode: (gradient, checkpoint segment (None: the default), gradient in the projection's graph)
_MODES = {"fused_segmented": ("full", None, True), "fused_plain": ("full", 0, True),
          "eager_plain": ("full", 0, False), "eager_segmented": ("full", None, False),
          "bpda": ("bpda", None, True)}


def measure_one(mode: str, batch: int) -> dict:
    """Peak RSS and seconds of one gradient through the projection (in this process)."""
    import resource

    import numpy as np
    import tensorflow as tf

    from defense_gan_tf.attacks.common import loss_and_gradient
    from defense_gan_tf.config import ProjectionConfig
    from defense_gan_tf.defense import DefendedClassifier
    from defense_gan_tf.records.loading import load_classifier, load_generator

    generator, _ = load_generator(FLAGS.generator)
    classifier = load_classifier(FLAGS.classifier)
    gradient, segment, fused = _MODES[mode]
    defended = DefendedClassifier(classifier, generator,
                                  ProjectionConfig(iterations=FLAGS.iterations,
                                                   restarts=FLAGS.restarts),
                                  gradient=gradient, checkpoint_segment=segment)
    projector = defended.projector
    x = tf.constant(np.random.default_rng(0).uniform(0, 1, (batch, 28, 28, 1)), tf.float32)
    y = tf.zeros([batch], tf.int64)
    # Without the fused method the attacks' helper takes an eager tape around the model.
    model_fn = defended if fused else (lambda images, seed=None: defended(images, seed=seed))

    def gradient_once():
        return loss_and_gradient(model_fn, x, y, seed=1)[1].numpy()

    gradient_once()  # trace and warm up
    t0 = time.perf_counter()
    grad = gradient_once()
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from defense_gan_tf import memory

    estimate = memory.BASE_GB + batch * memory.gb_per_image(
        FLAGS.iterations, FLAGS.restarts, gradient=gradient, segment=projector.segment,
        fused=fused)
    return {"mode": mode, "batch": batch, "seconds": seconds, "peak_gb": peak_kb / 2**20,
            "estimated_peak_gb": round(estimate, 3), "segment": projector.segment,
            "gradient_norm": float(np.linalg.norm(grad))}


def measure_paper_command() -> dict:
    """Runs PAPER_COMMAND in a subprocess of this (otherwise idle) process: its peak
    resident memory is this process's largest child's."""
    import resource
    import tempfile

    with tempfile.TemporaryDirectory() as results:
        cmd = [sys.executable, *PAPER_COMMAND, f"--data_dir={FLAGS.data_dir}",
               f"--results_dir={results}"]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - t0
        records = [os.path.join(results, f) for f in sorted(os.listdir(results))
                   if f.endswith(".json") and not f.startswith("whitebox_table")]
        record = {}
        if records:
            with open(records[0]) as f:
                record = json.load(f)
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    batch_lines = [line for line in out.stdout.splitlines() if line.startswith("batch of ")]
    entry = {"command": "python " + " ".join(PAPER_COMMAND + [f"--data_dir={FLAGS.data_dir}"]),
             "returncode": out.returncode, "peak_gb": round(peak_gb, 3),
             "seconds": round(seconds, 1),
             "batch_message": batch_lines[0] if batch_lines else None}
    if out.returncode != 0:
        entry["stderr"] = out.stderr[-800:]
    result = record.get("result", {})
    for key in ("adversarial", "clean"):
        if isinstance(result.get(key), dict):
            entry[key] = {k: result[key][k] for k in ("accuracy", "n") if k in result[key]}
    for key in ("gradient_norm_mean", "seconds"):
        if key in result:
            entry[f"run_{key}"] = result[key]
    entry["batch_size"] = record.get("settings", {}).get("batch_size")
    return entry


def main(argv):
    del argv
    if FLAGS.child == "paper":
        print("RESULT " + json.dumps(measure_paper_command()), flush=True)
        return
    if FLAGS.child:
        mode, batch = FLAGS.child.split(":")
        print("RESULT " + json.dumps(measure_one(mode, int(batch))), flush=True)
        return
    if FLAGS.paper_command_only:
        with open(FLAGS.output) as f:
            result = json.load(f)
        result["paper_command"] = _run_paper_child()
        result["paper_command_measured_with"] = ("python bench/projection_memory.py "
                                                 + " ".join(sys.argv[1:]))
        jsonio.write_json(FLAGS.output, result, sort_keys=False)
        print(json.dumps(result["paper_command"], indent=2))
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
    before, after = summary.get("eager_plain"), summary.get("fused_segmented")

    def ratio(key):
        if not (before and after and before[key] > 0):
            return None
        return round(after[key] / before[key], 3)

    result = {
        "benchmark": "projection_memory",
        "setting": f"shipped MNIST generator and classifier A, L={FLAGS.iterations}, "
                   f"R={FLAGS.restarts}, input gradient of the cross-entropy",
        "per_mode": summary,
        "fused_segmented_over_eager_plain_memory": ratio("gb_per_image"),
        "fused_segmented_over_eager_plain_time": ratio("seconds_per_image"),
        "runs": runs,
        "paper_command": _run_paper_child() if FLAGS.paper_command else None,
        "goal": "full mode at most 2 GB per image and at most 1.5x the plain time per image",
        "machine": hardware.describe(),
        "command": "python bench/projection_memory.py " + " ".join(sys.argv[1:]),
    }
    jsonio.write_json(FLAGS.output, result, sort_keys=False)
    print(json.dumps(summary, indent=2))


def _run_paper_child() -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child=paper",
                          f"--data_dir={FLAGS.data_dir}"], capture_output=True, text=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode != 0 or not line:
        return {"failed": out.returncode, "stderr": out.stderr[-800:]}
    entry = json.loads(line[0][len("RESULT "):])
    print(f"paper command: peak {entry['peak_gb']:.2f} GB, {entry['seconds']:.0f} s, "
          f"exit {entry['returncode']}", flush=True)
    return entry


if __name__ == "__main__":
    hardware.enable_onednn()
    app.run(main)
