"""The shipped generators match their manifests and produce images of the right kind."""
import hashlib
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ("mnist", "fashion_mnist")


@pytest.mark.parametrize("name", DATASETS)
def test_shipped_generator_matches_manifest_and_generates(name):
    import keras

    folder = os.path.join(ROOT, "pretrained", name)
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    path = os.path.join(folder, manifest["file"])
    with open(path, "rb") as f:
        blob = f.read()
    assert hashlib.sha256(blob).hexdigest() == manifest["sha256"]
    assert len(blob) == manifest["bytes"]
    assert os.path.exists(os.path.join(folder, manifest["samples"]))
    assert 0 < manifest["iterations"] <= manifest["paper_iterations"]
    q = manifest["quality"]
    # A real generator scores between chance (1) and the real-data ceiling.
    assert 1.0 < q["classifier_score"] < q["real_classifier_score"]
    assert q["frechet_distance"] > q["real_frechet_distance"] >= 0
    generator = keras.models.load_model(path)
    latent = manifest["config"]["model"]["latent_dim"]
    z = np.random.default_rng(0).normal(size=(4, latent)).astype(np.float32)
    x = np.asarray(generator(z))
    assert x.shape == (4, 28, 28, 1)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x.std(axis=0).mean() > 0.01  # different z, different images


@pytest.mark.parametrize("name", DATASETS)
def test_shipped_critic_and_curve_let_training_continue(name):
    from defense_gan_tf import training

    folder = os.path.join(ROOT, "pretrained", name)
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    if not manifest.get("critic_file"):
        # A final package leaves its critic out on purpose, and says so.
        assert manifest.get("critic_note"), f"{name}: no critic and no reason given"
        assert not os.path.exists(os.path.join(folder, "critic.keras"))
        pytest.skip(f"{name}: {manifest['critic_note']}")
    with open(os.path.join(folder, manifest["critic_file"]), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == manifest["critic_sha256"]
    warm = training.load_warm_start(folder)
    assert warm.iteration == manifest["iterations"]
    assert manifest["precision"] in ("float32", "mixed_bfloat16")
    if manifest.get("quality_curve"):
        entries = training.gan_trainer.read_quality(warm.quality_path)
        assert entries and entries[-1]["iteration"] <= manifest["iterations"]
        assert os.path.exists(os.path.join(folder, "quality_curve.png"))


@pytest.mark.parametrize("name", DATASETS)
def test_shipped_encoder_was_trained_for_the_shipped_generator(name):
    """Repackaging or swapping generator.keras leaves encoder.keras behind; its record
    names the generator it was fitted to, which must be the one shipped beside it."""
    folder = os.path.join(ROOT, "pretrained", name)
    record = os.path.join(folder, "encoder.json")
    if not os.path.exists(record):
        assert not os.path.exists(os.path.join(folder, "encoder.keras")), (
            f"{name}: encoder.keras without encoder.json")
        pytest.skip(f"{name}: no encoder shipped")
    with open(record) as f:
        encoder = json.load(f)
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(folder, "generator.keras"), "rb") as f:
        shipped = hashlib.sha256(f.read()).hexdigest()
    assert encoder["generator_sha256"] == shipped, (
        f"pretrained/{name}/encoder.keras was trained for another generator; rerun "
        f"{encoder['command']}")
    assert manifest["sha256"] == shipped
    assert os.path.exists(os.path.join(folder, encoder["file"]))
