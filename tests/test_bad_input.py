"""Bad input, as a hostile user would give it: each case either keeps every result or
fails early with a message that names the flag, argument or file at fault."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from binaries import loads_tensorflow, run_script

from defense_gan_tf import config as config_lib
from defense_gan_tf import models, training
from defense_gan_tf.config import AttackConfig, ProjectionConfig
from defense_gan_tf.defense import DefendedClassifier, project
from defense_gan_tf.errors import InputError
from defense_gan_tf.records import loading, report
from defense_gan_tf.records.runs import RunSpec
from defense_gan_tf.workflows.whitebox_run import WhiteboxRun, run_whitebox

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _bin(name, *args, timeout=300):
    return run_script(os.path.join("bin", name), *args, env=ENV, timeout=timeout)


def _fresh_bin(name, *args, env=ENV, timeout=300):
    """In a fresh interpreter: for what TensorFlow prints as it loads."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "bin", name), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def files(tiny_world, tmp_path_factory):
    """A generator, a classifier, a truncated copy and a generator with a manifest."""
    root = tmp_path_factory.mktemp("files")
    gen_path = tiny_world[1]
    clf = models.build_classifier("E", input_shape=(28, 28, 1))
    clf_path = str(root / "classifier.keras")
    clf.save(clf_path)
    truncated = str(root / "truncated.keras")
    with open(clf_path, "rb") as src, open(truncated, "wb") as dst:
        dst.write(src.read()[:300])
    package = root / "fmnist_package"
    package.mkdir()
    with open(gen_path, "rb") as src, open(package / "generator.keras", "wb") as dst:
        dst.write(src.read())
    with open(package / "manifest.json", "w") as f:
        json.dump({"dataset": "fashion_mnist", "iterations": 10}, f)
    return {"generator": gen_path, "classifier": clf_path, "truncated": truncated,
            "fmnist_generator": str(package / "generator.keras"), "root": root}


def _whitebox(tiny_world, results_dir, **kw):
    root, gen_path, train, test = tiny_world
    settings = dict(model="E", num_tests=10, num_train=200, epochs=1, batch_size=10,
                    attack=AttackConfig(attack_type="fgsm", eps=0.3),
                    projection=ProjectionConfig(iterations=2, restarts=2))
    settings.update(kw)
    messages = []
    out = run_whitebox(WhiteboxRun(spec=RunSpec(**settings)), results_dir=str(results_dir),
                       classifier_dir=str(root / "classifiers"), train_data=train,
                       test_data=test, command="pytest", log=messages.append)
    return out, messages


def test_runs_differing_in_any_setting_are_both_kept(tiny_world, tmp_path):
    results = tmp_path / "results"
    a, _ = _whitebox(tiny_world, results, epochs=1)
    b, _ = _whitebox(tiny_world, results, epochs=2)
    c, _ = _whitebox(tiny_world, results, epochs=2,
                     attack=AttackConfig(attack_type="fgsm", eps=0.3, alpha=0.1))
    assert len({a.json_path, b.json_path, c.json_path}) == 3
    assert all(os.path.exists(p) for p in (a.json_path, b.json_path, c.json_path))
    # The table lists all three and says that one cell has runs with other settings.
    assert len(report.load_runs(str(results))) == 3
    assert "other run(s) with other settings" in c.table
    # The same settings again replace their own record only.
    again, _ = _whitebox(tiny_world, results, epochs=1)
    assert again.json_path == a.json_path
    assert len(report.load_runs(str(results))) == 3


def test_results_dir_that_is_a_file_fails_before_any_work(tiny_world, tmp_path):
    path = tmp_path / "results"
    path.write_text("not a folder")
    with pytest.raises(InputError, match="results_dir .* is a file"):
        _whitebox(tiny_world, path)
    r = _bin("whitebox.py", f"--results_dir={path}", "--num_tests=1", timeout=120)
    assert r.returncode != 0 and "--results_dir" in r.stderr and "Traceback" not in r.stderr


def test_more_test_images_than_the_split_holds_is_refused(tiny_world, tmp_path):
    with pytest.raises(InputError, match="num_tests=500 asks for more images than the 60"):
        _whitebox(tiny_world, tmp_path / "r", num_tests=500)


def test_projection_needs_steps_and_restarts():
    with pytest.raises(ValueError, match=r"projection.iterations must be in \[1, "):
        ProjectionConfig(iterations=0)
    with pytest.raises(ValueError, match="projection.restarts"):
        ProjectionConfig(restarts=0)
    # A compiled loop of 10^11 steps would ignore SIGTERM for hours: bounded.
    with pytest.raises(ValueError, match="projection.iterations"):
        ProjectionConfig(iterations=99_999_999_999)
    with pytest.raises(ValueError, match="projection.restarts"):
        ProjectionConfig(restarts=10**6)
    for flag in ("--rec_iters=0", "--rec_rr=0", "--rec_iters=99999999999"):
        r = _bin("whitebox.py", flag, timeout=120)
        assert r.returncode != 0 and flag.split("=")[0] in r.stderr, r.stderr[-500:]


@pytest.mark.parametrize("name, args, flag", [
    ("whitebox.py", ["--fgsm_eps=1.5"], "--fgsm_eps"),
    ("blackbox.py", ["--holdout=0"], "--holdout"),
    ("blackbox.py", ["--num_tests=9990", "--holdout=20"], "--num_tests"),  # > the split
    ("whitebox.py", ["--num_train=60000"], "--num_train"),
    ("adaptive.py", ["--generator=GEN", "--attacks=bogus"], "--attacks"),
    ("reproduce.py", ["--table=whitebox_mnist", "--num_tests=0"], "--num_tests"),
    ("reproduce.py", ["--table=whitebox_mnist", "--defenses=none,madry"], "--defenses"),
    ("reproduce.py", ["--table=whitebox_mnist", "--models=F"], "--models"),
    ("train.py", ["--output_dir=never_made", "--warm_start_fresh_critic"],
     "--warm_start_fresh_critic needs --warm_start"),
    ("train.py", ["--output_dir=never_made", "--critic_warmup=-1"], "--critic_warmup"),
])
def test_bad_flags_fail_before_tensorflow_loads(files, name, args, flag):
    """A flag error costs well under a second: the settings dataclasses (records.specs,
    runs, config) import without TensorFlow, and the binaries check them first."""
    args = [a.replace("GEN", files["generator"]) for a in args]
    r = subprocess.run([sys.executable, "-X", "importtime", os.path.join(ROOT, "bin", name),
                        *args], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode != 0 and flag in r.stderr, r.stderr[-500:]
    assert not loads_tensorflow(r.stderr), f"{name} imported TensorFlow before checking {flag}"


def test_model_files_of_the_wrong_kind_or_corrupt_are_named(files):
    with pytest.raises(InputError, match="--generator .*looks like a classifier"):
        loading.load_generator(files["classifier"])
    with pytest.raises(InputError, match="--classifier .*looks like a generator"):
        loading.load_classifier(files["generator"])
    with pytest.raises(InputError, match="not a valid .keras archive"):
        loading.load_generator(files["truncated"])
    with pytest.raises(InputError, match="does not exist"):
        loading.load_classifier(str(files["root"] / "missing.keras"))
    g = loading.load_generator(files["generator"])[0]
    clf = loading.load_classifier(files["classifier"])
    with pytest.raises(InputError, match="second argument"):
        DefendedClassifier(g, clf)  # swapped
    with pytest.raises(InputError, match="images of shape"):
        loading.load_classifier(files["classifier"], image_shape=(64, 64, 3))


def test_generator_of_another_dataset_is_refused(files):
    with pytest.raises(InputError, match="trained on fashion_mnist"):
        loading.load_generator(files["fmnist_generator"], dataset="mnist")
    generator, iterations = loading.load_generator(files["fmnist_generator"],
                                                   dataset="f-mnist")
    assert iterations == 10


# TensorFlow's start-up lines on a machine without a GPU (CUDA stubs, CPU features).
_NOISE = ("cuInit", "cudart_stub", "absl::InitializeLog", "cpu_feature_guard",
          "oneDNN custom operations")


def _noise(stderr):
    return [line for line in stderr.splitlines() if any(n in line for n in _NOISE)]


def test_binaries_name_the_flag_of_a_wrong_model_without_a_traceback(files, tmp_path):
    """One line naming the flag, then ``Try --help.``; no traceback and none of
    TensorFlow's start-up lines (DEFENSE_GAN_TF_LOGS=1 shows those)."""
    whitebox = ["whitebox.py", f"--generator={files['classifier']}",
                "--defense_type=defense_gan", f"--results_dir={tmp_path / 'r'}",
                "--num_tests=1", "--rec_iters=100", "--rec_rr=2", "--memory_budget_gb=2.2"]
    r = _fresh_bin(*whitebox)
    assert r.returncode != 0 and "--generator" in r.stderr, r.stderr[-800:]
    # The full gradient's batch was cut to the budget first: FGSM's fused gradient holds
    # one segment (10 of L=100 steps) x 2 restarts x 0.54 MB per image; 0.1 GB over the
    # 2.1 GB base leaves room for 9 images.
    assert "batch of 9 images (not 20)" in r.stdout, r.stdout
    assert "Traceback" not in r.stderr and not _noise(r.stderr), r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert "looks like a classifier" in lines[-2] and lines[-1] == "Try --help.", lines
    r = _bin("export.py", f"--generator={files['classifier']}",
             f"--classifier={files['generator']}", f"--output_dir={tmp_path / 'e'}")
    assert r.returncode != 0 and "--generator" in r.stderr and "Traceback" not in r.stderr
    assert not _noise(r.stderr), r.stderr[-2000:]
    # With DEFENSE_GAN_TF_LOGS=1 the lines filtered above are there (else this test could
    # not fail), and the one-line error still comes.
    verbose = _fresh_bin("export.py", f"--generator={files['generator']}",
                         f"--classifier={files['truncated']}",
                         f"--output_dir={tmp_path / 'e2'}",
                         env=dict(ENV, DEFENSE_GAN_TF_LOGS="1"))
    assert verbose.returncode != 0 and "--classifier" in verbose.stderr
    assert "valid .keras" in verbose.stderr
    if not _noise(verbose.stderr):
        pytest.skip("TensorFlow prints no start-up lines on this machine")


def test_export_refuses_a_nan_threshold_and_a_file_as_output(files, tmp_path):
    base = [f"--generator={files['generator']}", f"--classifier={files['classifier']}"]
    r = _bin("export.py", *base, f"--output_dir={tmp_path / 'e'}",
             "--detection_threshold=nan", timeout=120)
    assert r.returncode != 0 and "--detection_threshold" in r.stderr
    as_file = tmp_path / "file"
    as_file.write_text("x")
    r = _bin("export.py", *base, f"--output_dir={as_file}", timeout=120)
    assert r.returncode != 0 and "is a file" in r.stderr
    from defense_gan_tf.export import DefenseGanModule

    g, _ = loading.load_generator(files["generator"])
    with pytest.raises(InputError, match="detection_threshold"):
        DefenseGanModule(loading.load_classifier(files["classifier"]), g,
                         detection_threshold=float("nan"))


def test_empty_batches_give_empty_results(tiny_config):
    g = models.build_generator(tiny_config, seed=0)  # convolutional: the kernels that failed
    clf = models.build_classifier("E", input_shape=(28, 28, 1))
    empty = np.zeros((0, 28, 28, 1), np.float32)
    cfg = ProjectionConfig(iterations=2, restarts=3)
    p = project(g, empty, cfg)
    assert p.reconstruction.shape == (0, 28, 28, 1) and p.error.shape == (0,)
    assert DefendedClassifier(clf, g, cfg)(empty).shape == (0, 10)
    # The shipped models: classifier A's convolutions failed on zero rows under oneDNN.
    shipped = DefendedClassifier(
        loading.load_classifier(os.path.join(ROOT, "pretrained/mnist/classifier_A.keras")),
        loading.load_generator(os.path.join(ROOT, "pretrained/mnist/generator.keras"))[0], cfg)
    assert shipped(empty).shape == (0, 10)
    # A non-empty batch is unchanged by the padding that serves empty ones.
    x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype(np.float32)
    one = project(g, x, cfg, seed=5)
    assert one.reconstruction.shape == (2, 28, 28, 1)


def test_foreign_json_in_a_results_folder_is_skipped(tiny_world, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "whitebox_notes.json").write_text(json.dumps({"hello": 1}))
    (results / "whitebox_broken.json").write_text("{not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, _ = _whitebox(tiny_world, results)
    assert out.table.count("\n- ") == 1  # one run listed
    assert sum("skipping" in str(w.message) for w in caught) == 2


def test_train_output_dir_that_is_a_file_is_refused(tmp_path, tiny_config):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        training.train_gan(tiny_config, str(path), images=np.zeros((8, 28, 28, 1)),
                           log=lambda m: None)
    r = _bin("train.py", f"--output_dir={path}", timeout=120)
    assert r.returncode != 0 and "--output_dir" in r.stderr and "Traceback" not in r.stderr


def test_a_failed_start_does_not_block_a_rerun_with_other_settings(tmp_path, tiny_config):
    out = str(tmp_path / "run")
    r = _bin("train.py", "--dataset=celeba", f"--output_dir={out}", "--train_iters=1",
             timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-800:]
    assert not os.path.exists(os.path.join(out, "config.json"))
    # A config.json left by a start that trained nothing is replaced, not enforced.
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write(config_lib.preset("celeba").to_json())
    images = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype(np.float32)
    result = training.train_gan(config_lib.override(tiny_config, {"gan.train_iters": 1}),
                                out, images=images, log=lambda m: None)
    assert result.iteration == 1


def test_committed_records_carry_no_absolute_paths():
    import glob
    import re

    absolute = re.compile(r"(?:=|\s|`|^)/(?:home|root|work|tmp|Users|mnt|var)/")
    files = [p for pattern in ("results/**/*.json", "results/**/*.md",
                               "pretrained/*/manifest.json", "bench/results/*.json")
             for p in glob.glob(os.path.join(ROOT, pattern), recursive=True)]
    assert files
    offenders = []
    for path in files:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if absolute.search(line):
                    offenders.append(f"{os.path.relpath(path, ROOT)}:{number}")
    assert not offenders, offenders


@pytest.mark.parametrize("args,needle", [
    (["--defense_type=none", "--gradient=bpda"], "--gradient"),
    (["--defense_type=none", "--same_init"], "--same_init"),
    (["--defense_type=adv_tr", "--classifier=pretrained/mnist/classifier_A.keras"],
     "adversarially"),
])
def test_flags_that_would_mislabel_a_run_are_refused(args, needle):
    r = _bin("whitebox.py", *args, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and lines[-1] == "Try --help." and needle in lines[-2], lines


def test_a_missing_data_folder_and_a_broken_progress_file_are_one_line(tmp_path, tiny_config):
    r = _bin("whitebox.py", "--classifier=pretrained/mnist/classifier_A.keras",
             f"--data_dir={tmp_path}", "--num_tests=5", f"--results_dir={tmp_path / 'r'}")
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-800:]
    assert "no mnist/ subfolder" in lines[-2] and lines[-1] == "Try --help."
    out = str(tmp_path / "run")
    cfg = config_lib.override(tiny_config, {"gan.train_iters": 1})
    images = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype(np.float32)
    training.train_gan(cfg, out, images=images, log=lambda m: None)
    with open(os.path.join(out, "progress.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(InputError, match="progress.json cannot be read"):
        training.train_gan(config_lib.override(cfg, {"gan.train_iters": 2}), out,
                           images=images, log=lambda m: None)


def test_a_classifier_of_another_dataset_or_not_a_classifier_is_refused(tmp_path):
    fashion = "pretrained/fashion_mnist/classifier_A.keras"
    with pytest.raises(InputError, match="trained on fashion_mnist .*this run uses mnist"):
        loading.load_classifier(os.path.join(ROOT, fashion), dataset="mnist")
    loading.load_classifier(os.path.join(ROOT, fashion), dataset="f-mnist")  # its own: fine
    # The projection's encoder maps images to 128 numbers: not a classifier of 10 digits.
    with pytest.raises(InputError, match="128 outputs, but mnist has 10 classes"):
        loading.load_classifier(os.path.join(ROOT, "pretrained/mnist/encoder.keras"),
                                dataset="mnist")
    # A classifier outside a package says its dataset in <file>.json.
    copy = tmp_path / "clf.keras"
    copy.write_bytes(open(os.path.join(ROOT, fashion), "rb").read())
    (tmp_path / "clf.keras.json").write_text(json.dumps({"dataset": "fashion_mnist"}))
    with pytest.raises(InputError, match=r"says clf.keras.json"):
        loading.load_classifier(str(copy), dataset="mnist")

