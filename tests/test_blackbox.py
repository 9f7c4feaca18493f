import dataclasses
import os

import numpy as np
import pytest
from binaries import run_script

from defense_gan_tf.config import AttackConfig, ProjectionConfig
from defense_gan_tf.records import report
from defense_gan_tf.workflows.blackbox_run import BlackboxRun, run_blackbox
from defense_gan_tf.records.runs import RunSpec



@pytest.fixture(scope="module")
def setup(tiny_world):
    return tiny_world

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_blackbox_runs_fill_the_table(setup, monkeypatch):
    from defense_gan_tf.workflows import blackbox_run

    from defense_gan_tf.attacks import substitute

    monkeypatch.setattr(blackbox_run, "PROGRESS_SECONDS", 0.0)  # a line after each batch
    monkeypatch.setattr(substitute, "PROGRESS_SECONDS", 0.0)
    root, gen_path, train, test = setup
    common = dict(model="E", num_tests=30, epochs=3, num_train=200, batch_size=10,
                  attack=AttackConfig(eps=0.3), generator=gen_path,
                  projection=ProjectionConfig(iterations=3, restarts=2))
    out, logs = {}, {}
    for defense in ("none", "defense_gan"):
        logs[defense] = []
        out[defense] = run_blackbox(
            BlackboxRun(spec=RunSpec(defense_type=defense, **common), substitute_model="E",
                        holdout=20, data_aug=2, epochs_substitute=5),
            results_dir=str(root / "bb"),
            classifier_dir=str(root / "classifiers"), train_data=train,
            test_data=(np.concatenate([test[0]] * 2), np.concatenate([test[1]] * 2)),
            command="pytest", log=logs[defense].append)
    # Labelling reports its progress (once a minute outside this test), never at the end:
    # the substitute's queries, then the test images'.
    said = [m.strip() for m in logs["defense_gan"]]
    assert [m.split(",")[0] for m in said if m.startswith("substitute:")] == [
        "substitute: 10/20 images labelled", "substitute: 30/40 images labelled"]
    progress = [m for m in said if m.startswith("oracle:")]
    assert "oracle: 10/30 labelled" in progress[0] and "ETA" in progress[0]
    assert not any(m.startswith("oracle: 30/30") for m in progress)
    # Each run draws its first clean and adversarial images, marked with the oracle's labels.
    grids = sorted(n for n in os.listdir(root / "bb") if n.endswith("_grid.png"))
    assert len(grids) == 2 and any("none" in n for n in grids), grids
    r = out["none"].result
    assert r.oracle_queries == 20 + 20  # seed set, then one augmentation round
    assert r.substitute_set_sizes == [20, 40]
    assert r.clean["n"] == 30 and r.linf_mean <= 0.3 + 1e-6
    table = out["defense_gan"].table
    row = [l for l in table.splitlines() if l.startswith("| FGSM (eps 0.3) | E / E |")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] and cells[3] and cells[5]  # no attack, no defense, Defense-GAN-Orig
    assert len(report.load_runs(str(root / "bb"), prefix="blackbox_")) == 2


def test_holdout_plus_tests_must_fit(setup):
    root, gen_path, train, test = setup
    with pytest.raises(ValueError, match="after the first 50 .holdout"):
        run_blackbox(BlackboxRun(spec=RunSpec(model="E", num_tests=50, num_train=200),
                                 holdout=50),
                     results_dir=str(root / "bb2"), classifier_dir=str(root / "c2"),
                     train_data=train, test_data=test, log=lambda m: None)


def test_bin_blackbox_smoke_and_bad_flags(tmp_path, mnist_dir):
    base = [os.path.join(ROOT, "bin", "blackbox.py"), "--bb_model=E",
            "--sub_model=E", "--holdout=20", "--data_aug=2", "--nb_epochs=1",
            "--nb_epochs_s=2", "--num_tests=30", "--num_train=300",
            f"--results_dir={tmp_path / 'res'}", f"--classifier_dir={tmp_path / 'clf'}",
            f"--data_dir={mnist_dir}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    ok = run_script(*base, env=env, timeout=600)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "black box / substitute" in ok.stdout and "oracle queries 40" in ok.stdout
    for flag, name in (("--fgsm_eps=2", "--fgsm_eps"), ("--holdout=0", "--holdout"),
                       ("--num_tests=9990", "--num_tests")):
        bad = run_script(*base, flag, env=env, timeout=120)
        assert bad.returncode != 0 and name in bad.stderr, (flag, bad.stderr[-400:])


def test_a_substitute_is_reused_across_epsilons_exactly(setup, monkeypatch):
    """A run differing only in epsilon reuses the cached substitute and clean labels, and
    its Defense-GAN oracle draws the random starts a fresh run at that epsilon draws."""
    from defense_gan_tf.workflows import blackbox_run

    seeds = []

    class Recording(blackbox_run.DefendedClassifier):
        def project(self, images, z_init=None, seed=None):
            seeds.append((int(self.draw_seed), self.draws))
            return super().project(images, z_init=z_init, seed=seed)

    monkeypatch.setattr(blackbox_run, "DefendedClassifier", Recording)
    root, gen_path, train, test = setup
    test2 = (np.concatenate([test[0]] * 2), np.concatenate([test[1]] * 2))

    def run(eps, classifier_dir, epochs_substitute=4):
        seeds.clear()
        logs = []
        spec = RunSpec(defense_type="defense_gan", model="E", num_tests=30, epochs=3,
                       num_train=200, batch_size=10, attack=AttackConfig(eps=eps),
                       generator=gen_path, projection=ProjectionConfig(iterations=3,
                                                                       restarts=2))
        out = run_blackbox(BlackboxRun(spec=spec, holdout=20, data_aug=2,
                                       epochs_substitute=epochs_substitute),
                           results_dir=str(root / "bb_reuse"),
                           classifier_dir=str(root / classifier_dir), train_data=train,
                           test_data=test2, log=logs.append)
        return out.result, list(seeds), logs

    first, first_seeds, _ = run(0.3, "c_reuse")
    reused, reused_seeds, logs = run(0.1, "c_reuse")
    fresh, fresh_seeds, _ = run(0.1, "c_fresh")
    assert not first.substitute_reused and not fresh.substitute_reused
    assert reused.substitute_reused and any("reusing" in m for m in logs)
    # Training (20 + 20 queries) and the clean labels (30) were not asked again: only the
    # 30 adversarial images were projected, with the starts a fresh run gives them.
    assert len(fresh_seeds) == 2 + 2 + 3 + 3 and reused_seeds == fresh_seeds[-3:]
    assert first_seeds == fresh_seeds  # the stream does not depend on epsilon
    assert reused.clean == fresh.clean and reused.adversarial == fresh.adversarial
    assert reused.substitute_agreement == fresh.substitute_agreement
    assert reused.oracle_queries == fresh.oracle_queries == 40
    assert reused.substitute_accuracy == fresh.substitute_accuracy
    assert reused.linf_mean == pytest.approx(fresh.linf_mean) and reused.linf_mean <= 0.1 + 1e-6
    assert reused.substitute_seconds == first.substitute_seconds
    # Any other setting trains a new substitute.
    other, _, logs = run(0.1, "c_reuse", epochs_substitute=3)
    assert not other.substitute_reused and not any("reusing" in m for m in logs)


@pytest.mark.parametrize("inside", [False, True])
def test_an_interrupted_substitute_training_continues_where_it_stopped(setup, monkeypatch,
                                                                      inside):
    """Stopped while its Defense-GAN oracle labels the second round (before a projection,
    or inside one, as a signal during the compiled loop does), a black-box run keeps the
    labels so far; the same run then asks only for the rest, with the random starts an
    uninterrupted run draws, and gives that run's figures."""
    from defense_gan_tf.workflows import blackbox_run

    seeds, stop = [], {"at": None}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    class Stopping(blackbox_run.DefendedClassifier):
        def project(self, images, z_init=None, seed=None):
            if len(seeds) == stop["at"]:
                if not inside:
                    raise KeyboardInterrupt
                self.projector = interrupted  # the projection itself is interrupted
            seeds.append((int(self.draw_seed), self.draws))
            try:
                return super().project(images, z_init=z_init, seed=seed)
            except KeyboardInterrupt:
                seeds.pop()  # its starts were never used
                raise

    monkeypatch.setattr(blackbox_run, "DefendedClassifier", Stopping)
    root, gen_path, train, test = setup
    test2 = (np.concatenate([test[0]] * 2), np.concatenate([test[1]] * 2))

    def settings(eps=0.3):
        spec = RunSpec(defense_type="defense_gan", model="E", num_tests=30, epochs=3,
                       num_train=200, batch_size=10, attack=AttackConfig(eps=eps),
                       generator=gen_path, projection=ProjectionConfig(iterations=3,
                                                                       restarts=2))
        return BlackboxRun(spec=spec, holdout=20, data_aug=3, epochs_substitute=3)

    def run(classifier_dir, stop_at=None):
        classifier_dir += "_inside" if inside else ""  # the fixture's folder is shared
        seeds.clear()
        stop["at"] = stop_at
        return run_blackbox(settings(),
                            results_dir=str(root / f"bb_{classifier_dir}"),
                            classifier_dir=str(root / classifier_dir), train_data=train,
                            test_data=test2, log=lambda m: None).result

    whole = run("c_whole")
    whole_seeds = list(seeds)
    # Oracle calls of 10 images: 2 for the seed set, 2 and 4 for the two augmented sets.
    with pytest.raises(KeyboardInterrupt):
        run("c_stopped", stop_at=5)  # the second call of the last round's labels
    stopped_seeds = list(seeds)
    stopped = str(root / ("c_stopped_inside" if inside else "c_stopped"))
    progress = list((root / stopped / "substitutes").glob("*.progress.npz"))
    assert len(progress) == 1
    # Estimates see the labels kept (seed set, first round, one call of the second) at
    # any epsilon, and no finished substitute; other settings see nothing.
    status = blackbox_run.substitute_cache_status
    assert status(settings(), stopped) == status(settings(0.1), stopped) == (False, 50)
    assert status(dataclasses.replace(settings(), data_aug=2), stopped) == (False, 0)
    assert status(settings(), None) == (False, 0)
    resumed = run("c_stopped")
    assert stopped_seeds + seeds == whole_seeds
    assert not list((root / stopped / "substitutes").glob("*.progress.npz"))
    assert status(settings(0.1), stopped) == (True, 0)
    assert resumed.oracle_queries == whole.oracle_queries == 20 + 20 + 40
    assert resumed.substitute_agreement == whole.substitute_agreement
    assert resumed.clean == whole.clean and resumed.adversarial == whole.adversarial
    assert resumed.substitute_accuracy == whole.substitute_accuracy
