"""Detecting adversarial inputs by reconstruction error (paper section 3.4, Figure 4).

An input is flagged as adversarial when its reconstruction error
||G(z*) - x||^2 exceeds a threshold; sweeping the threshold gives the ROC curve.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Roc(NamedTuple):
    """False- and true-positive rates at each threshold (descending), and the AUC."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float


def roc_curve(clean_scores, adversarial_scores) -> Roc:
    """ROC of the rule "adversarial when score >= threshold".

    Ties between a clean and an adversarial score count one half, so the AUC
    equals P(adv > clean) + P(adv == clean) / 2 (the Mann-Whitney statistic).

    Raises:
      ValueError: an empty or non-finite score array.
    """
    clean = np.asarray(clean_scores, np.float64).ravel()
    adv = np.asarray(adversarial_scores, np.float64).ravel()
    if clean.size == 0 or adv.size == 0:
        raise ValueError("need at least one clean and one adversarial score")
    if not (np.all(np.isfinite(clean)) and np.all(np.isfinite(adv))):
        raise ValueError("scores must be finite")
    scores = np.concatenate([clean, adv])
    labels = np.concatenate([np.zeros(clean.size), np.ones(adv.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    distinct = np.where(np.diff(scores))[0]
    ends = np.concatenate([distinct, [scores.size - 1]])  # last index of each tie group
    tps = np.cumsum(labels)[ends]
    fps = (ends + 1) - tps
    tpr = np.concatenate([[0.0], tps / adv.size])
    fpr = np.concatenate([[0.0], fps / clean.size])
    thresholds = np.concatenate([[np.inf], scores[ends]])
    auc = float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(
        np.trapz(tpr, fpr))
    return Roc(fpr, tpr, thresholds, auc)


def plot_roc(curves: dict, path: str, title: str = "") -> str:
    """Writes ROC curves ({label: Roc}) as a PNG."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for label, roc in curves.items():
        ax.plot(roc.fpr, roc.tpr, label=f"{label} (AUC {roc.auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    if title:  # wrapped to the figure's width
        ax.set_title(textwrap.fill(title, 42), fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
