"""The files of a GAN training run that outlive it: the model files' names, the float32
copies written at the end, and quality.jsonl (one line of figures per in-run evaluation)."""

from __future__ import annotations

import json
import os
from typing import Optional

from defense_gan_tf.atomic import save_model

GENERATOR_FILE = "generator.keras"
AVERAGE_FILE = "generator_ema.keras"
RAW_FILE = "generator_raw.keras"  # the trained generator when the average is shipped
CRITIC_FILE = "critic.keras"
QUALITY_FILE = "quality.jsonl"


def save_float32(model, path: str, builder) -> None:
    """Saves a float32 copy of ``model`` to ``path`` atomically (see ``float32_copy``)."""
    from defense_gan_tf.models import float32_copy  # TensorFlow: not for the file names

    if any(layer.compute_dtype != "float32" for layer in model.layers):
        model = float32_copy(model, builder)
    save_model(model, path)


def read_quality(path: str) -> list[dict]:
    """The entries of a ``quality.jsonl``, one per iteration (the last one written wins)."""
    if not os.path.exists(path):
        return []
    entries = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                entries[int(entry["iteration"])] = entry
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{path}, line {number}: not a quality entry") from None
    return [entries[k] for k in sorted(entries)]


def evaluation_cost_in_iterations(entries: list[dict]) -> Optional[float]:
    """How many training iterations' time an in-run evaluation took, from quality entries.

    Consecutive entries give the training seconds per iteration between them and
    the later one's evaluation seconds; the largest ratio of the last three is
    returned (None when fewer than two entries carry the timings). Expressed in
    iterations, the cost carries over to a faster or slower machine.
    """
    timed = [e for e in entries
             if all(isinstance(e.get(k), (int, float)) for k in
                    ("iteration", "train_seconds", "eval_seconds"))]
    timed.sort(key=lambda e: e["iteration"])
    ratios = []
    for a, b in zip(timed, timed[1:]):
        iterations = b["iteration"] - a["iteration"]
        seconds = b["train_seconds"] - a["train_seconds"]
        if iterations > 0 and seconds > 0:
            ratios.append(b["eval_seconds"] / (seconds / iterations))
    return max(ratios[-3:]) if ratios else None


def summarise_quality(entry: dict) -> str:
    """One line of the figures of a quality entry (those present)."""
    if "error" in entry:
        return f"failed ({entry['error'][:200]})"
    parts = []
    if "classifier_score" in entry:
        parts.append(f"score {entry['classifier_score']:.2f}")
    if "frechet_distance" in entry:
        parts.append(f"FD {entry['frechet_distance']:.1f}")
    for name, value in entry.get("defense_gan_orig", {}).items():
        parts.append(f"{name} {value['accuracy']:.2f} (n={value['n']})")
    failures = entry.get("transferred_fgsm_failures")
    if failures and failures.get("failures"):
        parts.append(f"optimisation failures {failures['optimisation_failures']}"
                     f"/{failures['failures']}")
    return ", ".join(parts)
