"""The benchmark scripts run end to end on tiny settings and write strict JSON."""

import json
import os
import subprocess
import sys

import pytest
from binaries import loads_tensorflow, run_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_projection_benchmark_runs_and_writes_its_figures(tmp_path):
    out = str(tmp_path / "projection")
    r = run_script("bench/projection.py", "--batch_sizes=1,2", "--steps=2", "--repeats=1",
                   "--restarts=2", "--iterations=10", "--net_dim=8",
                   "--variants=compiled,tf1", "--matmul_size=256", f"--output={out}",
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


def test_projection_tradeoff_resumes_retimes_and_counts_what_ran(tiny_world, tmp_path,
                                                                mnist_dir):
    """Tiny L and R: rows written, pruning counted at fewer passes than the paper row, the
    same-run speed pass present; a rerun keeps the rows and honours the time budget."""
    import keras

    gen_path = tiny_world[1]
    clf = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(10)])
    clf_path = str(tmp_path / "clf.keras")
    clf.save(clf_path)
    out = str(tmp_path / "tradeoff")
    base = [os.path.join(ROOT, "bench", "projection_tradeoff.py"),
            f"--generator={gen_path}", f"--classifier={clf_path}", f"--data_dir={mnist_dir}",
            "--num_images=6", "--batch_size=3", "--iterations=50", "--restarts=4",
            "--timing_images=3", f"--output={out}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    r = run_script(*base, "--configs=pruning 10/20/40,paper", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out + ".json") as f:
        result = json.load(f)
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["paper", "pruning 10/20/40"]  # table order, not run order
    # Paper: 50 steps x 4 restarts; pruning 4, 2, 1, 1 restarts over 10, 10, 20, 10 steps.
    assert rows["paper"]["row_steps_per_image"] == 200
    assert rows["pruning 10/20/40"]["row_steps_per_image"] == 90
    assert rows["pruning 10/20/40"]["gflops_per_image"] < rows["paper"]["gflops_per_image"]
    for row in rows.values():
        assert row["same_run"]["images"] == 3 and row["same_run"]["images_per_second"] > 0
        assert 0 <= row["clean"]["ci95"][0] <= row["clean"]["accuracy"] \
            <= row["clean"]["ci95"][1] <= 1
    with open(out + ".md") as f:
        assert "img/s (same run)" in f.read()

    again = run_script(*base, "--configs=paper,L=12 R=4", "--time_budget_minutes=0",
                       env=env)
    assert again.returncode == 3, again.stderr[-3000:]
    assert "paper: kept from the earlier run" in again.stdout
    assert "L=12 R=4: not started" in again.stdout
    with open(out + ".json") as f:
        kept = {row["name"]: row for row in json.load(f)["rows"]}
    assert kept["paper"]["measured_at"] == rows["paper"]["measured_at"]

    bad = subprocess.run([sys.executable, "-X", "importtime", *base, "--configs=bogus"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode != 0 and "--configs" in bad.stderr
    assert not loads_tensorflow(bad.stderr)  # refused before TensorFlow loads


def test_projection_memory_benchmark_runs_and_writes_per_image_figures(tmp_path):
    """Tiny L and R on the shipped models, one mode at both batch sizes (each in its own
    process), the package's fused gradient: peaks, the per-image slope and the estimate
    beside it. (That the segmented gradient is the plain one is tests/test_projection.py's
    business.)"""
    out = str(tmp_path / "memory.json")
    r = run_script("bench/projection_memory.py", "--iterations=4", "--restarts=1",
                   "--batches=1,2", "--modes=fused_segmented", "--nopaper_command",
                   f"--output={out}", timeout=600,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out) as f:
        result = json.load(f)
    runs = {(x["mode"], x["batch"]): x for x in result["runs"]}
    assert set(runs) == {("fused_segmented", 1), ("fused_segmented", 2)}, runs
    assert not any("failed" in x for x in runs.values()), runs
    assert runs["fused_segmented", 2]["segment"] == 2
    assert all(x["peak_gb"] > 0 and x["seconds"] > 0 and x["gradient_norm"] > 0
               for x in runs.values())
    assert set(result["per_mode"]) == {"fused_segmented"}
    assert result["paper_command"] is None  # the paper-setting run takes minutes
    # The estimate beside each peak: one segment of 2 steps x 1 restart per image.
    from defense_gan_tf import memory

    per_image = memory.gb_per_image(4, 1, segment=2)
    assert per_image == pytest.approx(memory.gb_per_image(4, 1, segment=0) / 2)
    assert runs["fused_segmented", 2]["estimated_peak_gb"] == pytest.approx(
        memory.BASE_GB + 2 * per_image, abs=1e-3)
    summary = result["per_mode"]["fused_segmented"]
    assert summary["estimated_gb_per_image"] == pytest.approx(per_image, abs=1e-3)
