"""EOT, PGD in L2 and the latent-space attack (Athalye et al. 2018)."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
from binaries import run_script

from defense_gan_tf import attacks, config as config_lib
from defense_gan_tf.attacks.common import expected_loss_and_gradient


def _noisy_linear(seed=0):
    """logits = flatten(x + 0.5 noise) W: a randomized model that can be seeded."""
    w = tf.constant(np.random.default_rng(seed).normal(size=(784, 10)).astype(np.float32)
                    * 0.05)

    def model_fn(x, seed=None):
        shape = tf.shape(x)
        noise = (tf.random.normal(shape) if seed is None else
                 tf.random.stateless_normal(shape, seed=seed))
        return tf.matmul(tf.reshape(x + 0.5 * noise, [-1, 784]), w)
    return model_fn


def _images(n=4, seed=1):
    return np.random.default_rng(seed).uniform(0.2, 0.8, (n, 28, 28, 1)).astype(np.float32)


def test_eot_gradient_variance_falls_with_samples():
    fn = _noisy_linear()
    x, y = tf.constant(_images()), tf.constant([1, 2, 3, 4], tf.int64)

    def spread(samples):
        grads = [expected_loss_and_gradient(fn, x, y, samples=samples, seed=s)[1].numpy()
                 for s in range(6)]
        return float(np.mean(np.var(np.stack(grads), axis=0)))
    one, eight = spread(1), spread(8)
    assert eight < 0.3 * one  # about 1/8 in expectation
    # The same seed gives the same draws: reproducible attacks.
    a = expected_loss_and_gradient(fn, x, y, samples=3, seed=5)[1].numpy()
    b = expected_loss_and_gradient(fn, x, y, samples=3, seed=5)[1].numpy()
    np.testing.assert_array_equal(a, b)


def test_eot_with_one_sample_is_the_plain_attack_and_seeded_attacks_repeat():
    fn = _noisy_linear()
    x, y = _images(), np.array([1, 2, 3, 4])
    np.testing.assert_array_equal(attacks.fgsm(fn, x, eps=0.1, y=y, seed=3).numpy(),
                                  attacks.fgsm(fn, x, eps=0.1, y=y, seed=3,
                                               eot_samples=1).numpy())
    for attack in (
            lambda: attacks.pgd_linf(fn, x, eps=0.1, step_size=0.02, iterations=3, y=y,
                                     seed=4, eot_samples=2),
            lambda: attacks.pgd_l2(fn, x, eps=1.0, step_size=0.3, iterations=3, y=y,
                                   seed=4, eot_samples=2)):
        np.testing.assert_array_equal(attack().numpy(), attack().numpy())
    with pytest.raises(ValueError, match="eot samples"):
        attacks.fgsm(fn, x, eps=0.1, y=y, eot_samples=0)


def test_pgd_l2_stays_in_the_ball_and_beats_fgsm_at_an_l2_budget():
    # A linear model that looks mostly at a 4x4 patch: weight 1 there, 0.01 elsewhere.
    w = np.full((28, 28, 1), 0.01, np.float32)
    w[10:14, 10:14] = 1.0
    w_flat = tf.constant(w.reshape(784, 1))

    def model_fn(x):  # class 1 when the weighted sum exceeds 8 + 0.01 * 768 * 0.5
        score = tf.matmul(tf.reshape(x, [-1, 784]), w_flat) - (8.0 + 3.84)
        return tf.concat([tf.zeros_like(score), score], axis=1)

    rng = np.random.default_rng(0)
    x = rng.uniform(0.3, 0.7, (16, 28, 28, 1)).astype(np.float32)
    x[:, 10:14, 10:14] = 0.6  # patch sum 9.6: class 1 by a margin of about 1.6
    y = np.ones(16, np.int64)
    accuracy = lambda images: float(np.mean(np.argmax(model_fn(images), 1) == y))  # noqa
    assert accuracy(x) == 1.0
    eps = 1.0
    adv = attacks.pgd_l2(model_fn, x, eps=eps, step_size=0.25, iterations=10, y=y, seed=0)
    norms = np.sqrt(np.sum((adv.numpy() - x) ** 2, axis=(1, 2, 3)))
    assert norms.max() <= eps + 1e-4
    assert adv.numpy().min() >= 0.0 and adv.numpy().max() <= 1.0
    # FGSM of the same L2 size (eps / 28 per pixel) spends it on every pixel alike.
    fgsm = attacks.fgsm(model_fn, x, eps=eps / 28.0, y=y)
    assert accuracy(adv) < 0.2 < accuracy(fgsm)


def test_latent_attack_finds_on_manifold_examples_and_checks_the_projection(
        dense_generator):
    from defense_gan_tf.defense import project

    g = dense_generator()
    # A linear classifier of G's images: class = whether pixel mean exceeds the median.
    z = tf.random.stateless_normal([64, 8], seed=[1, 1]) * 0.35
    means = tf.reduce_mean(g(z), axis=[1, 2, 3]).numpy()
    threshold = float(np.median(means))

    def classifier(images):
        m = tf.reduce_mean(images, axis=[1, 2, 3])
        return tf.stack([50.0 * (threshold - m), 50.0 * (m - threshold)], axis=1)

    x = g(z[:8]).numpy()
    y = np.argmax(classifier(x).numpy(), 1)
    close = np.abs(means[:8] - threshold) < np.quantile(np.abs(means - threshold), 0.5)
    out = attacks.latent_attack(g, classifier, x, y=y, budget=0.01, z_init=z[:8],
                                steps=100, learning_rate=0.05, search_steps=2)
    assert out.x_adv.shape == x.shape and out.distortion.shape == (8,)
    assert out.found[close].all()  # images near the boundary are always crossed
    found = out.found
    assert np.all(out.distortion[found] <= 0.01)
    assert np.all(np.argmax(classifier(out.x_adv[found]).numpy(), 1) != y[found])
    # The re-projection check: a fresh projection of the found G(z) is classified too.
    rec = project(g, out.x_adv[found], config_lib.ProjectionConfig(iterations=50,
                                                                   restarts=4),
                  seed=0).reconstruction
    survives = np.argmax(classifier(rec).numpy(), 1) != y[found]
    assert survives.mean() > 0.5


def _count_calls(monkeypatch, name):
    """The first argument (the model or generator) of every call to
    ``adaptive.attacks.<name>`` from now on."""
    from defense_gan_tf.workflows import adaptive

    calls, real = [], getattr(adaptive.attacks, name)

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(adaptive.attacks, name, counting)
    # Perturbation algorithms are reached through the one dispatch table.
    for algorithm, function in list(adaptive.attacks.ALGORITHMS.items()):
        if function is real:
            monkeypatch.setitem(adaptive.attacks.ALGORITHMS, algorithm, counting)
    return calls


def test_latent_cell_keeps_clean_images_outside_the_budget_and_searches_once(
        dense_generator, monkeypatch, tmp_path):
    """Scoring the latent attack: an image it did not find within the budget stays
    clean (a failed attack, never a far-away G(z)); one search serves every budget,
    also in a later run (the search is kept on disk)."""
    from defense_gan_tf.workflows import adaptive
    from defense_gan_tf.records.runs import RunSpec

    g = dense_generator()
    z = tf.random.stateless_normal([64, 8], seed=[1, 1]) * 0.35
    threshold = float(np.median(tf.reduce_mean(g(z), axis=[1, 2, 3]).numpy()))

    def classifier(images):
        m = tf.reduce_mean(images, axis=[1, 2, 3])
        return tf.stack([50.0 * (threshold - m), 50.0 * (m - threshold)], axis=1)

    x = g(z[:8]).numpy()
    y = np.argmax(classifier(x).numpy(), 1)
    run = adaptive.AdaptiveRun(spec=RunSpec(defense_type="defense_gan", generator="g"),
                               latent_budget=(1e-12, 0.01), latent_steps=100,
                               latent_search_steps=2, latent_learning_rate=0.05)
    searches = _count_calls(monkeypatch, "latent_attack")
    memo_dir, wrap = str(tmp_path / "searches"), adaptive.attacks.LatentAttackResult
    kw = dict(model_fn=None, classifier=classifier, generator=g, start_projector=None,
              seed=3, memo=adaptive.SearchMemo(memo_dir, wrap))
    tight, share_tight = adaptive.craft("latent", 1e-12, run, x, y, **kw)
    wide, share_wide = adaptive.craft("latent", 0.01, run, x, y, **kw)
    assert len(searches) == 1
    assert share_tight == 0.0 and np.array_equal(tight, x)  # nothing found: all clean
    assert share_wide > 0
    moved = np.abs(wide - x).reshape(8, -1).max(axis=1) > 0
    assert moved.mean() == share_wide
    assert np.all(np.mean((wide - x) ** 2, axis=(1, 2, 3))[moved] <= 0.01)
    assert np.all(np.argmax(classifier(wide[moved]).numpy(), 1) != y[moved])
    kw["memo"] = adaptive.SearchMemo(memo_dir, wrap)  # a rerun
    again, _ = adaptive.craft("latent", 0.01, run, x, y, **kw)
    assert len(searches) == 1 and np.array_equal(again, wide)
    # Each attack family's own settings belong to its cells' keys alone: the latent
    # search's, CW's and the EOT draws'.
    settings = {"latent_search_steps": 5, "pgd_steps": 100}
    families = [({"latent_search_steps": 9}, [("latent", 0.01)],
                 [("bpda_pgd", 0.3)]),
                ({"cw_learning_rate": 0.1}, [("cw_bpda_track", 2.0)],
                 [("bpda_pgd", 0.3), ("latent", 0.01)]),
                ({"eot_samples": 5}, [("bpda_eot_pgd", 0.3), ("bpda_eot_track_pgd", 0.3)],
                 [("bpda_track_pgd", 0.3)])]
    for change, keyed, unkeyed in families:
        other = {**settings, **change}
        for attack, budget in keyed:
            assert adaptive.cell_key(settings, attack, budget) != adaptive.cell_key(
                other, attack, budget), (change, attack)
        for attack, budget in unkeyed:
            assert adaptive.cell_key(settings, attack, budget) == adaptive.cell_key(
                other, attack, budget), (change, attack)
    with pytest.raises(ValueError, match="latent_budget"):
        adaptive.AdaptiveRun(spec=run.spec, latent_budget=(0.01, -1.0))


def test_cw_cell_optimises_once_per_target_for_every_budget(monkeypatch, tmp_path):
    """CW-L2 minimises distortion without a budget: one optimisation per batch and
    target (the defense, the classifier alone) serves every L2 budget, also in a rerun
    (kept on disk); at each budget an image whose CW result lies outside it stays
    clean."""
    from defense_gan_tf.workflows import adaptive
    from defense_gan_tf.records.runs import RunSpec

    w = tf.constant(np.random.default_rng(0).normal(size=(784, 10)).astype(np.float32))

    def classifier(images, training=False):
        return tf.matmul(tf.reshape(images, [-1, 784]), w)

    def defended(images, training=False):  # another target with its own optimisation
        return classifier(images * 0.9)

    x = _images(6)
    y = np.argmax(classifier(x).numpy(), 1)
    run = adaptive.AdaptiveRun(spec=RunSpec(defense_type="defense_gan", generator="g"),
                               eps_l2=(0.5, 4.0), cw_iterations=60, cw_learning_rate=0.05)
    calls = _count_calls(monkeypatch, "cw_l2")
    memo = adaptive.SearchMemo(str(tmp_path / "cw"))
    rerun = adaptive.SearchMemo(str(tmp_path / "cw"))  # reads the first run's from disk

    def cw(budget, target, m):
        return adaptive.craft("cw_bpda_track", budget, run, x, y, model_fn=target,
                              classifier=classifier, generator=None, start_projector=None,
                              seed=5, memo=m)
    whole = {t: cw(100.0, t, memo) for t in (defended, classifier)}
    assert calls == [defended, classifier]
    for target, (images, share) in whole.items():
        assert share == 1.0  # every CW result lies within an L2 of 100
        dist = np.sqrt(((images - x) ** 2).reshape(6, -1).sum(axis=1))
        mid = float(np.median(dist))  # half the images inside
        for budget, m in ((mid, memo), (mid, rerun), (0.0, rerun)):
            inside = dist <= budget + 1e-6
            cut, share_cut = cw(budget, target, m)
            assert share_cut == inside.mean()
            assert np.array_equal(cut[inside], images[inside])
            assert np.array_equal(cut[~inside], x[~inside])  # clean outside the budget
        assert 0 < np.mean(dist <= mid + 1e-6) < 1
    assert calls == [defended, classifier]  # no optimisation after the first budget


def test_fgsm_cell_takes_one_gradient_per_target_for_every_budget(monkeypatch, tmp_path):
    """FGSM's step is eps times one gradient's sign: the cell computes that gradient
    once per batch and target and gives, at every budget, exactly attacks.fgsm's
    images (the randomized model is seeded, so the direction is repeatable)."""
    from defense_gan_tf.workflows import adaptive
    from defense_gan_tf.records.runs import RunSpec

    fn = _noisy_linear(seed=2)

    def classifier(images, training=False):
        return fn(images, seed=[0, 0])

    x = tf.constant(_images(5))
    y = np.array([0, 1, 2, 3, 4])
    run = adaptive.AdaptiveRun(spec=RunSpec(defense_type="defense_gan", generator="g"))
    calls = _count_calls(monkeypatch, "fgsm_direction")
    memo = adaptive.SearchMemo(str(tmp_path / "fgsm"))
    for budget in (0.1, 0.3, 0.05):
        for target in (fn, classifier):
            images, _ = adaptive.craft("fgsm", budget, run, x, y, model_fn=target,
                                       classifier=classifier, generator=None,
                                       start_projector=None, seed=7, memo=memo)
            expected = attacks.fgsm(target, x, eps=budget, y=y, seed=7).numpy()
            np.testing.assert_array_equal(images, expected)
            assert np.abs(images - x.numpy()).max() <= budget + 1e-6
    assert calls == [fn, classifier]


def test_worst_case_counts_an_image_robust_only_if_every_attack_failed():
    from defense_gan_tf.workflows.adaptive import AttackCell, worst_case

    entry = {"accuracy": 0.0, "ci95": [0, 1], "n": 4, "correct": 0}

    def cell(attack, norm, budget, correct):
        return AttackCell(attack=attack, norm=norm, budget=budget, defended=entry,
                          undefended=entry, correct=correct, mean_distortion=0.0,
                          gradient_norm=None, seconds_per_image=0.0)
    worst = worst_case([cell("a", "linf", 0.1, [True, True, False, True]),
                        cell("b", "linf", 0.1, [True, False, True, True]),
                        cell("a", "linf", 0.2, [False, False, False, True])])
    assert worst[("linf", 0.1)]["correct"] == 2  # images 0 and 3 survived both
    assert worst[("linf", 0.2)]["correct"] == 1


def test_run_adaptive_writes_every_cell_and_the_worst_case(tiny_world, tmp_path):
    import os

    from defense_gan_tf.workflows.adaptive import AdaptiveRun, run_adaptive
    from defense_gan_tf.records.runs import RunSpec

    root, gen_path, train, test = tiny_world
    spec = RunSpec(model="E", defense_type="defense_gan", generator=gen_path, num_tests=6,
                   num_train=200, epochs=2, batch_size=3,
                   projection=config_lib.ProjectionConfig(iterations=3, restarts=2))
    run = AdaptiveRun(spec=spec, eps_linf=(0.1, 0.3), eps_l2=(2.0,), pgd_steps=3,
                      pgd_l2_steps=3, eot_samples=2, cw_iterations=3, latent_steps=5,
                      sanity_images=4)
    out = run_adaptive(run, results_dir=str(tmp_path / "res"),
                       classifier_dir=str(root / "classifiers"), train_data=train,
                       test_data=test, command="pytest", log=lambda m: None)
    cells = out.result.cells
    # fgsm, bpda_pgd, bpda_eot_pgd, bpda_track_pgd, bpda_eot_track_pgd and the two
    # transfer attacks at 2 budgets; pgd_l2 and cw with their tracking twins at 1; latent
    # at 1.
    assert len(cells) == 7 * 2 + 4 + 1
    names = os.listdir(tmp_path / "res")
    assert sum(n.startswith("adaptive_mnist_") and n.endswith(".json") for n in names) == 19
    # Transferred FGSM is the undefended FGSM, scored through the defense: the same
    # images, so the same undefended figures.
    by = {(c.attack, c.budget): c for c in cells}
    for eps in (0.1, 0.3):
        assert by[("transfer_fgsm", eps)].undefended == by[("fgsm", eps)].undefended
        assert by[("transfer_pgd", eps)].gradient_norm > 0
    assert any(n.startswith("robustness_curve_") for n in names)
    for (norm, budget), entry in out.result.worst_case.items():
        same = [c for c in cells if c.norm == norm and c.budget == budget]
        assert entry["correct"] <= min(c.defended["correct"] for c in same)
    linf = [c for c in cells if c.norm == "linf"]
    assert all(c.mean_distortion <= c.budget + 1e-6 for c in linf)
    assert "Worst case" in out.table and "| bpda_eot_pgd | linf | 0.3 |" in out.table
    assert "later steps descend 10 steps from the previous z*" in out.table
    assert "EOT attacks average 2 draws per step" in out.table
    checks = {c["name"]: c for c in out.result.sanity}
    assert set(checks) == {"full_range", "more_steps", "identity_bpda", "undefended_broken"}
    assert {c["attack"] for c in checks.values() if c["name"] != "undefended_broken"} == {
        "bpda_pgd"}
    # The weak attacks are those (latent aside) that leave the undefended classifier
    # above 0.1 at their norm's largest budget.
    weak = {(c.attack, c.budget) for c in cells if c.attack != "latent" and
            c.budget == max(run.budgets(c.attack)) and c.undefended["accuracy"] > 0.1}
    assert len(checks["undefended_broken"]["weak"]) == len(weak)
    assert checks["undefended_broken"]["passed"] == (not weak)
    assert checks["identity_bpda"]["passed"] and checks["identity_bpda"]["same_labels"]
    assert checks["full_range"]["accuracy"]["n"] == 4
    assert "Sanity checks" in out.table
    assert sum(n.startswith("adaptive_sanity_") for n in names) == 1
    # Every record comes from the one writer: settings, result, versions, command, time.
    cell_record = next((tmp_path / "res").glob("adaptive_mnist_fgsm_linf0.1_*.json"))
    sanity_record = next((tmp_path / "res").glob("adaptive_sanity_mnist_*.json"))
    for path in (cell_record, sanity_record):
        record = json.loads(path.read_text())
        assert record["command"] == "pytest" and record["finished"] and record["versions"]
        assert record["run_id"] == out.result.run_id and path.name.endswith(
            f"_{out.result.run_id}.json")
    assert json.loads(cell_record.read_text())["cell_key"]
    assert json.loads(sanity_record.read_text())["result"]["num_images"] == 4
    assert out.json_path.endswith(f"adaptive_table_{out.result.run_id}.md")
    assert json.loads(json.dumps(out.to_json()))["result"]["worst_case"]["linf 0.3"]
    with pytest.raises(ValueError, match="attacks"):
        AdaptiveRun(spec=spec, attacks=("nope",))
    with pytest.raises(ValueError, match="sanity_images"):
        AdaptiveRun(spec=spec, sanity_images=-1)
    with pytest.raises(ValueError, match="attack_iterations"):
        AdaptiveRun(spec=spec, attack_iterations=-2)


def test_run_adaptive_resumes_from_its_batch_cache(tiny_world, tmp_path, monkeypatch):
    """A spent time budget stops before any batch and writes no table; a finished run's
    cells come back from the cache without crafting again, and a run with one more attack
    crafts only that attack's batches."""
    import os

    from defense_gan_tf.workflows import adaptive
    from defense_gan_tf.workflows.adaptive import AdaptiveRun, run_adaptive
    from defense_gan_tf.records.runs import RunSpec

    root, gen_path, train, test = tiny_world
    spec = RunSpec(model="E", defense_type="defense_gan", generator=gen_path, num_tests=6,
                   num_train=200, epochs=2, batch_size=3,
                   projection=config_lib.ProjectionConfig(iterations=3, restarts=2))
    run = AdaptiveRun(spec=spec, attacks=("bpda_pgd",), eps_linf=(0.2,), pgd_steps=3,
                      sanity_images=0)
    res, cache = str(tmp_path / "res"), str(tmp_path / "cache")
    kw = dict(classifier_dir=str(root / "classifiers"), train_data=train, test_data=test,
              cache_dir=cache, log=lambda m: None)
    stopped = run_adaptive(run, results_dir=res, time_budget_seconds=0, **kw)
    assert not stopped.result.finished and stopped.result.cells == []
    assert not any(n.startswith("adaptive_table_") for n in os.listdir(res))

    crafted = []
    real_craft = adaptive.craft

    def counting(attack, *args, **kwargs):
        crafted.append(attack)
        return real_craft(attack, *args, **kwargs)

    monkeypatch.setattr(adaptive, "craft", counting)
    first = run_adaptive(run, results_dir=res, **kw)
    assert first.result.finished and crafted.count("bpda_pgd") == 4  # 2 batches x (defended,
    # undefended)
    again = run_adaptive(run, results_dir=res, **kw)
    assert crafted.count("bpda_pgd") == 4  # nothing crafted again
    assert again.result.cells[0].correct == first.result.cells[0].correct
    assert again.result.cells[0].seconds_per_image == first.result.cells[0].seconds_per_image
    # The batch cache lost (a fresh clone): the committed cell JSON carries the cell.
    import shutil
    shutil.rmtree(cache)
    cloned = run_adaptive(run, results_dir=res, **kw)
    assert crafted.count("bpda_pgd") == 4
    assert cloned.result.cells[0].correct == first.result.cells[0].correct
    # ... but only for the same settings: more PGD steps are measured anew.
    longer = run_adaptive(dataclasses.replace(run, pgd_steps=4), results_dir=res, **kw)
    assert longer.result.finished and crafted.count("bpda_pgd") == 8
    more = dataclasses.replace(run, attacks=("bpda_pgd", "fgsm"))
    # Stopped after the cached cell: a partial table shows it and nothing of fgsm.
    part = run_adaptive(more, results_dir=res, time_budget_seconds=0, **kw)
    assert not part.result.finished and [c.attack for c in part.result.cells] == ["bpda_pgd"]
    with open(part.result.partial_table) as f:
        text = f.read()
    assert "Partial: 1 of 2 cells" in text and "| bpda_pgd | linf | 0.2 |" in text
    assert "| fgsm |" not in text and "Sanity checks" not in text
    assert os.path.getsize(part.result.partial_plot) > 0
    assert crafted.count("fgsm") == 0
    both = run_adaptive(more, results_dir=res, **kw)
    assert not os.path.exists(part.result.partial_table)  # the full table replaces it
    assert not os.path.exists(part.result.partial_plot)
    assert crafted.count("bpda_pgd") == 8 and crafted.count("fgsm") == 4
    assert both.result.cells[0].correct == first.result.cells[0].correct


def test_finished_cells_come_back_only_from_matching_records(tmp_path):
    """A record is reused only with the cell's key (written, or recomputed from the
    settings of an older record without one), the same attack and as many images."""
    import json

    from defense_gan_tf.workflows.adaptive import AttackCell, cell_key, finished_cell

    settings = {"pgd_steps": 100, "attacks": ["a"], "projection": {"iterations": 200}}
    entry = {"accuracy": 0.5, "ci95": [0.1, 0.9], "correct": 1, "n": 2}
    cell = AttackCell("bpda_pgd", "linf", 0.3, entry, entry, [True, False], 0.3, 1.0, 2.0)
    key = cell_key(settings, "bpda_pgd", 0.3)

    def write(name, **record):
        with open(tmp_path / name, "w") as f:
            json.dump({"kind": "adaptive", "settings": settings,
                       "result": cell.to_json(), **record}, f)

    write("adaptive_mnist_bpda_pgd_linf0.3_old.json")  # no key stored: recomputed
    found, path = finished_cell(str(tmp_path), "mnist", "bpda_pgd", "linf", 0.3, key, 2)
    assert found == cell and path.endswith("_old.json")
    # Other run-only settings (the attack list) do not matter; cell settings do.
    other = cell_key({**settings, "attacks": ["a", "b"]}, "bpda_pgd", 0.3)
    assert other == key
    assert finished_cell(str(tmp_path), "mnist", "bpda_pgd", "linf", 0.3,
                         cell_key({**settings, "pgd_steps": 200}, "bpda_pgd", 0.3),
                         2) is None
    assert finished_cell(str(tmp_path), "mnist", "bpda_pgd", "linf", 0.3, key, 3) is None
    assert finished_cell(str(tmp_path), "mnist", "bpda_pgd", "linf", 0.2, key, 2) is None
    (tmp_path / "adaptive_mnist_bpda_pgd_linf0.3_old.json").write_text("{broken")
    assert finished_cell(str(tmp_path), "mnist", "bpda_pgd", "linf", 0.3, key, 2) is None
    write("adaptive_mnist_bpda_pgd_linf0.3_new.json", cell_key=key)
    assert finished_cell(str(tmp_path), "mnist", "bpda_pgd", "linf", 0.3, key, 2)[0] == cell


def test_sanity_checks_use_the_tracking_attack_without_plain_bpda(tiny_world, tmp_path):
    from defense_gan_tf.workflows.adaptive import AdaptiveRun, run_adaptive
    from defense_gan_tf.records.runs import RunSpec

    root, gen_path, train, test = tiny_world
    spec = RunSpec(model="E", defense_type="defense_gan", generator=gen_path, num_tests=4,
                   num_train=200, epochs=2, batch_size=4,
                   projection=config_lib.ProjectionConfig(iterations=3, restarts=2))
    run = AdaptiveRun(spec=spec, attacks=("bpda_track_pgd",), eps_linf=(0.3,),
                      pgd_steps=3, sanity_images=4, track_steps=2)
    out = run_adaptive(run, results_dir=str(tmp_path / "res"),
                       classifier_dir=str(root / "classifiers"), train_data=train,
                       test_data=test, log=lambda m: None)
    checks = {c["name"]: c for c in out.result.sanity}
    assert checks["full_range"]["attack"] == "bpda_track_pgd"
    assert checks["full_range"]["description"].startswith("Tracking BPDA-PGD")
    # The 100-step figure is the run's own cell on the same images.
    assert checks["more_steps"]["accuracy"] == out.result.cells[0].defended
    assert checks["identity_bpda"]["attack"] == "bpda_pgd" and checks["identity_bpda"][
        "passed"]


def test_attacker_projection_defaults_to_the_defense_and_keeps_a_valid_schedule():
    from defense_gan_tf.workflows.adaptive import AdaptiveRun
    from defense_gan_tf.records.runs import RunSpec

    fast = config_lib.projection_preset("fast", "mnist")
    spec = RunSpec(defense_type="defense_gan", projection=fast, generator="g.keras")
    assert AdaptiveRun(spec=spec).attack_projection == fast
    cheap = AdaptiveRun(spec=spec, attack_iterations=30, attack_restarts=4).attack_projection
    assert (cheap.iterations, cheap.restarts) == (30, 4)
    assert all(p < 30 for p in cheap.prune_at)
    assert dataclasses.replace(cheap, iterations=fast.iterations, restarts=fast.restarts,
                               prune_at=fast.prune_at) == fast


def test_bin_adaptive_smoke_and_bad_flags(tiny_world, tmp_path, mnist_dir):
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    gen_path = tiny_world[1]
    base = [os.path.join(root, "bin", "adaptive.py"), f"--generator={gen_path}",
            "--model=E", "--num_tests=4", "--num_train=300", "--nb_epochs=1",
            "--batch_size=4", "--rec_iters=2", "--rec_rr=2", "--pgd_steps=2",
            "--eot_samples=2", "--attacks=bpda_pgd,latent", "--eps_linf=0.3",
            "--latent_steps=3", f"--results_dir={tmp_path / 'res'}",
            f"--cache_dir={tmp_path / 'cache'}",
            f"--classifier_dir={tmp_path / 'clf'}", f"--data_dir={mnist_dir}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    ok = run_script(*base, env=env, timeout=600)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "Worst case" in ok.stdout
    for flag, name in (("--attacks=bogus", "--attacks"), ("--eps_linf=2", "--eps_linf"),
                       ("--attack_rec_iters=-1", "--attack_rec_iters"),
                       ("--eps_l2=x", "--eps_l2"), ("--latent_budget=0.01,x",
                                                      "--latent_budget"),
                       ("--time_budget_minutes=-1", "--time_budget_minutes")):
        bad = run_script(*base, flag, env=env, timeout=120)
        assert bad.returncode != 0 and name in bad.stderr, (flag, bad.stderr[-500:])


def test_identity_sanity_check_catches_a_wrong_backward_pass(toy):
    """The identity check compares BPDA plumbing with the plain attack: it passes for the
    straight-through gradient and fails when the backward pass is wrong (zero)."""
    import tensorflow as tf

    from defense_gan_tf.defense.projection import attach_gradient
    from defense_gan_tf.workflows.adaptive import IdentityDefense

    model, x, y = toy
    x, y = x[:16], y[:16]

    def pgd(model_fn):
        return attacks.pgd_linf(model_fn, x, y=y, eps=0.3, step_size=0.05, iterations=5,
                                seed=3).numpy()

    alone = pgd(model)
    np.testing.assert_allclose(pgd(IdentityDefense(model)), alone, atol=1e-6)

    def zero_backward(images, training=False):
        images = tf.convert_to_tensor(images, tf.float32)
        return model(attach_gradient(images, images, "none"), training=False)

    assert np.abs(pgd(zero_backward) - alone).max() > 0.1
    with pytest.raises(ValueError, match="bpda or none"):
        attach_gradient(x, x, "full")


def test_tracking_bpda_follows_the_projection_at_a_fraction_of_its_cost(dense_generator):
    import keras

    from defense_gan_tf.defense.projection import Projector

    g = dense_generator()
    clf = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(3, kernel_initializer=keras.initializers
                                               .RandomNormal(stddev=0.05, seed=3))])
    rng = np.random.default_rng(0)
    x = g(rng.normal(size=(4, 8)).astype(np.float32) * 0.35).numpy()
    cfg = config_lib.ProjectionConfig(iterations=60, restarts=4)
    full = Projector(g, cfg, "bpda")
    tracker = attacks.TrackingBPDA(clf, g, cfg, track_steps=5, seed=1)
    # The first call is the defense's projection (same seeded starts).
    np.testing.assert_allclose(tracker(x), clf(full(x, seed=[1, 5]).reconstruction),
                               atol=1e-6)
    assert tracker.generator_passes == 60 * 4 * 4
    # A moved image: 5 steps from the last z* fit it as well as the full projection,
    # far better than 5 steps from a random start.
    moved = tf.constant(np.clip(x + rng.uniform(-0.05, 0.05, x.shape), 0, 1)
                        .astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(moved)
        logits = tracker(moved)
        target = tf.reduce_sum(logits[:, 0])
    assert tracker.generator_passes == 60 * 4 * 4 + 5 * 4
    tracked = np.mean((g(tracker.z).numpy() - moved.numpy()) ** 2, axis=(1, 2, 3))
    best = full(moved, seed=[2, 5]).error.numpy()
    cold = Projector(g, config_lib.ProjectionConfig(iterations=5, restarts=1))(
        moved, seed=[3, 5]).error.numpy()
    assert np.all(tracked <= 1.5 * best + 1e-6), (tracked, best)
    assert cold.mean() > 2 * tracked.mean(), (cold, tracked)
    # BPDA: the input gradient is the classifier's at G(z*) (here its first weight column).
    weight = clf.layers[-1].kernel.numpy()[:, 0].reshape(28, 28, 1)
    np.testing.assert_allclose(tape.gradient(target, moved), np.stack([weight] * 4),
                               atol=1e-6)
    tracker.reset()
    np.testing.assert_allclose(tracker(moved), clf(full(moved, seed=[1, 5]).reconstruction),
                               atol=1e-6)
    with pytest.raises(ValueError, match="track_steps"):
        attacks.TrackingBPDA(clf, g, cfg, track_steps=0)


def test_tracking_eot_follows_k_draws_and_averages_their_gradients(dense_generator):
    """With draws=K the tracker's first call is K seeded projections of every image
    (rows k * B + b, as the defense's projection of the tiled batch), later calls follow
    all K; the attacks' loss gradient through it is the mean of the K draws' BPDA
    gradients, not the gradient of any one draw."""
    import keras

    from defense_gan_tf.attacks.common import loss_and_gradient
    from defense_gan_tf.defense.projection import Projector

    g = dense_generator()
    clf = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(3, activation="tanh", kernel_initializer=(
                                keras.initializers.RandomNormal(stddev=0.3, seed=3))),
                            keras.layers.Dense(3, kernel_initializer=(
                                keras.initializers.RandomNormal(stddev=1.0, seed=4)))])
    rng = np.random.default_rng(0)
    x = tf.constant(np.clip(g(rng.normal(size=(2, 8)).astype(np.float32)).numpy()
                            + rng.uniform(-0.2, 0.2, (2, 28, 28, 1)), 0, 1)
                    .astype(np.float32))
    y = tf.constant([0, 2], tf.int64)
    cfg = config_lib.ProjectionConfig(iterations=20, restarts=2)
    k = 3
    tracker = attacks.TrackingBPDA(clf, g, cfg, track_steps=4, seed=7, draws=k)
    logits = tracker.draw_logits(x)
    assert logits.shape == (k, 2, 3)
    full = Projector(g, cfg, "bpda")(tf.tile(x, [k, 1, 1, 1]), seed=[7, 5])
    np.testing.assert_allclose(logits.numpy().reshape(k * 2, 3),
                               clf(full.reconstruction).numpy(), atol=1e-5)
    assert tracker.generator_passes == 20 * 2 * k * 2
    recs = full.reconstruction.numpy().reshape(k, 2, -1)
    assert np.abs(recs[0] - recs[1]).max() > 1e-3  # the draws differ
    tracker(x)  # a later call follows all K z* (4 steps on K x B rows)
    assert tracker.generator_passes == 20 * 2 * k * 2 + 4 * k * 2
    # The attack's gradient is the mean of the draws' gradients.
    twin = attacks.TrackingBPDA(clf, g, cfg, track_steps=4, seed=7, draws=k)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        per_draw = twin.draw_logits(x)
        per_example = [tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=per_draw[i]) for i in range(k)]
        losses = [tf.reduce_sum(one) for one in per_example]
    grads = np.stack([tape.gradient(loss, x).numpy() for loss in losses])
    tracker.reset(seed=7)
    loss, grad = loss_and_gradient(tracker, x, y)
    np.testing.assert_allclose(grad.numpy(), grads.mean(axis=0), atol=1e-5)
    assert min(np.abs(grad.numpy() - one).max() for one in grads) > 1e-4
    np.testing.assert_allclose(loss.numpy(), np.mean([e.numpy() for e in per_example], 0),
                               atol=1e-5)
    with pytest.raises(ValueError, match="draws"):
        attacks.TrackingBPDA(clf, g, cfg, draws=0)


def test_a_resumed_cell_reports_the_same_gradient_norm(tiny_world, tmp_path):
    """The input-gradient probe's projection starts are keyed by the batch, so a cell
    whose first batch comes from the cache (a resumed run) reports what an uninterrupted
    run does."""
    import os

    from defense_gan_tf.workflows.adaptive import AdaptiveRun, run_adaptive
    from defense_gan_tf.records.runs import RunSpec

    root, gen_path, train, test = tiny_world
    spec = RunSpec(model="E", defense_type="defense_gan", generator=gen_path, num_tests=6,
                   num_train=200, epochs=2, batch_size=3,
                   projection=config_lib.ProjectionConfig(iterations=3, restarts=2))
    run = AdaptiveRun(spec=spec, attacks=("fgsm",), eps_linf=(0.2,), sanity_images=0)
    cache = tmp_path / "cache"
    kw = dict(classifier_dir=str(root / "classifiers"), train_data=train, test_data=test,
              cache_dir=str(cache), log=lambda m: None)
    straight = run_adaptive(run, results_dir=str(tmp_path / "a"), **kw).result.cells[0]
    # As if the run had been killed after its first batch: the second is computed again.
    second = [p for p in cache.rglob("batch_000003.npz")]
    assert len(second) == 1
    os.remove(second[0])
    resumed = run_adaptive(run, results_dir=str(tmp_path / "b"), **kw).result.cells[0]
    assert resumed.gradient_norm == straight.gradient_norm
    assert resumed.correct == straight.correct


def test_coinciding_series_of_the_robustness_curve_stay_visible(tmp_path, monkeypatch):
    """Two attacks that leave the undefended classifier at the same accuracies: their
    dotted lines differ in marker and size, so neither hides the other."""
    from matplotlib.figure import Figure

    from defense_gan_tf.workflows import adaptive

    def cell(attack, budget, defended, undefended):
        entry = lambda a: {"accuracy": a, "n": 4, "correct": int(4 * a), "ci95": [a, a]}
        return adaptive.AttackCell(attack=attack, norm="linf", budget=budget,
                                   defended=entry(defended), undefended=entry(undefended),
                                   correct=[True] * 4, mean_distortion=budget,
                                   gradient_norm=1.0, seconds_per_image=1.0)

    cells = [cell(a, b, d, 0.0) for a, d in (("fgsm", 0.5), ("transfer_fgsm", 0.75))
             for b in (0.1, 0.3)]
    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, *a, **k: saved.append(fig))
    adaptive.plot_robustness(cells, adaptive.worst_case(cells), str(tmp_path / "c.png"))
    lines = saved[0].axes[0].get_lines()
    dotted = [l for l in lines if l.get_linestyle() == ":"]
    assert len(dotted) == 2
    assert list(dotted[0].get_ydata()) == list(dotted[1].get_ydata()) == [0.0, 0.0]
    styles = {(l.get_marker(), l.get_markersize()) for l in dotted}
    assert len(styles) == 2 and all(m not in ("None", "", None) for m, _ in styles)


def test_workers_share_the_cells_and_leave_held_units_to_their_holder(tiny_world, tmp_path,
                                                                       monkeypatch):
    """Units (a budget-free attack's budgets together, else one cell) go by shard; a unit
    another live worker holds is left to it, and once it is released the next run
    measures only that unit and writes the table."""
    import os

    from defense_gan_tf.records import report
    from defense_gan_tf.records.runs import RunSpec, flat_settings
    from defense_gan_tf.sharding import Claims, Shard
    from defense_gan_tf.workflows import adaptive

    root, gen_path, train, test = tiny_world
    spec = RunSpec(model="E", defense_type="defense_gan", generator=gen_path, num_tests=6,
                   num_train=200, epochs=2, batch_size=3,
                   projection=config_lib.ProjectionConfig(iterations=3, restarts=2))
    run = adaptive.AdaptiveRun(spec=spec, attacks=("bpda_pgd", "fgsm"), eps_linf=(0.1, 0.2),
                               pgd_steps=3, sanity_images=0)
    assert adaptive.cell_units(run) == [("bpda_pgd", [0.1]), ("bpda_pgd", [0.2]),
                                        ("fgsm", [0.1, 0.2])]
    res = str(tmp_path / "res")
    kw = dict(results_dir=res, classifier_dir=str(root / "classifiers"), train_data=train,
              test_data=test, log=lambda m: None)
    crafted = []
    real_craft = adaptive.craft
    monkeypatch.setattr(adaptive, "craft", lambda attack, *a, **k: (
        crafted.append(attack), real_craft(attack, *a, **k))[1])
    # the run id, as run_adaptive derives it (the record fields of what it loads)
    inputs = adaptive.load_run_inputs(spec, results_dir=res, classifier_dir=kw[
        "classifier_dir"], train_data=train, test_data=test, log=lambda m: None)
    run_id = report.settings_id({**flat_settings(run), **inputs.record_fields(spec)})
    other = Claims(os.path.join(res, ".claims"))  # another worker, alive (this process)
    held = other.claim(adaptive.unit_claim_name(run_id, "bpda_pgd", [0.1]))
    crafted.clear()
    out = adaptive.run_adaptive(run, shard=Shard(1, 2), **kw)
    assert out.result.held == 1 and not out.result.finished
    assert [(c.attack, c.budget) for c in out.result.cells] == [
        ("bpda_pgd", 0.2), ("fgsm", 0.1), ("fgsm", 0.2)]
    # 2 batches x (defended, undefended), and for fgsm x its 2 budgets
    assert crafted.count("bpda_pgd") == 4 and crafted.count("fgsm") == 8
    assert not any(n.startswith("adaptive_table_") and not n.endswith(".partial.md")
                   for n in os.listdir(res))
    held.release()
    done = adaptive.run_adaptive(run, shard=Shard(0, 2), **kw)
    assert done.result.finished and done.result.held == 0 and len(done.result.cells) == 4
    assert crafted.count("bpda_pgd") == 8 and crafted.count("fgsm") == 8
    assert "| bpda_pgd | linf | 0.1 |" in done.table
    assert not os.path.exists(os.path.join(res, ".claims"))
