"""Strict JSON files and overflow-aware gradient-norm summaries."""

import json
import os
import math

import numpy as np
import pytest
import tensorflow as tf

from defense_gan_tf import jsonio
from defense_gan_tf.attacks.common import per_example_norm
from defense_gan_tf.metrics.stats import gradient_norm_summary
from defense_gan_tf.generators.training_curve import curve_table


def _strict_loads(text):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_written_files_are_strict_json(tmp_path):
    payload = {"inf": float("inf"), "nan": np.float32("nan"), "pair": (1, np.int64(2)),
               "array": np.array([1.5, -np.inf]), "flag": np.bool_(True),
               "nested": [{"x": np.float64(0.25)}]}
    path = jsonio.write_json(str(tmp_path / "sub" / "record.json"), payload)
    with open(path) as f:
        back = _strict_loads(f.read())
    assert back == {"inf": None, "nan": None, "pair": [1, 2], "array": [1.5, None],
                    "flag": True, "nested": [{"x": 0.25}]}
    assert os.listdir(tmp_path / "sub") == ["record.json"]  # no temporary left

    lines = str(tmp_path / "curve.jsonl")
    jsonio.append_jsonl(lines, {"iteration": 1, "mean": float("inf")})
    jsonio.append_jsonl(lines, {"iteration": 2, "mean": 3.0})
    with open(lines) as f:
        assert [_strict_loads(line)["mean"] for line in f] == [None, 3.0]


def test_values_json_cannot_hold_are_refused_by_name(tmp_path):
    with pytest.raises(TypeError, match=r"set at result\.labels"):
        jsonio.dumps({"result": {"labels": {1, 2}}})


def test_gradient_norm_summary_keeps_overflows_visible():
    s = gradient_norm_summary([1.0, 3.0, np.inf, np.nan, 0.0])
    assert s["mean"] == pytest.approx(4.0 / 3.0)  # over the three finite norms
    assert s["nonfinite"] == 2 and s["n"] == 5
    assert s["median"] == 3.0  # NaN ranks as +Inf: [0, 1, 3, inf, inf]
    assert s["zero_fraction"] == pytest.approx(0.2)
    broken = gradient_norm_summary([np.inf, np.nan, 2.0])
    assert broken["mean"] == 2.0 and broken["median"] is None and broken["nonfinite"] == 2
    assert gradient_norm_summary([np.inf])["mean"] is None


def test_per_example_norm_does_not_overflow_on_large_finite_gradients():
    grad = tf.fill([2, 4, 4, 1], 1e30)  # finite in float32, its square is not
    norms = per_example_norm(grad).numpy()
    assert np.all(np.isfinite(norms))
    np.testing.assert_allclose(norms, 4e30, rtol=1e-6)


def test_curve_table_shows_nonfinite_gradient_norms():
    paper = {"accuracy": 0.5, "correct": 10, "n": 20, "ci95": [0.3, 0.7],
             "input_gradient_norm_median": 5e-4, "input_gradient_norm_mean": None,
             "input_gradient_norm_nonfinite": 20}
    legacy = dict(paper, input_gradient_norm_mean=math.inf)
    del legacy["input_gradient_norm_nonfinite"]
    rows = [line for line in curve_table([
        {"iteration": 100, "defense_gan_orig": {"paper_fgsm": paper}},
        {"iteration": 200, "defense_gan_orig": {"paper_fgsm": legacy}}]).splitlines()
        if line.startswith("| 1") or line.startswith("| 2")]
    cells = [[c.strip() for c in row.split("|")[1:-1]] for row in rows]
    assert cells[0][7] == "5.0e-04 / - (20 of 20 not finite)"
    assert cells[1][7] == "5.0e-04 / inf"


def test_committed_results_are_strict_json():
    import glob
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [p for folder in ("pretrained", "results", "bench/results")
             for ext in ("json", "jsonl")
             for p in glob.glob(os.path.join(root, folder, "**", f"*.{ext}"), recursive=True)]
    assert paths
    for path in paths:
        with open(path) as f:
            text = f.read()
        try:
            if path.endswith(".jsonl"):
                [_strict_loads(line) for line in text.splitlines() if line.strip()]
            else:
                _strict_loads(text)
        except ValueError as e:
            raise AssertionError(f"{os.path.relpath(path, root)}: {e}") from None
