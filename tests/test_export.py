import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from binaries import run_script
import tensorflow as tf

from defense_gan_tf import config as config_lib
from defense_gan_tf import models
from defense_gan_tf.defense import project
from defense_gan_tf.export import export_saved_model


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PCFG = config_lib.ProjectionConfig(iterations=6, restarts=2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, dense_generator):
    keras.utils.set_random_seed(0)
    g = dense_generator()
    clf = models.build_classifier("E")
    path = str(tmp_path_factory.mktemp("export") / "model")
    export_saved_model(clf, g, path, projection_config=PCFG, detection_threshold=0.05,
                       seed=3)
    return g, clf, path


def _inputs(n=3):
    return np.random.default_rng(0).uniform(size=(n, 28, 28, 1)).astype(np.float32)


def test_round_trip_matches_python(exported):
    g, clf, path = exported
    loaded = tf.saved_model.load(path)
    x = _inputs()
    out = loaded.signatures["serving_default"](images=tf.constant(x))
    z_init = tf.random.stateless_normal([6, 8], seed=[3, 0], stddev=np.sqrt(1 / 8))
    ref = project(g, x, PCFG, z_init=z_init)
    np.testing.assert_allclose(out["reconstruction"].numpy(), ref.reconstruction.numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["reconstruction_error"].numpy(), ref.error.numpy(),
                               rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(out["logits"].numpy(), clf(ref.reconstruction).numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out["is_adversarial"].numpy(), ref.error.numpy() > 0.05)
    proj = loaded.signatures["project"](images=tf.constant(x))
    np.testing.assert_allclose(proj["z"].numpy(), ref.z.numpy(), rtol=1e-5, atol=1e-6)
    z = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    np.testing.assert_allclose(loaded.signatures["generate"](z=tf.constant(z))["images"],
                               g(z).numpy(), rtol=1e-5, atol=1e-6)
    for n in (1, 7):  # Any batch size.
        assert loaded.signatures["serving_default"](
            images=tf.constant(_inputs(n)))["logits"].shape == (n, 10)
    with open(os.path.join(path, "defense_gan.json")) as f:
        meta = json.load(f)
    assert meta["projection"]["iterations"] == 6 and meta["detection_threshold"] == 0.05


@pytest.mark.parametrize("bad,message", [
    (np.full((2, 28, 28, 1), 2.0, np.float32), "above the generator range"),
    (np.full((2, 28, 28, 1), -1.0, np.float32), "below the generator range"),
    (np.full((2, 28, 28, 1), np.nan, np.float32), "NaN or Inf"),
])
def test_served_model_rejects_bad_values(exported, bad, message):
    loaded = tf.saved_model.load(exported[2])
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded.signatures["serving_default"](images=tf.constant(bad))


def test_served_model_rejects_bad_shapes(exported):
    # The signature's shape check refuses these when it runs; where the loaded signature
    # skips it, the graph's own check names the expected shape (next test).
    loaded = tf.saved_model.load(exported[2])
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError),
                       match=r"shape|Shape|compatible"):
        loaded.signatures["serving_default"](images=tf.zeros([2, 28, 28, 3]))
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError),
                       match=r"shape|Shape|compatible|dimension"):
        loaded.signatures["serving_default"](images=tf.zeros([2, 28, 28]))


def test_served_graph_checks_the_image_shape_itself(exported):
    """The serving function names the expected shape even where no signature checks it
    (the same function traced for any shape)."""
    from defense_gan_tf.export import DefenseGanModule

    g, clf, _ = exported
    serve = tf.function(DefenseGanModule(clf, g, PCFG, seed=3)._serve,
                        input_signature=[tf.TensorSpec(None, tf.float32)])
    for bad in (tf.zeros([2, 28, 28, 3]), tf.zeros([2, 28, 28])):
        with pytest.raises((ValueError, tf.errors.InvalidArgumentError),
                           match=r"images must have shape \[batch, 28, 28, 1\]"):
            serve(bad)
    assert serve(tf.fill([1, 28, 28, 1], 0.5))["logits"].shape == (1, 10)


FRESH = r"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "defense_gan_tf":
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import numpy as np, tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
out = m.signatures["serving_default"](images=tf.constant(x))
try:
    m.signatures["serving_default"](images=tf.constant(x * 5))
    bad = "accepted"
except tf.errors.InvalidArgumentError as e:
    bad = "above the generator range" in str(e)
print(json.dumps({"logits": out["logits"].numpy().tolist(), "bad": bad,
                  "imported": sorted(k for k in sys.modules if k.startswith("defense_gan_tf"))}))
"""


def test_fresh_process_without_the_package(exported):
    g, clf, path = exported
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run([sys.executable, "-c", FRESH, path], capture_output=True,
                          text=True, env=env, cwd=str(os.path.dirname(path)), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["imported"] == [] and result["bad"] is True
    local = tf.saved_model.load(path).signatures["serving_default"](
        images=tf.constant(_inputs()))["logits"].numpy()
    np.testing.assert_allclose(np.array(result["logits"]), local, rtol=1e-4, atol=1e-5)


def test_bin_export(tmp_path, dense_generator):
    keras.utils.set_random_seed(0)
    g = dense_generator()
    clf = models.build_classifier("E")
    g.save(str(tmp_path / "g.keras"))
    clf.save(str(tmp_path / "c.keras"))
    out = str(tmp_path / "saved")
    cmd = [os.path.join(ROOT, "bin", "export.py"),
           f"--generator={tmp_path / 'g.keras'}", f"--classifier={tmp_path / 'c.keras'}",
           f"--output_dir={out}", "--rec_iters=3", "--rec_rr=2"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = run_script(*cmd, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "is_adversarial" not in tf.saved_model.load(out).signatures[
        "serving_default"].structured_outputs
    again = run_script(*cmd, env=env, timeout=300)
    assert again.returncode != 0 and "--output_dir" in again.stderr
    missing = run_script(cmd[0], "--generator=/nonexistent.keras", *cmd[2:], env=env)
    assert missing.returncode != 0 and "--generator" in missing.stderr


def test_served_model_answers_an_empty_batch(exported):
    _, _, path = exported
    serve = tf.saved_model.load(path).signatures["serving_default"]
    out = serve(images=tf.zeros([0, 28, 28, 1]))
    assert out["logits"].shape == (0, 10)
    assert out["reconstruction_error"].shape == (0,)
    assert out["is_adversarial"].shape == (0,)


def test_export_with_the_cheaper_projection_options(tmp_path, dense_generator):
    g = dense_generator()
    clf = models.build_classifier("E", seed=0)
    c = config_lib.ProjectionConfig(iterations=6, restarts=4, prune_at=(2, 4),
                                    descent_precision="bfloat16")
    path = export_saved_model(clf, g, str(tmp_path / "fast"), projection_config=c, seed=1)
    out = tf.saved_model.load(path).signatures["serving_default"](
        images=tf.constant(_inputs(2)))
    assert out["logits"].shape == (2, 10)
    assert np.all(np.isfinite(out["reconstruction_error"].numpy()))
