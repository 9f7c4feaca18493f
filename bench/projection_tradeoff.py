#!/usr/bin/env python3
r"""Accuracy against compute for cheaper Defense-GAN projections (ProjectionConfig options).

For each configuration (the paper's L=200, R=10; each option alone; the ``fast``
preset; cheaper plain settings) on the first --num_images test images, with the
dataset's classifier A behind the projection (Defense-GAN-Orig):
  - GFLOPs per image, counted from the descent passes the loop executed (pruned and
    stopped rows included while their stretch ran) plus the final forward passes;
  - measured images per second (clean images, one run, same process);
  - mean clean reconstruction error;
  - accuracy on clean images, on FGSM eps 0.3 made on the undefended classifier
    (transferred), and on FGSM eps 0.3 with BPDA through the defense (the attacker's
    projection uses the same configuration), each with a 95% Wilson interval.
Writes JSON and markdown (--output + .json / .md) and a plot of accuracy against GFLOPs
per image (--output + .png) after every configuration; a rerun keeps the rows of an
earlier run with the same generator file, images and eps (and the same configuration),
so the benchmark can be spread over several sittings (--fresh starts over;
--time_budget_minutes stops starting new configurations). Rows measured in different
sittings have timings from different machine states, so once every configuration is
there the speeds are measured again in one process on the first --timing_images clean
images (``same_run`` in the JSON; the markdown's speed ratios use them). Run it alone on
the machine: timings are shared-CPU noise otherwise.

  python bench/projection_tradeoff.py --generator=pretrained/mnist/generator.keras \
      --classifier=pretrained/mnist/classifier_A.keras --data_dir=../shared/data \
      --num_images=500
"""

import dataclasses
import json
import os
import sys
import time

from absl import app, flags

from defense_gan_tf import hardware, jsonio

hardware.enable_onednn()  # before TensorFlow is imported

FLAGS = flags.FLAGS
flags.DEFINE_string("generator", None, "Generator .keras.")
flags.DEFINE_string("classifier", None, "The dataset's classifier A (.keras, logits).")
flags.DEFINE_string("encoder", None, "Encoder .keras for the encoder-start rows (default: "
                    "encoder.keras beside the generator when it exists; else they are skipped).")
flags.DEFINE_enum("dataset", "mnist", ["mnist", "f-mnist", "fashion_mnist"], "Dataset.")
flags.DEFINE_string("data_dir", None, "Local IDX folder (default: $DEFENSE_GAN_DATA_DIR).")
flags.DEFINE_integer("num_images", 500, "First test images.")
flags.DEFINE_integer("batch_size", 50, "Images per projection call.")
flags.DEFINE_float("eps", 0.3, "FGSM epsilon.")
flags.DEFINE_list("configs", [], "Only these configuration names, measured in this order "
                  "(default: all).")
flags.DEFINE_integer("iterations", None, "Override the dataset's L (tiny runs only; every "
                     "configuration derives from it).")
flags.DEFINE_integer("restarts", None, "Override the dataset's R (tiny runs only).")
flags.DEFINE_float("time_budget_minutes", None, "No configuration starts after this many "
                   "minutes; the rows so far are written and a rerun continues.")
flags.DEFINE_integer("timing_images", 100, "Clean images of the same-run speed pass once "
                     "every configuration is measured (0 skips it).")
flags.DEFINE_string("output", "bench/results/projection_tradeoff", "Output path without "
                    "extension.")
flags.DEFINE_bool("fresh", False, "Ignore rows of an earlier run at --output.")
flags.mark_flags_as_required(["generator", "classifier"])


def configurations(dataset, iterations=None, restarts=None):
    """(name, ProjectionConfig) pairs: the paper's, each option alone, fast, cheaper plain.

    ``iterations`` / ``restarts`` replace the dataset's L and R in all of them (tiny runs).
    """
    from defense_gan_tf import config as config_lib

    replace = dataclasses.replace
    base = {k: v for k, v in (("iterations", iterations), ("restarts", restarts))
            if v is not None}
    paper = replace(config_lib.projection_preset("paper", dataset), **base)
    fast = replace(config_lib.projection_preset("fast", dataset), **base)
    quarter, half = max(1, paper.iterations // 4), max(1, paper.iterations // 2)
    few = max(1, round(paper.restarts * 2 / 5))
    return [
        ("paper", paper),
        ("bfloat16 descent", replace(paper, descent_precision="bfloat16")),
        ("pruning 10/20/40", replace(paper, prune_at=(10, 20, 40))),
        ("early stop 1e-5/20", replace(paper, early_stop_tolerance=1e-5,
                                       early_stop_window=20)),
        ("encoder start", replace(paper, encoder_start=True)),
        ("fast", fast),
        ("fast + encoder start", replace(fast, encoder_start=True)),
        (f"L={quarter} R={paper.restarts}", replace(paper, iterations=quarter)),
        (f"L={half} R={few}", replace(paper, iterations=half, restarts=few)),
    ]


def measure(name, projection, generator, classifier, encoder, x, y, x_transfer, eps):
    import numpy as np
    import tensorflow as tf

    from defense_gan_tf import attacks
    from defense_gan_tf.defense import Projector
    from defense_gan_tf.defense.cost import projection_gflops
    from defense_gan_tf.metrics.stats import accuracy_entry

    b = FLAGS.batch_size
    started = time.perf_counter()
    defense = Projector(generator, projection, encoder=encoder)
    attacker = Projector(generator, projection, gradient="bpda", encoder=encoder)

    def defended_predictions(images, seed):
        preds, errors, row_steps = [], [], 0
        for i in range(0, len(images), b):
            p = defense(images[i:i + b], seed=[seed, i])
            preds.append(np.argmax(classifier(p.reconstruction, training=False), -1))
            errors.append(p.error.numpy())
            row_steps += int(p.row_steps)
        return np.concatenate(preds), np.concatenate(errors), row_steps

    defense(x[:b], seed=[0, 0])  # compile before timing
    t0 = time.perf_counter()
    clean_pred, clean_err, row_steps = defended_predictions(x, 1)
    seconds = time.perf_counter() - t0
    print(f"  {name}: clean projections {len(x) / seconds:.2f} img/s", flush=True)
    transfer_pred, _, _ = defended_predictions(x_transfer, 2)
    print(f"  {name}: transferred FGSM done; BPDA FGSM next", flush=True)
    model_fn = lambda images: classifier(attacker(images, seed=[3, 0]).reconstruction,  # noqa
                                         training=False)
    x_bpda = np.concatenate([attacks.fgsm(model_fn, tf.constant(x[i:i + b]), eps=eps,
                                          y=y[i:i + b]).numpy()
                             for i in range(0, len(x), b)])
    bpda_pred, _, _ = defended_predictions(x_bpda, 4)
    final_rows = len(x) * projection.restart_schedule[-1][2]
    row = {
        "name": name,
        "projection": dataclasses.asdict(projection),
        "gflops_per_image": projection_gflops(generator, row_steps, final_rows) / len(x),
        "row_steps_per_image": row_steps / len(x),
        "images_per_second": len(x) / seconds,
        "mean_clean_reconstruction_error": float(clean_err.mean()),
        "clean": accuracy_entry(clean_pred == y),
        "transferred_fgsm": accuracy_entry(transfer_pred == y),
        "bpda_fgsm": accuracy_entry(bpda_pred == y),
        "seconds": round(time.perf_counter() - started, 1),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(f"{name:20s} {row['gflops_per_image']:8.2f} GFLOP/img  "
          f"{row['images_per_second']:6.2f} img/s  clean {row['clean']['accuracy']:.3f}  "
          f"transferred {row['transferred_fgsm']['accuracy']:.3f}  "
          f"BPDA {row['bpda_fgsm']['accuracy']:.3f}", flush=True)
    return row


def markdown(rows):
    """The table; speed ratios from the same-run pass when every row has one."""
    def cell(e):
        return f"{e['accuracy']:.3f} [{e['ci95'][0]:.2f}, {e['ci95'][1]:.2f}]"

    same_run = bool(rows) and all("same_run" in r for r in rows)

    def speed(r):
        return r["same_run"]["images_per_second"] if same_run else r["images_per_second"]

    paper = next((r for r in rows if r["name"] == "paper"), None)
    label = "img/s (same run)" if same_run else "img/s (own sitting)"
    lines = [f"| configuration | GFLOPs / image | x fewer | {label} | x faster | "
             "clean error | clean | transferred FGSM | BPDA FGSM |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fewer = paper["gflops_per_image"] / r["gflops_per_image"] if paper else float("nan")
        faster = speed(r) / speed(paper) if paper else float("nan")
        lines.append(f"| {r['name']} | {r['gflops_per_image']:.2f} | {fewer:.1f} | "
                     f"{speed(r):.2f} | {faster:.1f} | "
                     f"{r['mean_clean_reconstruction_error']:.4f} | {cell(r['clean'])} | "
                     f"{cell(r['transferred_fgsm'])} | {cell(r['bpda_fgsm'])} |")
    return "\n".join(lines) + "\n"


def clean_speed(generator, projection, encoder, x, batch_size):
    """Images per second of the clean projection of ``x`` (compiled first)."""
    from defense_gan_tf.defense import Projector

    defense = Projector(generator, projection, encoder=encoder)
    defense(x[:batch_size], seed=[0, 0])
    t0 = time.perf_counter()
    for i in range(0, len(x), batch_size):
        defense(x[i:i + batch_size], seed=[5, i]).reconstruction.numpy()
    return len(x) / (time.perf_counter() - t0)


def plot(rows, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4), dpi=100)
    FigureCanvasAgg(fig)
    for i, key in enumerate(("clean", "transferred_fgsm", "bpda_fgsm")):
        ax = fig.add_subplot(1, 3, i + 1)
        for r in rows:
            e = r[key]
            ax.errorbar([r["gflops_per_image"]], [e["accuracy"]],
                        yerr=[[max(0.0, e["accuracy"] - e["ci95"][0])],
                              [max(0.0, e["ci95"][1] - e["accuracy"])]],  # rounded bounds
                        fmt="o", capsize=3, label=r["name"])
        ax.set_xscale("log")
        ax.set_xlabel("GFLOPs per image")
        ax.set_title(key.replace("_", " ") + " accuracy (95% CI)")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def main(argv):
    del argv
    for name in ("generator", "classifier"):
        if not os.path.isfile(FLAGS[name].value):
            raise app.UsageError(f"--{name} {FLAGS[name].value} is not a file")
    if FLAGS.num_images < 1 or FLAGS.batch_size < 1:
        raise app.UsageError("--num_images and --batch_size must be >= 1")
    from defense_gan_tf.config import canonical_dataset_name

    dataset = canonical_dataset_name(FLAGS.dataset)
    every = configurations(dataset, FLAGS.iterations, FLAGS.restarts)
    known = [name for name, _ in every]
    unknown = [name for name in FLAGS.configs if name not in known]
    if unknown:  # before TensorFlow loads
        raise app.UsageError(f"--configs: unknown {unknown}; known: {known}")
    from defense_gan_tf.console import command_line
    from defense_gan_tf.generators.package import sha256_of

    inputs = _load_inputs(dataset)
    generator, classifier, encoder, x, y = (inputs[k] for k in (
        "generator", "classifier", "encoder", "x", "y"))
    identity = {"dataset": dataset, "num_images": len(x), "eps": FLAGS.eps,
                "generator_sha256": inputs["generator_sha"]}
    earlier = {} if FLAGS.fresh else earlier_rows(FLAGS.output + ".json", identity)
    order = FLAGS.configs or known
    chosen = sorted((c for c in every if c[0] in order), key=lambda c: order.index(c[0]))
    results, started, stopped = {}, time.monotonic(), False
    command = command_line(sys.argv)

    def rows_in_table_order():
        return [results[name] for name in known if name in results]

    for name, projection in chosen:
        if projection.encoder_start and encoder is None:
            print(f"{name}: skipped (no encoder at {inputs['encoder_path']})", flush=True)
            continue
        done = earlier.get(name)
        same = json.loads(json.dumps(dataclasses.asdict(projection)))  # tuples as lists
        encoder_sha = sha256_of(inputs["encoder_path"]) if projection.encoder_start else None
        if done is not None and done["projection"] == same \
                and done.get("encoder_sha256") == encoder_sha:
            print(f"{name}: kept from the earlier run", flush=True)
            results[name] = done
            continue
        budget = FLAGS.time_budget_minutes
        if budget is not None and time.monotonic() - started > 60 * budget:
            print(f"{name}: not started (--time_budget_minutes {budget} spent); rerun "
                  "the same command to continue", flush=True)
            stopped = True
            continue
        results[name] = measure(name, projection, generator, classifier, encoder, x, y,
                                inputs["x_transfer"], FLAGS.eps)
        results[name]["command"] = command  # the sitting that measured it
        if encoder_sha:
            results[name]["encoder_sha256"] = encoder_sha
        write_outputs(rows_in_table_order(), identity, inputs["iterations"], command)
    rows = rows_in_table_order()
    if not stopped and FLAGS.timing_images > 0 and rows \
            and any("same_run" not in r for r in rows):
        same_run_speeds(rows, dict(chosen), generator, encoder, x)
    write_outputs(rows, identity, inputs["iterations"], command)
    print(markdown(rows))
    if stopped:
        sys.exit(3)


def _load_inputs(dataset: str) -> dict:
    """The models (the encoder when there is one beside the generator or at --encoder,
    checked against the generator), the first --num_images test images and their FGSM
    transfer examples made on the classifier alone."""
    import numpy as np
    import tensorflow as tf

    from defense_gan_tf import attacks, data
    from defense_gan_tf.records.loading import (load_classifier, load_generator,
                                                load_model_file)
    from defense_gan_tf.generators.package import sha256_of

    generator, iterations = load_generator(FLAGS.generator, dataset=dataset)
    classifier = load_classifier(FLAGS.classifier, image_shape=generator.output_shape[1:])
    encoder_path = FLAGS.encoder or os.path.join(os.path.dirname(FLAGS.generator),
                                                 "encoder.keras")
    encoder = load_model_file(encoder_path, "--encoder") if os.path.isfile(encoder_path) \
        else None
    x, y = data.load_numpy(dataset, "test", data_dir=FLAGS.data_dir)
    x, y = x[:FLAGS.num_images], y[:FLAGS.num_images].astype(np.int64)
    generator_sha = sha256_of(FLAGS.generator)
    if encoder is not None:
        check_encoder(encoder_path, FLAGS.generator, generator_sha)
    x_transfer = np.concatenate([
        attacks.fgsm(classifier, tf.constant(x[i:i + 100]), eps=FLAGS.eps,
                     y=y[i:i + 100]).numpy() for i in range(0, len(x), 100)])
    return {"generator": generator, "iterations": iterations, "classifier": classifier,
            "encoder": encoder, "encoder_path": encoder_path, "x": x, "y": y,
            "generator_sha": generator_sha, "x_transfer": x_transfer}


def same_run_speeds(rows, projections, generator, encoder, x) -> None:
    """Times every row's projection on the same clean images in this sitting (rows of
    different sittings are compared by this pass, not by their own timings)."""
    n = min(FLAGS.timing_images, len(x))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"same-run speed pass on {n} clean images", flush=True)
    for r in rows:
        r["same_run"] = {
            "images": n, "at": stamp,
            "images_per_second": clean_speed(generator, projections[r["name"]],
                                             encoder, x[:n], FLAGS.batch_size)}
        print(f"  {r['name']:20s} {r['same_run']['images_per_second']:6.2f} img/s",
              flush=True)


def check_encoder(encoder_path, generator_path, generator_sha):
    """Refuses an encoder whose record names another generator than ``generator_path``
    (whose sha256 is ``generator_sha``)."""
    record_path = os.path.splitext(encoder_path)[0] + ".json"
    if not os.path.isfile(record_path):
        raise app.UsageError(f"--encoder {encoder_path}: no {record_path} beside it to say "
                             "which generator it was trained for")
    with open(record_path) as f:
        trained_for = json.load(f).get("generator_sha256")
    if trained_for != generator_sha:
        raise app.UsageError(f"--encoder {encoder_path} was trained for another generator "
                             f"than --generator {generator_path} (sha256 in {record_path})")


def earlier_rows(path, identity):
    """{name: row} of an earlier run at ``path`` with the same generator, images and eps."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        print(f"{path}: unreadable, starting over", flush=True)
        return {}
    if any(old.get(k) != v for k, v in identity.items()):
        print(f"{path}: made with other settings, starting over", flush=True)
        return {}
    return {row["name"]: row for row in old.get("rows", [])}


def write_outputs(rows, identity, iterations, command):
    """JSON, markdown and plot of the rows so far (rewritten after every configuration)."""
    result = {
        "benchmark": "projection_tradeoff", **identity,
        "generator_iterations": iterations, "rows": rows,
        "machine": hardware.describe(),
        "command": command,
    }
    jsonio.write_json(FLAGS.output + ".json", result, sort_keys=False)
    with open(FLAGS.output + ".md", "w") as f:
        f.write(f"# Projection accuracy against compute ({identity['dataset']}, "
                f"{identity['num_images']} test images, generator iterations {iterations})"
                f"\n\n" + markdown(rows) + f"\n`{command}`\n")
    plot(rows, FLAGS.output + ".png")


if __name__ == "__main__":
    app.run(main)
