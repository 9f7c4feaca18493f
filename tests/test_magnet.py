import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from binaries import run_script

from defense_gan_tf import models
from defense_gan_tf.defense import magnet
from defense_gan_tf.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _digits(n, seed):
    """Bright strokes on a dark background: a few random thick bars per image."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28, 1), np.float32)
    for img in x:
        for _ in range(3):
            r, c = rng.integers(4, 20, 2)
            if rng.random() < 0.5:
                img[r:r + 3, c:c + 8] = 1.0
            else:
                img[r:r + 8, c:c + 3] = 1.0
    return x


@pytest.fixture(scope="module")
def trained():
    train, val = _digits(600, 0), _digits(400, 1)
    config = magnet.MagNetConfig(false_positive_rate=0.1, epochs=15, batch_size=32,
                                 learning_rate=3e-3)
    detectors, reformer = magnet.train_magnet(train, val, config, seed=0, log=lambda m: None)
    return detectors, reformer, config


def test_autoencoders_reconstruct_their_data_better_than_noise(trained):
    detectors, _, _ = trained
    held_out = _digits(200, 2)
    noise = np.random.default_rng(3).uniform(size=held_out.shape).astype(np.float32)
    for d in detectors:
        clean = magnet.reconstruction_errors(d.autoencoder, held_out, d.p)
        assert np.median(clean) < 0.5 * np.median(
            magnet.reconstruction_errors(d.autoencoder, noise, d.p))


def test_thresholds_give_the_stated_false_positive_rate(trained):
    detectors, _, config = trained
    held_out = _digits(1000, 4)
    rate = magnet.rejected_by(detectors, held_out).mean()
    # Each of the two detectors rejects 5% of clean validation images: about 10% in all
    # (less where they agree).
    assert 0.04 <= rate <= 0.16
    noise = np.random.default_rng(5).uniform(size=(100, 28, 28, 1)).astype(np.float32)
    assert magnet.rejected_by(detectors, noise).mean() > 0.9


def test_magnet_round_trip_and_gradient(trained, tmp_path):
    detectors, reformer, config = trained
    clf = models.build_classifier("E", seed=0)
    folder = str(tmp_path / "magnet")
    magnet.save_magnet(folder, detectors, config, command="pytest")
    loaded = magnet.load_magnet(folder, clf)
    x = tf.constant(_digits(4, 6))
    np.testing.assert_allclose(loaded(x).numpy(), magnet.MagNet(clf, detectors, reformer)(x),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(loaded.rejected(x.numpy()),
                                  magnet.rejected_by(detectors, x.numpy()))
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = tf.reduce_sum(loaded(x))
    assert float(tf.norm(tape.gradient(out, x))) > 0  # attacks see through the reformer
    with open(os.path.join(folder, "magnet.json")) as f:
        assert json.load(f)["config"]["false_positive_rate"] == 0.1
    with pytest.raises(InputError, match="magnet.json"):
        magnet.load_magnet(str(tmp_path), clf)


def test_bin_train_magnet(tmp_path, mnist_dir):
    out = str(tmp_path / "magnet")
    cmd = [os.path.join(ROOT, "bin", "train_magnet.py"),
           f"--data_dir={mnist_dir}", f"--output_dir={out}", "--epochs=1",
           "--num_train=500", "--false_positive_rate=0.05"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    ok = run_script(*cmd, env=env, timeout=600)
    assert ok.returncode == 0, ok.stderr[-2000:]
    with open(os.path.join(out, "magnet.json")) as f:
        record = json.load(f)
    assert 0.0 < record["clean_test_rejection_rate"] < 0.2
    again = run_script(*cmd, env=env, timeout=300)
    assert again.returncode != 0 and "--output_dir" in again.stderr


def test_magnet_in_the_white_and_black_box_workflows(tiny_world, tmp_path):
    from defense_gan_tf.config import AttackConfig
    from defense_gan_tf.workflows.blackbox_run import BlackboxRun, run_blackbox
    from defense_gan_tf.records.runs import RunSpec
    from defense_gan_tf.workflows.whitebox_run import WhiteboxRun, run_whitebox

    root, _, train, test = tiny_world
    detectors, _ = magnet.train_magnet(
        train[0], test[0][:30], magnet.MagNetConfig(false_positive_rate=0.1, epochs=2,
                                                    batch_size=32), log=lambda m: None)
    folder = magnet.save_magnet(str(tmp_path / "magnet"), detectors,
                                magnet.MagNetConfig(false_positive_rate=0.1))
    spec = RunSpec(model="E", defense_type="magnet", magnet=folder, num_tests=20,
                   num_train=200, epochs=2, batch_size=10, attack=AttackConfig(eps=0.3))
    out = run_whitebox(WhiteboxRun(spec=spec), results_dir=str(tmp_path / "wb"),
                       classifier_dir=str(root / "classifiers"), train_data=train,
                       test_data=test, command="pytest", log=lambda m: None)
    m = out.result.magnet
    assert 0.0 <= m["clean_rejection_rate"] <= 1.0
    counted = m["adversarial_defended_counting_detections"]
    assert counted["correct"] >= out.result.adversarial["correct"]  # detections only add
    header = out.table.splitlines()[2]
    assert "MagNet" in header and "detected counted as defended" in header
    row = [l for l in out.table.splitlines() if l.startswith("| fgsm (eps 0.3) | E |")][0]
    assert "rejects" in row
    with pytest.raises(ValueError, match="MagNet folder"):
        RunSpec(defense_type="magnet")
    bb = run_blackbox(BlackboxRun(spec=dataclasses.replace(spec, num_tests=30),
                                  substitute_model="E", holdout=20, data_aug=2,
                                  epochs_substitute=2),
                      results_dir=str(tmp_path / "bb"), classifier_dir=str(root / "classifiers"),
                      train_data=train,
                      test_data=(np.concatenate([test[0]] * 2), np.concatenate([test[1]] * 2)),
                      command="pytest", log=lambda m: None)
    assert bb.result.magnet["adversarial_defended_counting_detections"]["n"] == 30
