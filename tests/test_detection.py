import numpy as np
import pytest

from defense_gan_tf.metrics.detection import plot_roc, roc_curve
from defense_gan_tf.metrics.stats import wilson_interval


def test_auc_known_values():
    assert roc_curve([0.1, 0.2], [0.3, 0.4]).auc == pytest.approx(1.0)
    assert roc_curve([0.3, 0.4], [0.1, 0.2]).auc == pytest.approx(0.0)
    assert roc_curve([0.5, 0.5], [0.5, 0.5]).auc == pytest.approx(0.5)
    # Pairs (adv > clean): 3 > 1, 3 > 2, 4 > 1, 4 > 2, 2 ~ 2 (half), 1 ~ 1 (half), ...
    clean, adv = [1.0, 2.0, 5.0], [1.0, 2.0, 3.0, 4.0]
    wins = sum((a > c) + 0.5 * (a == c) for a in adv for c in clean)
    assert roc_curve(clean, adv).auc == pytest.approx(wins / 12)


def test_auc_matches_mann_whitney_on_random_scores():
    rng = np.random.default_rng(0)
    clean = rng.normal(0, 1, 300).round(1)
    adv = rng.normal(1, 1, 200).round(1)
    wins = ((adv[:, None] > clean[None]) + 0.5 * (adv[:, None] == clean[None])).mean()
    roc = roc_curve(clean, adv)
    assert roc.auc == pytest.approx(wins, abs=1e-12)
    assert roc.fpr[0] == 0 and roc.tpr[0] == 0 and roc.fpr[-1] == 1 and roc.tpr[-1] == 1
    assert np.all(np.diff(roc.fpr) >= 0) and np.all(np.diff(roc.tpr) >= 0)


def test_roc_errors_and_plot(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        roc_curve([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        roc_curve([np.nan], [1.0])
    path = plot_roc({"eps 0.3": roc_curve([0, 1], [2, 3])}, str(tmp_path / "roc.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_wilson_interval():
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    low, high = wilson_interval(100, 100)
    assert high == 1.0 and low == pytest.approx(0.9630, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for trials in (1, 3, 6, 7, 100, 500):  # the interval always holds its own estimate
        for k in (0, 1, trials // 2, trials):
            low, high = wilson_interval(k, trials)
            assert 0.0 <= low <= k / trials <= high <= 1.0, (k, trials)
    assert wilson_interval(0, 6)[0] == 0.0
    with pytest.raises(ValueError):
        wilson_interval(5, 3)
