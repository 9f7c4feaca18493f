import json
import os

import numpy as np
import pytest
from binaries import run_script

from defense_gan_tf.batch_cache import save_batch
from defense_gan_tf.config import AttackConfig, ProjectionConfig
from defense_gan_tf.defense.reconstruction import batches_folder
from defense_gan_tf.records import report
from defense_gan_tf.metrics.detection import roc_curve
from defense_gan_tf.records.loading import rec_cache_status
from defense_gan_tf.records.runs import RunSpec
from defense_gan_tf.workflows.whitebox_run import WhiteboxRun, run_whitebox
from defense_gan_tf.plots import save_image_grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def setup(tiny_world):
    return tiny_world


def _settings(gen_path, **kw):
    return dict(dict(model="E", num_tests=20, num_train=200, epochs=3, batch_size=10,
                     attack=AttackConfig(attack_type="fgsm", eps=0.3),
                     projection=ProjectionConfig(iterations=3, restarts=2),
                     generator=gen_path), **kw)


def _run(setup, **kw):
    root, gen_path, train, test = setup
    settings = _settings(gen_path, **kw)
    own = {k: settings.pop(k) for k in ("gradient", "same_init") if k in settings}
    return run_whitebox(WhiteboxRun(spec=RunSpec(**settings), **own),
                        results_dir=str(root / "results"),
                        classifier_dir=str(root / "classifiers"), train_data=train,
                        test_data=test, command="pytest", log=lambda m: None)


def test_whitebox_runs_fill_the_paper_table(setup, monkeypatch):
    from defense_gan_tf.workflows import whitebox_run

    root = setup[0]
    grids = []

    def grid(images, path, **kw):
        grids.append((path, kw))
        return save_image_grid(images, path, **kw)

    monkeypatch.setattr(whitebox_run, "save_image_grid", grid)
    none = _run(setup, defense_type="none")
    # The grid marks each clean and adversarial image with the class the model gave it,
    # wrong ones flagged: as many flags on the adversarial row as the accuracy implies
    # for these first images, and labels that are digits.
    path, kw = grids[-1]
    assert os.path.exists(path) and kw["row_labels"] == ["clean", "adversarial"]
    assert len(kw["cell_labels"]) == 20 and all(k.isdigit() for k in kw["cell_labels"])
    test_y = setup[3][1][:10]
    assert list(kw["cell_wrong"]) == [int(k) != y for k, y in
                                      zip(kw["cell_labels"], np.tile(test_y, 2))]
    assert sum(kw["cell_wrong"][10:]) >= sum(kw["cell_wrong"][:10])
    r = none.result
    assert r.clean["n"] == 20
    assert r.adversarial["accuracy"] == r.adversarial["correct"] / 20
    assert r.adversarial["accuracy"] < r.clean["accuracy"]
    low, high = r.adversarial["ci95"]
    assert low <= r.adversarial["accuracy"] <= high
    assert r.gradient_norm_mean > 0 and r.linf_mean <= 0.3 + 1e-6
    orig = _run(setup, defense_type="defense_gan", gradient="bpda")
    path, kw = grids[-1]
    assert len(kw["row_labels"]) == 4 and kw["cell_labels"][20:] == [None] * 20
    assert not any(kw["cell_wrong"][20:])  # the reconstructions carry no marks
    det = orig.result.detection
    # The AUC is the one of the recorded reconstruction errors (ROC of clean vs adversarial).
    assert det["auc"] == pytest.approx(
        roc_curve(det["clean_errors"], det["adversarial_errors"]).auc)
    assert min(det["clean_errors"]) > 0.0
    rec = _run(setup, defense_type="defense_gan", train_on_recs=True, gradient="none")
    # gradient "none": the attacker gets no signal and the report says so.
    assert rec.result.gradient_norm_mean == 0.0
    assert rec.result.gradient_norm_zero_fraction == 1.0
    table = _run(setup, defense_type="adv_tr").table
    header = table.splitlines()[2]
    assert "Defense-GAN-Rec" in header and "adv. training" in header
    row = [l for l in table.splitlines() if l.startswith("| fgsm (eps 0.3) | E |")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert all(c for c in cells[:7]), row  # the paper's five columns filled (MagNet not run)
    runs = report.load_runs(str(root / "results"))
    assert len(runs) == 4
    with open(none.json_path) as f:
        saved = json.load(f)
    assert saved["versions"]["tensorflow"] and saved["command"] == "pytest"
    assert saved["result"] == json.loads(json.dumps(none.result.to_json()))
    assert "adversarial_examples" not in saved["result"]
    assert os.path.exists(os.path.join(root, "results", "whitebox_table.md"))
    pngs = [n for n in os.listdir(root / "results") if n.endswith("_roc.png")]
    assert pngs
    # The reconstructions were cached, as was the classifier trained on them, and a dry
    # run's estimate finds both; other reconstructions (another seed) are not there.
    assert [n for n in os.listdir(root / "classifiers") if n.startswith("recs_")]
    status = lambda **kw: rec_cache_status(
        RunSpec(**_settings(setup[1], defense_type="defense_gan", train_on_recs=True, **kw)),
        classifier_dir=str(root / "classifiers"), train_data=setup[2])
    assert status() == (True, True, 0)
    assert status(seed=7) == (False, False, 0)
    os.remove(next(root.glob("classifiers/*_recs_*.keras")))
    assert status() == (False, True, 0)  # the classifier goes, its training images stay
    # An interrupted run's batches count as reconstructions kept, not as the cache.
    whole = next(p for p in root.glob("classifiers/recs_*.npz"))
    recs = np.load(whole)["reconstructions"]
    for start in (0, 64, 192):  # 192..199: the last batch holds 8
        save_batch(os.path.join(batches_folder(str(whole)), f"b64_{start:07d}.npz"),
                   reconstructions=recs[start:start + 64])
    os.remove(whole)
    assert status() == (False, False, 136)


def test_bin_whitebox_smoke_and_bad_flags(setup, mnist_dir, tmp_path):
    gen_path = setup[1]
    base = [os.path.join(ROOT, "bin", "whitebox.py"), "--model=E",
            "--num_tests=10", "--num_train=300", "--nb_epochs=1", "--batch_size=10",
            f"--results_dir={tmp_path / 'res'}", f"--classifier_dir={tmp_path / 'clf'}",
            f"--cache_dir={tmp_path / 'cache'}",
            f"--data_dir={mnist_dir}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # The projection split over the process's devices (one here) and compiled by XLA.
    ok = run_script(*base, "--defense_type=defense_gan", f"--generator={gen_path}",
                    "--rec_iters=2", "--rec_rr=2", "--gradient=bpda", "--replicas=mirrored",
                    "--rec_jit", env=env, timeout=600)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "Defense-GAN-Orig" in ok.stdout and "img/s" in ok.stdout
    assert "projection split over 1 replica(s)" in ok.stdout
    kept = os.listdir(tmp_path / "cache")  # the run's finished batch, by its settings
    assert len(kept) == 1 and os.listdir(tmp_path / "cache" / kept[0]) == [
        "batch_000000.npz"]
    assert any(n.endswith(".json") for n in os.listdir(tmp_path / "res"))
    for flag, name in (("--fgsm_eps=-0.1", "--fgsm_eps"), ("--fgsm_eps=1.5", "--fgsm_eps"),
                       ("--generator=/nonexistent.keras", "--generator"),
                       ("--num_tests=0", "--num_tests")):
        extra = [flag] + (["--defense_type=defense_gan"] if name == "--generator" else [])
        bad = run_script(*base, *extra, env=env, timeout=120)
        assert bad.returncode != 0 and name in bad.stderr, (flag, bad.stderr[-500:])
    bad = run_script(*base, "--defense_type=defense_gan", env=env, timeout=120)
    assert bad.returncode != 0 and "--generator is required" in bad.stderr


def _fake_run(defense, adv, finished, gradient="full", iterations=200, restarts=10,
              recs=0):
    entry = {"accuracy": adv, "ci95": [adv, adv], "n": 50, "correct": int(adv * 50)}
    return {"kind": "whitebox", "finished": finished, "command": "c",
            "settings": {"defense_type": defense, "train_on_recs": bool(recs), "model": "A",
                         "num_train": recs or 50_000,
                         "gradient": gradient, "same_init": False,
                         "attack": {"attack_type": "fgsm", "eps": 0.3},
                         "projection": {"iterations": iterations, "restarts": restarts}},
            "result": {"adversarial": entry, "clean": entry}}


def test_table_keeps_defense_gan_runs_with_different_settings_apart():
    runs = [_fake_run("defense_gan", 0.5, "1", "full"),
            _fake_run("defense_gan", 0.25, "2", "bpda"),
            _fake_run("defense_gan", 0.75, "3", "full"),          # replaces the first
            _fake_run("defense_gan", 0.125, "4", "full", 50, 4),
            _fake_run("none", 0.0625, "5"), _fake_run("none", 0.03125, "6")]
    table = report.whitebox_table(runs)
    row = [l for l in table.splitlines() if l.startswith("| fgsm (eps 0.3) | A |")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    orig = cells[5]
    assert orig.split("<br>") == ["0.125 [0.12, 0.12] n=50 (L=50 R=4 full)",
                                  "0.250 [0.25, 0.25] n=50 (L=200 R=10 bpda)",
                                  "0.750 [0.75, 0.75] n=50 (L=200 R=10 full)"]
    assert cells[3].startswith("0.031")  # latest undefended run wins
    assert "<br>" not in cells[3]


def test_rec_cell_names_the_size_of_its_reconstructed_training_set():
    table = report.whitebox_table([_fake_run("defense_gan", 0.5, "1", recs=10_000),
                                   _fake_run("defense_gan", 0.25, "2")])
    row = [l for l in table.splitlines() if l.startswith("| fgsm (eps 0.3) | A |")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == "0.500 [0.50, 0.50] n=50 (L=200 R=10 full, 10,000 recs)"  # Rec
    assert cells[5] == "0.250 [0.25, 0.25] n=50 (L=200 R=10 full)"  # Orig: no recs
    assert "classifier trained on 10,000 reconstructions" in table


def test_runs_of_two_datasets_in_one_folder_get_a_row_each_naming_it():
    mnist = _fake_run("none", 0.5, "1")
    fashion = _fake_run("none", 0.25, "2")
    fashion["settings"]["dataset"] = "fashion_mnist"
    mnist["settings"]["dataset"] = "mnist"
    table = report.whitebox_table([mnist, fashion])
    rows = [l for l in table.splitlines() if l.startswith("| fgsm (eps 0.3) |")]
    assert len(rows) == 2
    assert rows[0].startswith("| fgsm (eps 0.3) | A (fashion_mnist) |") and "0.250" in rows[0]
    assert rows[1].startswith("| fgsm (eps 0.3) | A (mnist) |") and "0.500" in rows[1]
    # One dataset: rows as before, without it.
    assert "| fgsm (eps 0.3) | A |" in report.whitebox_table([mnist])


def test_an_interrupted_whitebox_evaluation_resumes_with_the_same_results(setup, tmp_path):
    """Finished batches are kept; a resumed evaluation reads them back and gives the
    uninterrupted results exactly, as does one that takes its batches in another order
    (a shard's): batch b draws from its own stretch of each defense's random stream."""
    from defense_gan_tf.sharding import Shard
    import keras

    from defense_gan_tf.batch_cache import ResumableBatches
    from defense_gan_tf.defense import DefendedClassifier
    from defense_gan_tf.errors import Interrupted
    from defense_gan_tf.workflows.whitebox import evaluate_whitebox

    _, gen_path, _, test = setup
    gen = keras.models.load_model(gen_path)
    clf = keras.Sequential([keras.Input(gen.output_shape[1:]), keras.layers.Flatten(),
                            keras.layers.Dense(2, kernel_initializer="ones")])
    x, y = test[0][:15], test[1][:15]

    def evaluate(batches, restore=True, shard=None):
        c = ProjectionConfig(iterations=3, restarts=2)
        model = DefendedClassifier(clf, gen, c, gradient="bpda", draw_seed=3)
        scorer = DefendedClassifier(clf, gen, c, gradient="none", draw_seed=4)

        def score(v):
            logits, projection = scorer.call_with_details(v)
            return logits, projection.error
        return evaluate_whitebox(model, x, y, AttackConfig(attack_type="fgsm", eps=0.3),
                                 batch_size=4, score_fn=score, batches=batches,
                                 streams=(model, scorer) if restore else (),
                                 shard=shard, log=lambda m: None)

    whole = evaluate(None)
    folder = str(tmp_path / "batches")
    first = ResumableBatches(folder)
    first.stop = lambda: first.computed >= 2
    with pytest.raises(Interrupted):
        evaluate(first)
    resumed = ResumableBatches(folder)
    again = evaluate(resumed)
    assert (resumed.loaded, resumed.computed) == (2, 2)
    for key in ("clean", "adversarial"):
        assert getattr(again, key) == getattr(whole, key)
    assert again.detection == whole.detection and again.linf_mean == whole.linf_mean
    np.testing.assert_array_equal(again.adversarial_examples, whole.adversarial_examples)
    reordered = evaluate(None, shard=Shard(1, 2))  # batches 1, 3, then 0, 2
    assert reordered.detection == whole.detection
    assert reordered.adversarial == whole.adversarial
    # Without the defense's streams positioned per batch, later batches draw other starts.
    other = str(tmp_path / "other")
    cut = ResumableBatches(other)
    cut.stop = lambda: cut.computed >= 2
    with pytest.raises(Interrupted):
        evaluate(cut)
    careless = evaluate(ResumableBatches(other), restore=False)
    assert careless.detection["clean_errors"][8:] != whole.detection["clean_errors"][8:]
