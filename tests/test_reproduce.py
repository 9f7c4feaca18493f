import dataclasses
import os
import subprocess
import sys
import time

import pytest
from binaries import loads_tensorflow, run_script

from defense_gan_tf import jsonio
from defense_gan_tf.config import AttackConfig, ProjectionConfig
from defense_gan_tf.workflows import reproduce
from defense_gan_tf.records.runs import RunSpec
from defense_gan_tf.sharding import Shard
from defense_gan_tf.workflows.whitebox_run import WhiteboxRun

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tables_hold_the_papers_cells():
    s = reproduce.TableSettings(num_tests=500, defense_gan_tests=200)
    wb = reproduce.cells("whitebox_mnist", s)
    assert len(wb) == 4 * 3 * 5  # models A-D x FGSM, RAND+FGSM, CW x five defenses
    assert len({c.label for c in wb}) == len(wb)
    for c in wb:
        spec = c.run.spec
        expected = 200 if spec.defense_type == "defense_gan" else 500
        assert spec.num_tests == expected and spec.epochs == 10
        assert spec.train_on_recs == ("rec" in c.label)
        if spec.train_on_recs:
            assert spec.num_train == 10_000
    bb = reproduce.cells("blackbox_mnist", s)
    assert {(c.run.spec.model, c.run.substitute_model) for c in bb} == {
        ("A", "E"), ("B", "E"), ("C", "E"), ("D", "E"), ("F", "E"), ("A", "B")}
    sweep = reproduce.cells("blackbox_eps_mnist", s)
    assert sorted({c.run.spec.attack.eps for c in sweep}) == [0.1, 0.15, 0.2, 0.25, 0.3]
    fast = reproduce.cells("whitebox_fmnist", reproduce.TableSettings(projection="fast"))
    assert all(c.run.spec.dataset == "fashion_mnist" for c in fast)
    assert any(c.run.spec.projection.prune_at for c in fast)
    detection = reproduce.cells("detection_mnist", s)
    assert [c.label for c in detection] == [f"fgsm A defense_gan eps {e}"
                                            for e in ("0.1", "0.2", "0.3")]
    no_magnet = reproduce.cells("whitebox_mnist", reproduce.TableSettings(magnet=None))
    assert len(no_magnet) == 4 * 3 * 4
    with pytest.raises(ValueError, match="unknown table"):
        reproduce.cells("table_9")


def test_estimates_count_a_classifier_training_once_and_adversarial_training_dearer():
    wb = {c.label: c.estimate_seconds for c in reproduce.cells("whitebox_mnist")}
    # The first cell with a classifier trains it; later cells load it from the cache.
    assert wb["fgsm A none"] - wb["rand_fgsm A none"] >= 10 * 30
    assert wb["fgsm A adv_tr"] > 2 * wb["fgsm A none"]
    assert wb["rand_fgsm A adv_tr"] < wb["fgsm A none"]
    # B has its own classifier, costed at its own measured epoch time; C's is dearer
    assert wb["fgsm B none"] - wb["rand_fgsm B none"] == pytest.approx(
        10 * reproduce.epoch_seconds("B", False))
    assert wb["fgsm C adv_tr"] > wb["fgsm B adv_tr"] > wb["fgsm D adv_tr"]
    # A black-box Defense-GAN oracle projects its 4,800 queries at the cost of a stream of
    # plain images, as do the Rec classifier's reconstructions (first Rec cell only).
    bb = {c.label: c.estimate_seconds for c in reproduce.cells("blackbox_mnist")}
    query = reproduce.SECONDS_PER_PAPER_PROJECTION * reproduce.SECONDS_PER_ORACLE_QUERY_FACTOR
    assert bb["F/E eps 0.3 defense_gan"] >= 4800 * query
    recs = bb["A/E eps 0.3 defense_gan rec"] - bb["A/B eps 0.3 defense_gan rec"]
    assert recs == pytest.approx(10_000 * query
                                 + 10 * reproduce.epoch_seconds("A", False) / 5, rel=0.01)
    # The eps sweep trains each substitute once (first epsilon); the other epsilons label
    # only their adversarial images.
    sweep = {c.label: c for c in reproduce.cells("blackbox_eps_mnist")}
    assert sweep["F/E eps 0.1 defense_gan"].estimate_seconds == bb["F/E eps 0.3 defense_gan"]
    for eps in (0.15, 0.2, 0.25, 0.3):
        cell = sweep[f"F/E eps {eps} defense_gan"]
        assert cell.estimate_seconds == pytest.approx(cell.run.spec.num_tests * query)
    # Adversarial training uses the attack's epsilon, so each epsilon trains its own
    # classifier; the undefended one is trained once for the whole sweep.
    for eps in (0.1, 0.15, 0.2, 0.25, 0.3):
        assert sweep[f"F/E eps {eps} adv_tr"].estimate_seconds >= 10 * 60
        if eps != 0.1:
            assert sweep[f"F/E eps {eps} none"].estimate_seconds < 60
    assert wb["cw A adv_tr"] == wb["rand_fgsm A adv_tr"]  # CW meets the eps-0.3 one


def test_estimates_leave_out_substitutes_trained_or_partly_labelled_on_disk():
    query = reproduce.SECONDS_PER_PAPER_PROJECTION * reproduce.SECONDS_PER_ORACLE_QUERY_FACTOR

    def sweep(status):
        asked = []
        lookup = None if status is None else lambda run: (asked.append(run), status)[1]
        out = {c.label: c.estimate_seconds
               for c in reproduce.cells("blackbox_eps_mnist", substitute_status=lookup)}
        assert status is None or {r.substitute_model for r in asked} == {"E"}
        return out

    fresh, whole, half = sweep(None), sweep((True, 0)), sweep((False, 2400))
    first = "F/E eps 0.1 defense_gan"
    # A substitute trained by another table (blackbox_mnist's eps 0.3 cell) costs the
    # first epsilon only its adversarial images, like the later epsilons ...
    assert whole[first] == pytest.approx(fresh["F/E eps 0.15 defense_gan"])
    # ... and an interrupted training only the labels it still lacks.
    assert fresh[first] - half[first] == pytest.approx(2400 * query)
    assert half["F/E eps 0.15 defense_gan"] == fresh["F/E eps 0.15 defense_gan"]



def test_estimates_leave_out_a_classifier_found_in_the_cache(tmp_path):
    from defense_gan_tf.records.runs import classifier_cache_path

    fresh = {c.label: c for c in reproduce.cells("whitebox_mnist")}
    spec = fresh["fgsm A adv_tr"].run.spec
    path = classifier_cache_path(str(tmp_path), dataset=spec.dataset, model=spec.model,
                                 mode="adv_tr", epochs=spec.epochs, num_train=spec.num_train,
                                 seed=spec.seed, eps=spec.attack.eps)
    open(path, "w").close()
    cached = {c.label: c.estimate_seconds for c in reproduce.cells(
        "whitebox_mnist", classifier_dir=str(tmp_path))}
    assert cached["fgsm A adv_tr"] < fresh["fgsm A adv_tr"].estimate_seconds - 10 * 60
    assert cached["fgsm A adv_tr"] == cached["rand_fgsm A adv_tr"]
    assert cached["fgsm A none"] == fresh["fgsm A none"].estimate_seconds  # not cached


def test_estimates_leave_out_cached_reconstructions_and_rec_classifiers():
    def estimates(status):
        asked = []
        lookup = None if status is None else lambda spec: (asked.append(spec), status)[1]
        out = {c.label: c.estimate_seconds
               for c in reproduce.cells("blackbox_mnist", rec_cached=lookup)}
        assert all(spec.train_on_recs for spec in asked)
        return out

    fresh, recs, both = (estimates(None), estimates((False, True, 0)),
                         estimates((True, True, 0)))
    half = estimates((False, False, 5000))
    rec_cells = [label for label in fresh if label.endswith(" rec")]
    first = rec_cells[0]
    # Cached reconstructions: the first Rec cell no longer pays hours of projections ...
    assert recs[first] < fresh[first] - 60 * 60
    # (half of them kept by an interrupted run: half of those hours)
    assert half[first] == pytest.approx((fresh[first] + recs[first]) / 2)
    assert all(half[label] == fresh[label] for label in rec_cells[1:])
    assert all(recs[label] == fresh[label] for label in rec_cells[1:])
    # ... and a cached Rec classifier is not trained either: the cell then costs what the
    # same Defense-GAN-Orig cell (its classifier trained by an earlier cell) does.
    for label in rec_cells:
        assert both[label] == both[label[:-len(" rec")]] <= recs[label]
    assert any(both[label] < recs[label] for label in rec_cells)


def test_shared_costs_go_to_the_first_cell_that_will_run():
    """A classifier's training and the reconstructions are charged to the first selected,
    not-done cell that needs them, not to an earlier cell that will not run."""
    s = reproduce.TableSettings(magnet=None)
    full = {c.label: c.estimate_seconds for c in reproduce.cells("blackbox_mnist", s)}
    rec_first, f_rec = "A/E eps 0.3 defense_gan rec", "F/E eps 0.3 defense_gan rec"
    only_f = reproduce.pending_cells(models=["F"], defenses=["defense_gan_rec"])
    chosen = {c.label: c.estimate_seconds
              for c in reproduce.cells("blackbox_mnist", s, pending=only_f)}
    # F/E Rec alone now pays the reconstructions that the full table gives A/E Rec ...
    recs = s.rec_train * reproduce.SECONDS_PER_PAPER_PROJECTION * \
        reproduce.SECONDS_PER_ORACLE_QUERY_FACTOR  # L=200, R=10
    assert recs > 60 * 60
    assert chosen[f_rec] == pytest.approx(full[f_rec] + recs)
    # ... and A/E Rec, not going to run, is estimated as the next cell to run would be.
    assert chosen[rec_first] == pytest.approx(full[rec_first])
    # An undefended cell that is done hands its classifier's training to the next cell
    # of that classifier: the time left is the whole table's.
    wb = reproduce.cells("whitebox_mnist", s)
    done = "fgsm A none"
    left = reproduce.cells("whitebox_mnist", s,
                           pending=lambda cs: [c.label != done for c in cs])
    assert sum(c.estimate_seconds for c in left if c.label != done) == pytest.approx(
        sum(c.estimate_seconds for c in wb))
    assert {c.label: c.estimate_seconds for c in left}["fgsm A defense_gan"] > \
        {c.label: c.estimate_seconds for c in wb}["fgsm A defense_gan"] + 60
    with pytest.raises(ValueError, match="defenses: unknown"):
        reproduce.pending_cells(defenses=["madry"])
    with pytest.raises(ValueError, match="2 flags for 60 cells"):
        reproduce.cells("whitebox_mnist", reproduce.TableSettings(), pending=lambda cs: [1, 1])


def test_time_left_stays_sane_after_cells_estimated_at_nothing(monkeypatch, tmp_path):
    """A first cell estimated at 0 s (a cached undefended classifier) must not turn the
    actual / estimated rate into an absurd time left."""
    import re
    import time as time_lib

    def slow_workflow(run, **kwargs):
        time_lib.sleep(0.05)

    monkeypatch.setattr(reproduce, "_workflow", lambda kind: slow_workflow)
    runs = [WhiteboxRun(spec=RunSpec(model=m, num_tests=10)) for m in ("A", "B", "C")]
    cell_list = [reproduce.Cell("whitebox", runs[0], "cheap", 0.0),
                 reproduce.Cell("whitebox", runs[1], "dear", 3600.0),
                 reproduce.Cell("whitebox", runs[2], "dearer", 7200.0)]
    lines = []
    reproduce.run_table("whitebox_mnist", reproduce.TableSettings(),
                        results_dir=str(tmp_path), classifier_dir=str(tmp_path),
                        cell_list=cell_list, log=lines.append)
    left = [float(m.group(1)) for line in lines
            for m in [re.search(r"about ([0-9.]+) h left$", line)] if m]
    assert left[0] == 3.0  # after "cheap": the estimates of the two left, unscaled
    assert all(h <= 3.0 for h in left)


def test_run_table_resumes_by_skipping_cells_already_done(tiny_world, tmp_path,
                                                          monkeypatch):
    root, gen_path, train, test = tiny_world
    spec = RunSpec(model="E", num_tests=10, num_train=200, epochs=1, batch_size=10,
                   attack=AttackConfig(eps=0.3),
                   projection=ProjectionConfig(iterations=2, restarts=2))
    cell = reproduce.Cell("whitebox", WhiteboxRun(spec=spec), "fgsm E none", 1.0)
    kwargs = dict(results_dir=str(tmp_path / "res"), classifier_dir=str(root / "clf"),
                  cell_list=[cell], train_data=train, test_data=test, log=lambda m: None)
    settings = reproduce.TableSettings()
    assert not reproduce.is_done(cell, str(tmp_path / "res"))
    # A spent time budget starts no cell and reports none.
    assert reproduce.run_table("whitebox_mnist", settings, time_budget_seconds=0,
                               **kwargs) == []
    assert not reproduce.is_done(cell, str(tmp_path / "res"))
    first = reproduce.run_table("whitebox_mnist", settings, **kwargs)
    assert [done for _, done, _ in first] == [False]
    assert reproduce.is_done(cell, str(tmp_path / "res"))
    again = reproduce.run_table("whitebox_mnist", settings, **kwargs)
    assert [done for _, done, _ in again] == [True]

    # Another table holding the same cell copies the record and its figures instead of
    # running it; a cell that differs (another eps) is not taken for it.
    other = str(tmp_path / "other_table")
    other_eps = reproduce.Cell("whitebox", WhiteboxRun(spec=dataclasses.replace(
        spec, attack=AttackConfig(eps=0.2))), "fgsm E none eps 0.2", 1.0)
    assert reproduce.recorded_elsewhere(other_eps, other) is None
    source = reproduce.recorded_elsewhere(cell, other)
    assert source and os.path.dirname(source) == str(tmp_path / "res")

    def no_run(kind):
        raise AssertionError("a recorded cell was run again")

    monkeypatch.setattr(reproduce, "_workflow", no_run)
    dry = reproduce.run_table("whitebox_mnist", settings, dry_run=True,
                              **dict(kwargs, results_dir=other))
    assert [done for _, done, _ in dry] == [False] and not os.path.exists(other)
    copied = reproduce.run_table("whitebox_mnist", settings, **dict(kwargs, results_dir=other))
    assert [done for _, done, _ in copied] == [True]
    assert reproduce.is_done(cell, other)
    assert sorted(os.listdir(other)) == sorted(os.listdir(tmp_path / "res"))
    tables = []
    for folder in (other, str(tmp_path / "res")):
        with open(os.path.join(folder, "whitebox_table.md")) as f:
            tables.append(f.read())
    assert tables[0] == tables[1] and "fgsm (eps 0.3) | E |" in tables[0]


def test_bin_reproduce_dry_run(tmp_path):
    cmd = [sys.executable, "-X", "importtime", os.path.join(ROOT, "bin", "reproduce.py"),
           "--table=blackbox_eps_mnist", "--dry_run", f"--results_root={tmp_path}",
           "--magnet=" + str(tmp_path)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "25 cells, 0 done" in out.stdout and "F/E eps 0.15 magnet" in out.stdout
    # Its black-box cells' substitute caches are looked up, which loads TensorFlow: the
    # probe that tests of refusals "before TensorFlow loads" rely on sees it.
    assert loads_tensorflow(out.stderr)
    bad = run_script(*cmd[3:], "--num_tests=0", env=env)
    assert bad.returncode != 0 and "--num_tests" in bad.stderr


def test_select_keeps_matching_cells_in_table_order():
    wb = reproduce.cells("whitebox_mnist", reproduce.TableSettings())
    cheap = reproduce.select(wb, models=["A"], defenses=["none", "adv_tr", "magnet"])
    assert [c.label for c in cheap] == [c.label for c in wb if c.label.split()[1] == "A" and
                                        c.label.split()[2] in ("none", "adv_tr", "magnet")]
    assert len(cheap) == 3 * 3  # FGSM, RAND+FGSM, CW x three columns
    rec = reproduce.select(wb, defenses=["defense_gan_rec"], attacks=["cw"])
    assert len(rec) == 4 and all(c.run.spec.train_on_recs for c in rec)
    orig = reproduce.select(wb, defenses=["defense_gan"])
    assert len(orig) == 12 and not any(c.run.spec.train_on_recs for c in orig)
    bb = reproduce.cells("blackbox_mnist", reproduce.TableSettings())
    assert {c.run.substitute_model for c in reproduce.select(bb, models=["A"])} == {"E", "B"}
    assert reproduce.select(wb) == wb
    with pytest.raises(ValueError, match="defenses: unknown"):
        reproduce.select(wb, defenses=["madry"])


def test_bin_reproduce_selection_and_its_errors(tmp_path):
    base = [sys.executable, "-X", "importtime", os.path.join(ROOT, "bin", "reproduce.py"),
            "--table=whitebox_mnist", "--dry_run", f"--results_root={tmp_path}",
            "--magnet=" + str(tmp_path)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    def run(*extra):
        return subprocess.run(base + list(extra), capture_output=True, text=True, env=env,
                              timeout=300, cwd=ROOT)

    out = run("--models=B", "--defenses=none,magnet", "--attacks=cw")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 cells, 0 done" in out.stdout and "cw B magnet" in out.stdout
    assert "fgsm" not in out.stdout
    # No selected cell needs a cache looked up: the plan comes without TensorFlow.
    assert not loads_tensorflow(out.stderr)
    bad = run("--defenses=none,madry")
    assert bad.returncode != 0 and "--defenses: unknown ['madry']" in bad.stderr
    budget = run("--time_budget_minutes=0")
    assert budget.returncode != 0 and "--time_budget_minutes must be > 0" in budget.stderr
    empty = run("--models=F")
    assert empty.returncode != 0 and "its models: ['A', 'B', 'C', 'D']" in empty.stderr


def _record(model, defense, accuracy, n=500, rec=False):
    return {"kind": "whitebox", "run_id": f"{model}{defense}", "finished": "2026",
            "command": "python bin/reproduce.py --table=whitebox_mnist",
            "settings": {"model": model, "defense_type": defense, "train_on_recs": rec,
                         "attack": {"attack_type": "fgsm", "eps": 0.3}},
            "result": {"clean": {"accuracy": 0.99, "ci95": [0.98, 1.0], "n": n},
                       "adversarial": {"accuracy": accuracy, "ci95": [0.1, 0.3], "n": n},
                       "seconds": 200.0}}


def test_paper_rows_sit_under_the_measured_rows():
    from defense_gan_tf.records import report

    ref = {("fgsm (eps 0.3)", "A"): {"no defense": "0.217"},
           ("fgsm (eps 0.3)", "C"): {"Defense-GAN-Rec": "0.95"}}
    text = report.paper_table([_record("A", "none", 0.2), _record("B", "none", 0.1)],
                              "attack", "model", reference=ref)
    rows = [line for line in text.splitlines() if line.startswith("| fgsm")]
    assert [r.split(" | ")[1] for r in rows] == ["A", "A (paper)", "B", "C (paper)"]
    assert rows[1].split(" | ")[3] == "0.217" and rows[0].split(" | ")[3].startswith("0.200")
    assert rows[3].split(" | ")[4] == "0.95"  # the Rec column of a row with no run yet
    assert "attack and evaluation took 3.3 min" in text
    with pytest.raises(ValueError, match="unknown columns"):
        report.paper_table([], "attack", "model", reference={("x", "A"): {"Rec": "1"}})


def test_summary_counts_done_cells_and_shows_paper_figures(tmp_path):
    from defense_gan_tf.records import report

    settings = reproduce.TableSettings(magnet=None)
    wb = reproduce.cells("whitebox_mnist", settings)
    done = reproduce.select(wb, models=["A"], defenses=["none"], attacks=["fgsm"])[0]
    record = _record("A", "none", 0.212)
    record["settings"] = report.json_ready(reproduce.flat_settings(done.run))
    folder = tmp_path / "whitebox_mnist"
    jsonio.write_json(str(folder / "whitebox_A_none.json"), record)
    (folder / "reading.md").write_text("The undefended cell matches the paper.")
    path = reproduce.write_summary(str(tmp_path / "R.md"), str(tmp_path),
                                   lambda table: settings)
    text = open(path).read()
    # A's training moves from the done cell to the next one of A: the whole table is left.
    left = sum(c.estimate_seconds for c in wb) / 3600
    assert f"1 of {len(wb)} cells done; the other {len(wb) - 1} are estimated at " \
           f"{left:.1f} h" in text
    assert reproduce._the_rest(1) == "the last one is"  # not "the other 1 are"
    assert "| fgsm (eps 0.3) | A | 0.990 [0.98, 1.00] n=500 | 0.212" in text
    # Only the two figures a public source confirms stand bare; the recalled ones and the
    # ranges say they are not verified (../shared/DESIGN.md section 5).
    assert "| fgsm (eps 0.3) | A (paper) | 0.997 | 0.217 | 0.988 (not verified) |" in text
    assert "Paper (recalled, not verified): across models A-D" in text
    assert "\nPaper: " not in text
    assert "Reading: The undefended cell matches the paper." in text
    for table in reproduce.TABLES:  # every table has its section, run or not
        assert reproduce.TITLES[table] in text and f"--table={table}" in text
    assert "0 of 20 cells done" in text  # the epsilon sweep without MagNet: nothing run
    # The overview at the top: one row per table, linking to its section's heading.
    overview = [line for line in text.splitlines() if line.startswith("| [")]
    assert len(overview) == len(reproduce.TABLES)
    assert overview[0] == ("| [White box, MNIST (paper Tables 3 and 4)]"
                           "(#white-box-mnist-paper-tables-3-and-4) | "
                           f"1 of {len(wb)} | {left:.1f} |")
    assert "(#black-box-mnist-fgsm-eps-03-paper-tables-1-and-2)" in overview[1]
    assert text.index(overview[-1]) < text.index("## ")


def test_bin_reproduce_summary_only(tmp_path):
    base = [os.path.join(ROOT, "bin", "reproduce.py"),
            f"--results_root={tmp_path}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = run_script(*base, "--summary_only", f"--summary={tmp_path / 'R.md'}", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "# Reproduction of the paper's tables" in (tmp_path / "R.md").read_text()
    missing = run_script(*base, env=env)
    assert missing.returncode != 0 and "--table is required" in missing.stderr


# A worker of test_shards_fill_a_table_like_one_worker...: the tiny cells of
# _shard_cells with --shard-like arguments; with $HANG it hangs in its second batch.
_WORKER = r"""
import os, sys, time
import numpy as np
sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
from test_reproduce import _shard_cells
from defense_gan_tf.sharding import Shard
from defense_gan_tf.workflows import reproduce, whitebox

data = np.load(sys.argv[2])
real, calls = whitebox._attack_batch, []

def attack_batch(*args):
    calls.append(1)
    if len(calls) == 2 and os.environ.get("HANG"):
        print("hanging", flush=True)
        time.sleep(600)
    return real(*args)

whitebox._attack_batch = attack_batch
reproduce.run_table("whitebox_mnist", reproduce.TableSettings(), results_dir=sys.argv[3],
                    classifier_dir=sys.argv[4], cell_list=_shard_cells(),
                    train_data=(data["tx"], data["ty"]), test_data=(data["vx"], data["vy"]),
                    shard=Shard.parse(sys.argv[5]), log=print)
"""


def _shard_cells():
    cells = []
    for attack, eps in (("fgsm", 0.1), ("fgsm", 0.2), ("fgsm", 0.3), ("rand_fgsm", 0.25)):
        spec = RunSpec(model="E", num_tests=10, num_train=200, epochs=1, batch_size=5,
                       attack=AttackConfig(attack_type=attack, eps=eps))
        cells.append(reproduce.Cell("whitebox", WhiteboxRun(spec=spec), f"{attack} {eps}", 1.0))
    return cells


def test_shards_fill_a_table_like_one_worker_and_take_over_a_killed_ones_batch(
        tiny_world, tmp_path, monkeypatch):
    """Two workers share the white-box cells by batches. Worker 0 (another process) hangs
    in the second batch of its first cell, holding its claim; worker 1 (this process)
    runs its own cells, joins that cell, reads worker 0's first batch back and waits for
    the held one; worker 0 is killed and worker 1 takes the batch over at once. The
    records and the table are those of one worker."""
    import threading

    import numpy as np

    from defense_gan_tf import batch_cache

    monkeypatch.setattr(batch_cache, "POLL_SECONDS", 0.2)  # worker 1's look for the batch
    root, _, train, test = tiny_world
    clf = str(root / "shard_clf")
    one = str(tmp_path / "alone" / "table")  # not beside the shards' folder: not copied
    ran = reproduce.run_table("whitebox_mnist", reproduce.TableSettings(), results_dir=one,
                              classifier_dir=clf, cell_list=_shard_cells(), train_data=train,
                              test_data=test, log=lambda m: None)
    assert [o.done_before for o in ran] == [False] * 4
    # its batches are kept for a rerun; the shards are to compute theirs (the classifier
    # stays cached for both)
    import shutil

    shutil.rmtree(os.path.join(clf, "whitebox_batches"))
    np.savez(tmp_path / "data.npz", tx=train[0], ty=train[1], vx=test[0], vy=test[1])
    two = str(tmp_path / "shards" / "table")
    stuck = subprocess.Popen(
        [sys.executable, "-c", _WORKER, ROOT, str(tmp_path / "data.npz"), two, clf, "0/2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", HANG="1"))

    def kill_once_worker_1_waits():  # its own two cells recorded: it is at the held batch
        while len([n for n in os.listdir(two) if n.endswith(".json")]) < 2:
            time.sleep(0.2)
        time.sleep(1.0)
        stuck.kill()  # and not reaped yet: a zombie counts as dead too

    lines = []
    try:
        assert "hanging" in _read_until(stuck, "hanging")
        killer = threading.Thread(target=kill_once_worker_1_waits, daemon=True)
        killer.start()
        helper = reproduce.run_table(
            "whitebox_mnist", reproduce.TableSettings(), results_dir=two, classifier_dir=clf,
            cell_list=_shard_cells(), train_data=train, test_data=test,
            shard=Shard.parse("1/2"), log=lines.append)
        killer.join(timeout=60)
    finally:
        stuck.kill()
        stuck.wait()
    assert [o.done_before for o in helper] == [False] * 4, lines
    assert any("batch(es) read back" in line for line in lines), lines  # worker 0's
    rerun = reproduce.run_table(
        "whitebox_mnist", reproduce.TableSettings(), results_dir=two, classifier_dir=clf,
        cell_list=_shard_cells(), train_data=train, test_data=test,
        shard=Shard.parse("0/2"), log=lines.append)
    assert [o.done_before for o in rerun] == [True] * 4
    assert not os.path.exists(reproduce.claims_folder(two))

    def records(folder):
        timing = ("seconds", "images_per_second")
        return {r["run_id"]: ({k: v for k, v in r["result"].items() if k not in timing},
                              r["settings"]) for r in reproduce.report.load_runs(folder)}

    assert records(one) == records(two) and len(records(one)) == 4
    tables = [open(os.path.join(f, "whitebox_table.md")).read().partition("Runs (latest")[0]
              for f in (one, two)]
    assert tables[0] == tables[1] and tables[0].count(" | E | ") == 4


def _read_until(proc, text: str) -> str:
    """Lines of ``proc``'s output up to the first holding ``text`` (or the end)."""
    seen = ""
    for line in proc.stdout:
        seen += line
        if text in line:
            break
    return seen
