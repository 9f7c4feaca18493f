"""The benchmark scripts run end to end on tiny settings and write strict JSON."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_projection_benchmark_runs_and_writes_its_figures(tmp_path):
    out = str(tmp_path / "projection")
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "projection.py"), "--batch_sizes=1,2",
         "--steps=2", "--repeats=1", "--restarts=2", "--iterations=10", "--net_dim=8",
         "--variants=compiled,tf1", f"--output={out}"],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert r.returncode == 0, r.stderr[-3000:]

    def refuse(constant):
        raise ValueError(constant)

    with open(out + ".json") as f:
        result = json.load(f, parse_constant=refuse)
    assert [row["batch"] for row in result["rows"]] == [1, 2]
    for row in result["rows"]:
        for variant in ("compiled", "tf1"):
            assert row[variant]["images_per_second"] > 0
            assert row[variant]["ms_per_step"] > 0
    with open(out + ".md") as f:
        assert "| 2 |" in f.read()
