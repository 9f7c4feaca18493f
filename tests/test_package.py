import hashlib
import json
import os

import numpy as np

from defense_gan_tf import config as config_lib
from defense_gan_tf import training
from defense_gan_tf.evaluation.package import package_generator


def test_package_generator_writes_manifest(tmp_path, tiny_config):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(16, 28, 28, 1)).astype(np.float32)
    run = str(tmp_path / "run")
    training.train_gan(config_lib.override(tiny_config, {"gan.train_iters": 2}), run,
                       images=images, log=lambda m: None)
    clf = training.train_classifier(images, rng.integers(0, 10, 16),
                                    config_lib.ClassifierConfig(model="E"), epochs=1,
                                    verbose=0)
    dest = str(tmp_path / "pretrained")
    manifest = package_generator(run, dest, classifier=clf, test_images=images[:8],
                                 reference_images=images[8:], num_samples=20,
                                 command="python bin/package_generator.py ...")
    with open(os.path.join(dest, "manifest.json")) as f:
        on_disk = json.load(f)
    assert on_disk == manifest
    assert manifest["iterations"] == 2 and manifest["train_wall_seconds"] > 0
    with open(os.path.join(dest, "generator.keras"), "rb") as f:
        assert manifest["sha256"] == hashlib.sha256(f.read()).hexdigest()
    q = manifest["quality"]
    assert 1.0 <= q["classifier_score"] <= 10.0 and q["frechet_distance"] >= 0.0
    assert "real_frechet_distance" in q and "real_classifier_score" in q
    assert manifest["config"]["model"]["net_dim"] == 4
    assert manifest["machine"]["cores"] >= 1
    assert os.path.getsize(os.path.join(dest, "samples.png")) > 0


def test_save_without_optimizer_drops_adam_state(tmp_path):
    import keras

    from defense_gan_tf.training.classifier import save_without_optimizer

    rng = np.random.default_rng(0)
    clf = training.train_classifier(rng.uniform(size=(8, 28, 28, 1)), rng.integers(0, 10, 8),
                                    config_lib.ClassifierConfig(model="E"), epochs=1,
                                    verbose=0)
    full, lean = str(tmp_path / "full.keras"), str(tmp_path / "lean.keras")
    clf.save(full)
    save_without_optimizer(clf, lean)
    assert os.path.getsize(lean) < 0.5 * os.path.getsize(full)
    loaded = keras.models.load_model(lean)
    x = rng.uniform(size=(3, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), clf(x).numpy(), rtol=1e-6, atol=1e-6)
