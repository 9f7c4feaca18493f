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
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_entry(correct) -> dict:
    """{accuracy, correct, n, ci95} from a boolean array of per-image correctness."""
    correct = np.asarray(correct, bool)
    n, k = int(correct.size), int(correct.sum())
    return {"accuracy": k / n if n else float("nan"), "correct": k, "n": n,
            "ci95": list(wilson_interval(k, n))}
