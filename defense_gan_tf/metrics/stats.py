"""Confidence intervals for reported accuracies."""

from __future__ import annotations

import math

import numpy as np


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054):
    """Wilson score interval for a binomial proportion (95% by default).

    Returns:
      (low, high); (0.0, 1.0) when there are no trials.
    """
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    # The exact interval contains p; float rounding can put a bound a hair beyond it
    # (2.8e-17 above 0 for 0 successes).
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def accuracy_entry(correct) -> dict:
    """{accuracy, correct, n, ci95} from a boolean array of per-image correctness."""
    correct = np.asarray(correct, bool)
    n, k = int(correct.size), int(correct.sum())
    return {"accuracy": k / n if n else float("nan"), "correct": k, "n": n,
            "ci95": list(wilson_interval(k, n))}


def gradient_norm_summary(norms) -> dict:
    """Per-image input-gradient L2 norms, summarised so that an overflow stays visible.

    Gradients through the unrolled projection can overflow (Inf) or turn NaN on a few
    images while most nearly vanish; a plain mean is then Inf and says nothing.

    Returns:
      {mean: mean of the finite norms (None if there is none), median: median with
      NaN counted as +Inf (None when that median is not finite), nonfinite: how many
      norms were Inf or NaN, zero_fraction: share of norms exactly 0, n: how many}.
    """
    norms = np.asarray(norms, np.float64).ravel()
    finite = np.isfinite(norms)
    ranked = np.where(np.isnan(norms), np.inf, norms)
    median = float(np.median(ranked)) if norms.size else None
    return {"mean": float(norms[finite].mean()) if finite.any() else None,
            "median": median if median is not None and math.isfinite(median) else None,
            "nonfinite": int((~finite).sum()),
            "zero_fraction": float(np.mean(norms == 0)) if norms.size else None,
            "n": int(norms.size)}
