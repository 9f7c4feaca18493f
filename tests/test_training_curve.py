import os

import numpy as np
import pytest
import tensorflow as tf

from defense_gan_tf import models
from defense_gan_tf.config import ProjectionConfig
from defense_gan_tf.defense import project
from defense_gan_tf.errors import Interrupted
from defense_gan_tf.generators import training_curve


def _linear_classifier():
    import keras

    inputs = keras.Input((28, 28, 1))
    logits = keras.layers.Dense(10, kernel_initializer=keras.initializers.RandomNormal(
        stddev=0.5, seed=3))(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, logits)


@pytest.fixture(scope="module")
def probe_setup():
    from defense_gan_tf import config as config_lib

    cfg = config_lib.override(config_lib.preset("mnist"),
                              {"model.net_dim": 4, "model.latent_dim": 8})
    generator = models.build_generator(cfg, seed=0)
    classifier = _linear_classifier()
    rng = np.random.default_rng(0)
    images = rng.uniform(0.0, 1.0, (30, 28, 28, 1)).astype(np.float32)
    labels = np.argmax(classifier(images).numpy(), -1)  # the classifier is right on all
    settings = training_curve.CurveSettings(
        num_samples=20, num_images=6, paper_fgsm_images=3, eps=0.3,
        projection=ProjectionConfig(iterations=3, restarts=2), batch_size=4,
        paper_fgsm_batch_size=2)
    probe = training_curve.DefenseQualityProbe(classifier, images, labels, settings)
    return generator, classifier, images, labels, settings, probe


def test_fixed_inputs_are_the_attacks_they_claim(probe_setup):
    _, classifier, images, labels, settings, probe = probe_setup
    x = images[:6]
    delta = probe.x_fgsm - x
    assert np.abs(delta).max() <= 0.3 + 1e-6
    inside = (x > 0.3) & (x < 0.7)  # no clipping either way
    np.testing.assert_allclose(np.abs(delta[inside]), 0.3, atol=1e-6)
    # The transferred FGSM raises the classifier's loss on every image.
    def loss(z):
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels[:6], classifier(z)).numpy()
    assert np.all(loss(probe.x_fgsm) > loss(x))
    noise = probe.x_noise - x
    np.testing.assert_allclose(np.abs(noise[inside]), 0.3, atol=1e-6)
    assert probe.undefended["clean"]["accuracy"] == 1.0


def test_probe_figures_match_a_direct_projection(probe_setup):
    generator, classifier, _, labels, settings, probe = probe_setup
    out = probe(generator)
    assert out["num_samples"] == 20 and out["classifier_score"] >= 1.0
    assert out["frechet_distance"] > 0.0
    d = out["defense_gan_orig"]
    assert [d[k]["n"] for k in ("clean", "transferred_fgsm", "random_sign", "paper_fgsm")] \
        == [6, 6, 6, 3]
    # The clean figure is what project() + the classifier give with the probe's seed.
    rec = project(generator, probe.x, settings.projection, seed=[11, 0]).reconstruction
    correct = np.argmax(classifier(rec).numpy(), -1) == labels[:6]
    assert d["clean"]["correct"] == int(correct.sum())
    # Paper-style FGSM has a real gradient through the 3 unrolled steps.
    assert d["paper_fgsm"]["input_gradient_norm_mean"] > 0.0
    assert d["paper_fgsm"]["zero_gradient_pixel_share"] < 0.5
    assert d["paper_fgsm"]["mean_linf_distortion"] == pytest.approx(0.3, abs=1e-5)
    f = out["transferred_fgsm_failures"]
    assert f["failures"] == 6 - d["transferred_fgsm"]["correct"]
    assert f["optimisation_failures"] + f["range_failures"] == f["failures"]
    # Fixed seeds: the same generator scores the same.
    again = probe(generator)
    assert again["defense_gan_orig"]["clean"] == d["clean"]
    assert again["frechet_distance"] == out["frechet_distance"]


def test_an_interrupted_probe_resumes_from_its_cache_with_the_same_figures(
        probe_setup, tmp_path, monkeypatch):
    import time

    from defense_gan_tf import config as config_lib

    generator, _, _, _, _, probe = probe_setup
    plain = probe(generator)
    total = probe.planned_batches()
    assert total == 3 * 2 + (2 + 1)  # 6 images in 4s; paper FGSM 3 in 2s, re-projected in 4s
    # A deadline already passed: nothing runs.
    with pytest.raises(training_curve.BudgetExhausted) as stop:
        probe(generator, cache_dir=str(tmp_path), deadline=0.0)
    assert (stop.value.done, stop.value.total) == (0, total)
    # A stop request (a signal to the training run) after two batches: the third never
    # starts; then the clock jumps past the deadline once four are done.
    lines = []
    with pytest.raises(Interrupted) as stop:
        probe(generator, cache_dir=str(tmp_path), log=lines.append,
              stop=lambda: len(lines) >= 2)
    assert not isinstance(stop.value, training_curve.BudgetExhausted)
    assert len(lines) == 2 and "after 2 of 9 batches" in str(stop.value)
    real = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + (1e9 if len(lines) >= 4 else 0))
    with pytest.raises(training_curve.BudgetExhausted) as stop:
        probe(generator, cache_dir=str(tmp_path), deadline=real() + 1e6, log=lines.append)
    monkeypatch.undo()
    assert stop.value.done == 4 and len(lines) == 4
    folder = tmp_path / probe.cache_key(generator)
    assert len(list(folder.glob("*.npz"))) == 4 and not list(folder.glob("*.tmp*"))
    # The rerun loads those four and computes the rest: the figures of an uncached call.
    lines.clear()
    resumed = probe(generator, cache_dir=str(tmp_path), log=lines.append)
    assert len(lines) == total - 4 and resumed["batches_from_cache"] == 4
    assert resumed["defense_gan_orig"] == plain["defense_gan_orig"]
    assert resumed["transferred_fgsm_failures"] == plain["transferred_fgsm_failures"]
    # Another generator has another key: nothing cached for the first is reused.
    cfg = config_lib.override(config_lib.preset("mnist"),
                              {"model.net_dim": 4, "model.latent_dim": 8})
    other = models.build_generator(cfg, seed=1)
    assert probe.cache_key(other) != probe.cache_key(generator)


def test_failures_split_by_whether_the_clean_reconstruction_fits_better():
    adversarial = np.zeros((4, 2, 2, 1), np.float32)
    clean_rec = np.stack([np.full((2, 2, 1), v, np.float32) for v in (0.1, 0.1, 0.5, 0.5)])
    # clean fits: 0.01, 0.01, 0.25, 0.25
    found = np.array([0.05, 0.001, 0.05, 0.05])
    failed = np.array([True, True, True, False])
    out = training_curve.classify_failures(clean_rec, found, adversarial, failed)
    assert out == {"failures": 3, "optimisation_failures": 1, "range_failures": 2,
                   "optimisation_share": pytest.approx(1 / 3)}


def test_settings_are_checked():
    with pytest.raises(ValueError, match="paper_fgsm_images"):
        training_curve.CurveSettings(num_images=10, paper_fgsm_images=11)
    with pytest.raises(ValueError, match="num_samples"):
        training_curve.CurveSettings(num_samples=1)
    with pytest.raises(ValueError, match="eps"):
        training_curve.CurveSettings(eps=0.0)


def test_curve_table_has_one_row_per_evaluation_in_order_with_its_figures():
    from defense_gan_tf.generators.training_curve import curve_table

    def acc(k, n):
        return {"accuracy": k / n, "correct": k, "n": n, "ci95": [k / n - 0.1, k / n + 0.05],
                "mean_reconstruction_error": 0.001 * k}

    late = {"iteration": 5000, "classifier_score": 8.5, "frechet_distance": 7.31,
            "defense_gan_orig": {"clean": acc(100, 100), "transferred_fgsm": acc(30, 100),
                                 "random_sign": acc(99, 100),
                                 "paper_fgsm": {**acc(13, 20),
                                                "input_gradient_norm_median": 3e-4,
                                                "input_gradient_norm_mean": 2.5e10}},
            "transferred_fgsm_failures": {"failures": 70, "range_failures": 68}}
    early = {"iteration": 2500, "classifier_score": 6.0}  # quality only
    table = curve_table([late, early]).splitlines()
    rows = [line for line in table if line.startswith("| 2,500") or line.startswith("| 5,000")]
    assert [r.split("|")[1].strip() for r in rows] == ["2,500", "5,000"]
    cells = [c.strip() for c in rows[1].split("|")[1:-1]]
    assert cells[:3] == ["5,000", "8.50", "7.3"]
    assert cells[4] == "0.30 [0.20, 0.35]"
    assert cells[6] == "0.65 [0.55, 0.70] n=20"
    assert cells[7] == "3.0e-04 / 2.5e+10" and cells[8] == "68 / 70"
    assert cells[9] == "0.1000 / 0.0300"
    assert [c.strip() for c in rows[0].split("|")[1:-1]][3:] == ["-"] * 7
    assert "first 100 test images" in "\n".join(table)


def test_brief_probe_scores_clean_and_transferred_only_at_half_the_batches(probe_setup):
    generator, _, _, _, _, probe = probe_setup
    brief = probe.brief()
    assert brief.planned_batches() == 4  # 2 x ceil(6 / 4): no noise, no paper-style FGSM
    assert probe.planned_batches() > brief.planned_batches()
    out = brief(generator)
    assert set(out["defense_gan_orig"]) == {"clean", "transferred_fgsm"}
    assert {"classifier_score", "frechet_distance"} <= set(out)
    full = probe(generator)
    assert out["defense_gan_orig"]["transferred_fgsm"] == \
        full["defense_gan_orig"]["transferred_fgsm"]  # same seeds, same figure


def test_curve_shows_the_averaged_generator_beside_the_raw_one(tmp_path):
    from defense_gan_tf.generators.training_curve import curve_table, plot_quality_curve

    def acc(k):
        return {"accuracy": k / 100, "correct": k, "n": 100, "ci95": [k / 100 - 0.1, k / 100]}

    raw = {"iteration": 2500, "classifier_score": 8.0, "frechet_distance": 5.0,
           "defense_gan_orig": {"clean": acc(100), "transferred_fgsm": acc(40)}}
    entries = [raw, dict(raw, iteration=5000, average={
        "classifier_score": 8.7, "frechet_distance": 4.2,
        "defense_gan_orig": {"clean": acc(99), "transferred_fgsm": acc(55)}})]
    table = curve_table(entries).splitlines()
    assert table[0].endswith("averaged generator: score / FD / clean / transferred FGSM |")
    row = [line for line in table if line.startswith("| 5,000")][0]
    assert row.split("|")[-2].strip() == "8.70 / 4.2 / 0.99 / 0.55 [0.45, 0.55]"
    assert [line for line in table if line.startswith("| 2,500")][0].split("|")[-2].strip() \
        == "-"
    assert "averaged" not in curve_table([raw])  # older curves keep their columns
    path = plot_quality_curve(entries, str(tmp_path / "curve.png"))
    assert os.path.getsize(path) > 10_000


def test_sharded_batches_take_their_share_and_wait_for_what_others_hold(tmp_path):
    """Worker 0 of 2 computes its batches (0, 2), then the other share's free one (3),
    and waits for batch 1, which another worker holds, taking that worker's result."""
    import threading

    import numpy as np

    from defense_gan_tf.batch_cache import save_batch
    from defense_gan_tf.generators.training_curve import _Batches
    from defense_gan_tf.sharding import Claims, Shard

    folder = str(tmp_path / "probe")
    batches = _Batches(folder, 4, None, None, shard=Shard(0, 2))
    batches.batches.poll_seconds = 0.05
    other = Claims(f"{folder}/.claims").claim("double_0001")  # alive: this process
    computed = []

    def double(x):
        computed.append(int(x[0]))
        return x * 2

    def finish_other():
        save_batch(f"{folder}/double_0001.npz", out0=np.array([-1, -1]))
        other.release()

    timer = threading.Timer(0.5, finish_other)
    timer.start()
    out = batches.run("double", double, np.arange(8), batch_size=2)
    timer.join()
    assert computed == [0, 4, 6]  # batches 0 and 2 (its share), then 3
    np.testing.assert_array_equal(out, [0, 2, -1, -1, 8, 10, 12, 14])
    # Without shards nothing is claimed: every batch is read back or computed in order.
    again = _Batches(folder, 4, None, None)
    np.testing.assert_array_equal(again.run("double", double, np.arange(8), batch_size=2),
                                  out)
    assert again.loaded == 4


def test_bpda_fgsm_steps_along_the_classifier_gradient_at_the_attackers_reconstruction(
        probe_setup):
    """FGSM through BPDA (Athalye et al. 2018): the projection's backward pass is the
    identity, so the step is eps times the sign of the classifier's loss gradient taken
    at G(z*) of the attacker's own projection (seed 12); its figure is that image's
    re-projection (seed 11), as for the other attacks."""
    import dataclasses

    generator, classifier, _, labels, settings, probe = probe_setup
    bpda = training_curve.DefenseQualityProbe(
        classifier, probe.x, probe.y, dataclasses.replace(settings, bpda_fgsm_images=5))
    assert bpda.cache_key(generator) != probe.cache_key(generator)
    assert probe.brief().cache_key(generator) == bpda.brief().cache_key(generator)
    assert bpda.planned_batches() == probe.planned_batches() + 2 * 2  # 5 images in 4s
    out = bpda(generator)
    entry = out["defense_gan_orig"]["bpda_fgsm"]
    assert entry["n"] == 5 and entry["gradient_mode"] == "bpda"
    assert out["settings"]["bpda_fgsm_images"] == 5
    assert "bpda_fgsm_images" not in probe(generator)["settings"]  # keys of older runs
    # The same attack, computed directly.
    x, y = probe.x[:5], labels[:5]
    rec = project(generator, x, settings.projection, seed=[12, 0]).reconstruction
    with tf.GradientTape() as tape:
        tape.watch(rec)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
            y, classifier(rec)))
    x_adv = np.clip(x + 0.3 * np.sign(tape.gradient(loss, rec).numpy()), 0.0, 1.0)
    made, _, _ = bpda._attack_fgsm(generator, training_curve._Batches(None, 1, None, None),
                                   "bpda", 5)
    assert np.mean(made == x_adv) > 0.99  # (a sign may differ where the gradient is ~0)
    assert entry["mean_linf_distortion"] == pytest.approx(0.3, abs=1e-5)
    defended = project(generator, x_adv, settings.projection, seed=[11, 0]).reconstruction
    correct = np.argmax(classifier(defended).numpy(), -1) == y
    assert entry["correct"] == int(correct.sum())
    assert entry["zero_gradient_pixel_share"] < 0.5  # BPDA's gradient does not vanish
    assert "BPDA FGSM input-gradient" in training_curve.defense_table(out)
    with pytest.raises(ValueError, match="bpda_fgsm_images"):
        training_curve.CurveSettings(num_images=10, paper_fgsm_images=0, bpda_fgsm_images=11)
