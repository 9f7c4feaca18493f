import hashlib
import json
import os

import numpy as np
import pytest
from binaries import run_script
from conftest import make_tiny_package

from defense_gan_tf import config as config_lib
from defense_gan_tf import training
from defense_gan_tf.generators.package import package_generator


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

    from defense_gan_tf.models.saving import save_without_optimizer

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


def test_package_refuses_to_replace_or_to_ship_an_untrained_run(tmp_path, tiny_config,
                                                                 images_and_classifier):
    from defense_gan_tf.generators.package import PackageExistsError

    images, clf = images_and_classifier
    kwargs = dict(classifier=clf, test_images=images[:8], reference_images=None,
                  num_samples=10)
    untrained = str(tmp_path / "untrained")
    training.train_gan(config_lib.override(tiny_config, {"gan.train_iters": 0}), untrained,
                       images=images, log=lambda m: None)
    dest = str(tmp_path / "pretrained")
    with pytest.raises(ValueError, match="0 iterations"):
        package_generator(untrained, dest, **kwargs)
    assert not os.path.exists(os.path.join(dest, "manifest.json"))

    run = str(tmp_path / "run")
    training.train_gan(config_lib.override(tiny_config, {"gan.train_iters": 2}), run,
                       images=images, log=lambda m: None,
                       evaluator=lambda g: {"classifier_score": 2.0, "frechet_distance": 5.0,
                                            "gradient_norm": float("inf")},
                       evaluate_every=1)
    first = package_generator(run, dest, **kwargs)
    assert first["critic_file"] == "critic.keras" and first["critic_note"] is None
    # The averaged generator gets its own quality figures and sample grid.
    import keras

    from defense_gan_tf.metrics.quality import generator_quality

    assert first["average_sha256"] != first["sha256"]
    average = keras.models.load_model(os.path.join(dest, first["average_file"]))
    assert first["average_quality"] == generator_quality(
        average, clf, images[:8], num_samples=10)
    assert os.path.getsize(os.path.join(dest, first["average_samples"])) > 0
    assert first["average_samples"] != first["samples"]
    assert first["quality_curve_last"]["iteration"] == 2
    # Strict JSON on disk (an overflowed figure is null, never Infinity), in the run
    # folder and in the package.
    for path in (os.path.join(run, "quality.jsonl"), os.path.join(dest, "quality.jsonl"),
                 os.path.join(dest, "manifest.json")):
        with open(path) as f:
            text = f.read()
        records = ([_strict_loads(line) for line in text.splitlines()]
                   if path.endswith(".jsonl") else [_strict_loads(text)["quality_curve_last"]])
        assert records and all(r["gradient_norm"] is None for r in records), path
    for name in ("critic.keras", "quality.jsonl", "quality_curve.png", "quality_curve.md"):
        assert os.path.getsize(os.path.join(dest, name)) > 0, name
    with open(os.path.join(dest, "quality_curve.md")) as f:
        assert "| 2 | 2.00 | 5.0 |" in f.read()
    with pytest.raises(PackageExistsError):
        package_generator(run, dest, **kwargs)
    again = package_generator(run, dest, overwrite=True,
                              defense_probe=lambda g, **_: {"clean": g.output_shape[1:]},
                              **kwargs)
    assert again["sha256"] == first["sha256"]
    assert again["defense"] == {"clean": (28, 28, 1)} and first["defense"] is None


def _strict_loads(text):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _stopping_probe(generator, **_):
    from defense_gan_tf.generators.training_curve import BudgetExhausted

    raise BudgetExhausted(1, 5, "cache")


def test_defense_figures_that_run_out_of_time_change_no_package(tmp_path, tiny_config,
                                                                images_and_classifier):
    from defense_gan_tf.generators.package import add_defense_figures
    from defense_gan_tf.generators.training_curve import BudgetExhausted

    images, clf = images_and_classifier
    kwargs = dict(classifier=clf, test_images=images[:8], reference_images=None,
                  num_samples=10)
    run, dest = str(tmp_path / "run"), str(tmp_path / "pretrained")
    training.train_gan(config_lib.override(tiny_config, {"gan.train_iters": 2}), run,
                       images=images, log=lambda m: None)
    package_generator(run, dest, **kwargs)
    before = {name: open(os.path.join(dest, name), "rb").read()
              for name in ("manifest.json", "generator.keras")}
    # Repackaging whose probe stops: the old package stays whole.
    with pytest.raises(BudgetExhausted):
        package_generator(run, dest, overwrite=True, defense_probe=_stopping_probe, **kwargs)
    # Figures added to the package in place: none until the probe finishes.
    with pytest.raises(BudgetExhausted):
        add_defense_figures(dest, _stopping_probe)
    for name, content in before.items():
        assert open(os.path.join(dest, name), "rb").read() == content, name
    seen = {}

    def probe(generator, **options):
        seen.update(options)
        return {"clean": {"accuracy": 1.0}}

    figures = add_defense_figures(dest, probe, command="python bin/measure_generator.py",
                                  cache_dir="c", deadline=5.0)
    assert seen == {"cache_dir": "c", "deadline": 5.0, "log": None}
    with open(os.path.join(dest, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["defense"] == figures == {"clean": {"accuracy": 1.0},
                                              "command": "python bin/measure_generator.py"}
    # An edit of the manifest made while the probe ran is kept.
    def editing_probe(generator, **options):
        with open(os.path.join(dest, "manifest.json")) as f:
            edited = json.load(f)
        edited["eval_wall_seconds"] = 123.0
        with open(os.path.join(dest, "manifest.json"), "w") as f:
            json.dump(edited, f)
        return {"clean": {"accuracy": 0.5}}

    add_defense_figures(dest, editing_probe)
    with open(os.path.join(dest, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["eval_wall_seconds"] == 123.0
    assert manifest["defense"]["clean"] == {"accuracy": 0.5}
    # A generator replaced while it was measured: its figures are not stored.
    def replacing_probe(generator, **options):
        with open(os.path.join(dest, "generator.keras"), "ab") as f:
            f.write(b"y")
        return {"clean": {"accuracy": 0.0}}

    with pytest.raises(ValueError, match="changed while"):
        add_defense_figures(dest, replacing_probe)
    with open(os.path.join(dest, "manifest.json")) as f:
        assert json.load(f)["defense"]["clean"] == {"accuracy": 0.5}
    # A generator that is not the one the manifest describes is refused.
    with open(os.path.join(dest, "generator.keras"), "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="sha256"):
        add_defense_figures(dest, probe)


def test_warm_start_continues_from_a_package(tmp_path, tiny_config, images_and_classifier):
    import keras

    images, clf = images_and_classifier
    cfg = config_lib.override(tiny_config, {"gan.train_iters": 3,
                                            "gan.precision": "mixed_bfloat16"})
    run, dest = str(tmp_path / "run"), str(tmp_path / "pretrained")
    training.train_gan(cfg, run, images=images, log=lambda m: None,
                       evaluator=lambda g: {"figure": 1}, evaluate_every=3,
                       command="python bin/train.py --first")
    package_generator(run, dest, classifier=clf, test_images=images[:8],
                      reference_images=None, num_samples=10,
                      train_commands=["python an/older/command.py"])
    warm = training.load_warm_start(dest)
    assert warm.iteration == 3 and warm.quality_path
    # A lost run folder: a new one continues at iteration 3 from the shipped weights.
    # It continues in float32 (a warm start may change the precision; the record says so).
    cfg32 = config_lib.override(cfg, {"gan.precision": "float32"})
    new = str(tmp_path / "new")
    messages = []
    r = training.train_gan(config_lib.override(cfg32, {"gan.train_iters": 3}), new,
                           images=images, log=messages.append, warm_start=warm,
                           command="python bin/train.py --second", launcher="bash leg.sh 9")
    assert (r.start_iteration, r.iteration) == (3, 3)
    shipped = keras.models.load_model(os.path.join(dest, "generator.keras"))
    restarted = keras.models.load_model(os.path.join(new, "generator.keras"))
    for a, b in zip(shipped.get_weights(), restarted.get_weights()):
        np.testing.assert_array_equal(a, b)
    with open(os.path.join(new, "progress.json")) as f:
        progress = json.load(f)
    assert progress["warm_starts"][0]["iteration"] == 3
    assert progress["warm_starts"][0]["precision"] == "float32"
    assert progress["warm_starts"][0]["previous_precision"] == "mixed_bfloat16"
    assert progress["total_train_seconds"] >= warm.train_seconds
    assert os.path.exists(os.path.join(new, "quality.jsonl"))
    # It then trains on; resuming that folder later is exact and ignores the warm start.
    r = training.train_gan(config_lib.override(cfg32, {"gan.train_iters": 5}), new,
                           images=images, log=messages.append, warm_start=warm,
                           time_budget_minutes=30)
    assert (r.start_iteration, r.iteration) == (3, 5)
    assert any("not needed" in m for m in messages)
    # Its package says which iterations trained in which precision.
    manifest = package_generator(new, str(tmp_path / "pretrained2"), classifier=clf,
                                 test_images=images[:8], reference_images=None,
                                 num_samples=10)
    assert manifest["precision"] == "float32"
    # The commands follow the weights: the first package's (the one given, then the
    # run's own), then each call of the warm-started run, in order.
    assert manifest["train_commands"] == [
        "python an/older/command.py",
        "python bin/train.py --first (started afresh, iterations 0-3 with the evaluation "
        "at 3, reached its train_iters)",
        f"python bin/train.py --second (through bash leg.sh 9; warm start from {dest} at "
        "iteration 3, iterations 3-3, reached its train_iters)",
        "train_gan() called from Python (resumed exactly, budget 30 min, iterations 3-5, "
        "reached its train_iters)"]
    assert manifest["precision_segments"] == [
        {"from": 0, "to": 3, "precision": "mixed_bfloat16"},
        {"from": 3, "to": 5, "precision": "float32"}]
    # Weights of another architecture are refused with the file named.
    other = config_lib.override(cfg, {"model.net_dim": 8})
    with pytest.raises(training.WarmStartError, match="generator.keras"):
        training.train_gan(other, str(tmp_path / "other"), images=images,
                           log=lambda m: None, warm_start=warm)
    # A final package goes without its critic: the one shipped before is removed, the
    # manifest says why, and a warm start from it is refused with the file named.
    final = package_generator(new, dest, classifier=clf, test_images=images[:8],
                              reference_images=None, num_samples=10, overwrite=True,
                              include_critic=False)
    assert not os.path.exists(os.path.join(dest, "critic.keras"))
    assert final["critic_file"] is None and "not shipped" in final["critic_note"]
    assert os.path.exists(os.path.join(dest, "generator.keras"))
    with pytest.raises(FileNotFoundError,
                       match="critic.keras.*run folder.*--warm_start_fresh_critic"):
        training.load_warm_start(dest)
    # It continues with a new critic when asked to: the generator carries over, the
    # critic starts from initial weights (not the run's), and the record says so.
    fresh = training.load_warm_start(dest, fresh_critic=True)
    assert fresh.critic_path is None and fresh.iteration == 5
    again, messages = str(tmp_path / "again"), []
    r = training.train_gan(config_lib.override(cfg32, {"gan.train_iters": 5}), again,
                           images=images, log=messages.append, warm_start=fresh)
    assert (r.start_iteration, r.iteration) == (5, 5)
    assert any("a new critic" in m for m in messages)
    for name, same in (("generator.keras", True), ("critic.keras", False)):
        trained = keras.models.load_model(os.path.join(new, name)).get_weights()
        restarted = keras.models.load_model(os.path.join(again, name)).get_weights()
        kernels = [(a, b) for a, b in zip(trained, restarted) if a.ndim > 1]
        assert kernels and all(np.array_equal(a, b) == same for a, b in kernels), name
    with open(os.path.join(again, "progress.json")) as f:
        assert "critic started from fresh" in json.load(f)["warm_starts"][-1]["note"]
    # With a warm-up, the new critic first trains alone: the generator is untouched, the
    # critic tells real from generated images better than the fresh one, and a rerun
    # (a warm-up interrupted before the first checkpoint is redone) gives the same critic.
    warmed = []
    for name in ("warmed", "warmed_again"):
        folder = str(tmp_path / name)
        r = training.train_gan(
            config_lib.override(cfg32, {"gan.train_iters": 5}), folder, images=images,
            log=messages.append,
            warm_start=training.load_warm_start(dest, fresh_critic=True, critic_warmup=50))
        assert (r.start_iteration, r.iteration) == (5, 5)
        warmed.append(folder)
    assert any(m.startswith("critic warm-up 50/50") for m in messages)
    models_of = {name: {f: keras.models.load_model(os.path.join(folder, f)) for f in
                        ("generator.keras", "critic.keras")}
                 for name, folder in (("fresh", again), ("warmed", warmed[0]),
                                      ("rerun", warmed[1]))}
    for a, b in zip(models_of["fresh"]["generator.keras"].get_weights(),
                    models_of["warmed"]["generator.keras"].get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(models_of["warmed"]["critic.keras"].get_weights(),
                    models_of["rerun"]["critic.keras"].get_weights()):
        np.testing.assert_array_equal(a, b)
    z = np.random.default_rng(5).standard_normal((64, cfg32.model.latent_dim))
    fake = models_of["fresh"]["generator.keras"](z.astype(np.float32))

    def wasserstein(critic):
        return float(np.mean(critic(images[:64])) - np.mean(critic(fake)))

    assert wasserstein(models_of["warmed"]["critic.keras"]) > \
        wasserstein(models_of["fresh"]["critic.keras"]) + 0.01
    with open(os.path.join(warmed[0], "progress.json")) as f:
        assert "trained alone for 50 rounds" in json.load(f)["warm_starts"][-1]["note"]
    with pytest.raises(ValueError, match="critic_warmup"):
        training.load_warm_start(dest, fresh_critic=True, critic_warmup=-1)


def test_recorded_commands_carry_no_absolute_paths():
    from defense_gan_tf.console import command_line

    root = "/home/someone/defense_gan_tf"
    line = command_line([f"{root}/bin/train.py", f"--output_dir={root}/runs/x",
                         "--data_dir=/home/someone/shared/data", "--seed=3", "relative/p"],
                        root=root)
    assert line == ("python bin/train.py --output_dir=runs/x --data_dir=../shared/data "
                    "--seed=3 relative/p")


def test_bin_measure_generator_runs_in_parts_and_fills_the_manifest(
        tmp_path, tiny_config, images_and_classifier, mnist_dir):
    from defense_gan_tf import models

    dest = make_tiny_package(tmp_path, tiny_config, images_and_classifier, iterations=1,
                             name="pretrained")
    classifier = str(tmp_path / "classifier_A.keras")
    models.build_classifier("E", input_shape=(28, 28, 1)).save(classifier)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [os.path.join(root, "bin", "measure_generator.py"),
           f"--package_dir={dest}", f"--classifier={classifier}", f"--data_dir={mnist_dir}",
           "--num_images=4", "--paper_fgsm_images=2", "--bpda_fgsm_images=2",
           "--rec_iters=2", "--rec_rr=2",
           "--batch_size=2", "--attack_batch_size=2", f"--cache_dir={tmp_path / 'cache'}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with open(os.path.join(dest, "manifest.json")) as f:
        before = f.read()
    stopped = run_script(*cmd, "--time_budget_minutes=1e-9", env=env, timeout=300)
    assert stopped.returncode == 3, stopped.stderr[-2000:]
    assert "not finished" in stopped.stdout and "0 of 10 batches" in stopped.stdout
    with open(os.path.join(dest, "manifest.json")) as f:
        assert f.read() == before
    done = run_script(*cmd, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(os.path.join(dest, "manifest.json")) as f:
        defense = json.load(f)["defense"]
    assert defense["defense_gan_orig"]["clean"]["n"] == 4
    assert defense["defense_gan_orig"]["paper_fgsm"]["n"] == 2
    assert defense["defense_gan_orig"]["bpda_fgsm"]["gradient_mode"] == "bpda"
    assert defense["settings"]["projection"]["iterations"] == 2
    assert "measure_generator.py" in defense["command"] and "=/" not in defense["command"]
    with open(os.path.join(dest, "defense_figures.md")) as f:
        assert "| clean |" in f.read()
    with open(os.path.join(dest, "manifest.json")) as f:
        measured = f.read()
    again = run_script(*cmd, env=env, timeout=300)  # the same measurement: refused
    assert again.returncode == 1 and "--overwrite" in again.stderr, again.stderr[-2000:]
    skipped = run_script(*cmd, "--skip_measured", env=env, timeout=300)
    assert skipped.returncode == 0 and "nothing to do" in skipped.stdout, skipped.stderr
    with open(os.path.join(dest, "manifest.json")) as f:
        assert f.read() == measured
    missing = run_script(cmd[0], f"--package_dir={tmp_path}", f"--classifier={classifier}",
                         env=env, timeout=120)
    assert missing.returncode != 0 and "--package_dir" in missing.stderr
