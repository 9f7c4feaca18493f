"""Shipped packages and tracked results change only through their documented commands."""

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess

import pytest
from binaries import run_script
from conftest import make_tiny_package

from defense_gan_tf import config as config_lib
from defense_gan_tf import shipped
from defense_gan_tf.errors import InputError
from defense_gan_tf.generators.package import add_defense_figures
from defense_gan_tf.generators.training_curve import CurveSettings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _bin(name, *args, cwd=ROOT, timeout=300):
    return run_script(os.path.join("bin", name), *args, env=ENV, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory):
    """A copy of pretrained/mnist (its manifest, generator and classifier)."""
    dest = tmp_path_factory.mktemp("pretrained") / "mnist"
    dest.mkdir()
    for name in ("manifest.json", "generator.keras", "classifier_A.keras"):
        shutil.copy(os.path.join(ROOT, "pretrained", "mnist", name), dest)
    return dest


def test_package_folders_are_found_from_any_path_inside(package_copy):
    assert shipped.package_containing(str(package_copy)) == str(package_copy)
    assert shipped.package_containing(str(package_copy / "magnet" / "new")) == str(
        package_copy)
    assert shipped.package_containing(str(package_copy.parent / "runs")) is None


@pytest.mark.parametrize("name,args,flag", [
    ("train.py", ["--dataset=mnist", "--net_dim=8", "--train_iters=5",
                  "--output_dir=PKG"], "output_dir"),
    ("train_magnet.py", ["--output_dir=PKG/magnet_new"], "output_dir"),
    ("train_encoder.py", ["--generator=PKG/generator.keras"], "output"),
    ("export.py", ["--generator=PKG/generator.keras", "--classifier=PKG/classifier_A.keras",
                   "--output_dir=PKG/saved"], "output_dir"),
    ("whitebox.py", ["--classifier=PKG/classifier_A.keras", "--results_dir=PKG/r"],
     "results_dir"),
    ("blackbox.py", ["--classifier_dir=PKG"], "classifier_dir"),
    ("reproduce.py", ["--table=whitebox_mnist", "--results_root=PKG/r"], "results_root"),
    ("measure_generator.py", ["--package_dir=PKG", "--classifier=PKG/classifier_A.keras",
                              "--cache_dir=PKG/cache"], "cache_dir"),
])
def test_binaries_refuse_to_write_into_a_package(package_copy, name, args, flag):
    before = sorted(os.listdir(package_copy))
    r = _bin(name, *[a.replace("PKG", str(package_copy)) for a in args], timeout=120)
    assert r.returncode != 0
    assert f"--{flag}" in r.stderr and "shipped package" in r.stderr, r.stderr[-800:]
    assert sorted(os.listdir(package_copy)) == before


class _Probe:
    """Stands for DefenseQualityProbe: settings, and figures that carry them."""

    def __init__(self, num_images, iterations=200, accuracy=1.0):
        self.settings = CurveSettings(num_images=num_images, paper_fgsm_images=0,
                                      projection=config_lib.ProjectionConfig(
                                          iterations=iterations))
        self.accuracy, self.calls = accuracy, 0

    def __call__(self, generator, **options):
        self.calls += 1
        return {"clean": {"accuracy": self.accuracy, "n": self.settings.num_images},
                "settings": {"num_images": self.settings.num_images, "paper_fgsm_images": 0,
                             "eps": 0.3, "random_sign": True,
                             "projection": dataclasses.asdict(self.settings.projection)}}


def test_weaker_measurements_never_replace_the_headline(tmp_path, tiny_config,
                                                       images_and_classifier):
    dest = make_tiny_package(tmp_path, tiny_config, images_and_classifier)
    add_defense_figures(dest, _Probe(500, accuracy=0.9), command="big")
    messages = []
    add_defense_figures(dest, _Probe(10, accuracy=0.7), command="small", log=messages.append)
    add_defense_figures(dest, _Probe(500, iterations=5, accuracy=0.6), command="weak")
    with open(os.path.join(dest, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["defense"]["command"] == "big"
    assert manifest["defense"]["clean"]["accuracy"] == 0.9
    assert [m["command"] for m in manifest["defense_measurements"]] == ["big", "small", "weak"]
    assert any("headline" in m for m in messages)
    # The same measurement again is refused before any work unless asked for.
    again = _Probe(10)
    with pytest.raises(InputError, match="overwrite"):
        add_defense_figures(dest, again)
    assert again.calls == 0
    add_defense_figures(dest, again, command="small again", overwrite=True)
    with open(os.path.join(dest, "manifest.json")) as f:
        manifest = json.load(f)
    assert [m["command"] for m in manifest["defense_measurements"]] == [
        "big", "weak", "small again"]
    assert manifest["defense"]["command"] == "small again"  # overwrite: it is replaced
    # A stronger measurement replaces the headline on its own.
    add_defense_figures(dest, _Probe(2000, accuracy=0.95), command="bigger")
    with open(os.path.join(dest, "manifest.json")) as f:
        assert json.load(f)["defense"]["command"] == "bigger"


def test_the_averaged_generator_is_packaged_and_measured_apart(tmp_path, tiny_config,
                                                               images_and_classifier):
    dest = make_tiny_package(tmp_path, tiny_config, images_and_classifier)
    with open(os.path.join(dest, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["average_file"] == "generator_ema.keras"
    assert os.path.isfile(os.path.join(dest, "generator_ema.keras"))
    add_defense_figures(dest, _Probe(500), command="raw")
    add_defense_figures(dest, _Probe(500, accuracy=0.5), command="averaged",
                        file="generator_ema.keras")
    with open(os.path.join(dest, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["defense"]["command"] == "raw"  # the shipped file's figures only
    assert {m["file"]: m["command"] for m in manifest["defense_measurements"]} == {
        "generator.keras": "raw", "generator_ema.keras": "averaged"}


def readme_quick_blocks(path=os.path.join(ROOT, "README.md")):
    """The README's code blocks marked ``<!-- quick -->``: [(language, code)], each shell
    command's continuation lines joined."""
    text = open(path).read()
    blocks = re.findall(r"<!-- quick -->\n```(\w+)\n(.*?)```", text, flags=re.S)
    return [(lang, code.replace("\\\n", " ")) for lang, code in blocks]


def test_the_quick_readme_commands_run_as_written_and_leave_git_clean(tmp_path, mnist_dir):
    """Each README block marked quick runs as written in a fresh clone with the offline
    data in ../shared/data beside it (the interpreter is this one with TensorFlow loaded
    already, tests/binaries.py; the code this work tree's), writing only under the
    ignored runs/: the white-box, black-box and adaptive binaries with their default
    outputs among them."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--shared", ROOT, str(clone)], check=True)
    (tmp_path / "shared").mkdir()
    os.symlink(mnist_dir, tmp_path / "shared" / "data")
    blocks = readme_quick_blocks()
    commands = [line.strip() for lang, code in blocks if lang == "bash"
                for line in code.splitlines() if line.strip()]
    assert {c.split()[1] for c in commands} >= {"bin/whitebox.py", "bin/blackbox.py",
                                                "bin/adaptive.py"}, commands
    env = {k: v for k, v in ENV.items() if k != "DEFENSE_GAN_DATA_DIR"}
    for command in commands:
        words = shlex.split(command)
        assert words[0] == ".venv/bin/python", command
        r = run_script(words[1], *words[2:], cwd=clone, env=env, timeout=600)
        assert r.returncode == 0, (command, r.stderr[-1500:])
    for name in ("whitebox", "blackbox", "adaptive"):
        assert os.listdir(clone / "runs" / name), name
    for k, (lang, code) in enumerate(blocks):
        if lang == "python":  # from a file outside the clone: the installed package runs
            script = tmp_path / f"readme_{k}.py"
            script.write_text(code)
            r = run_script(str(script), cwd=clone, env=env, timeout=600)
            assert r.returncode == 0, (code, r.stderr[-1500:])
    assert any(lang == "python" for lang, _ in blocks)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=str(clone),
                            capture_output=True, text=True, check=True).stdout
    assert status == "", status


def test_reproduce_with_other_settings_writes_under_runs(tmp_path):
    r = _bin("reproduce.py", "--table=detection_mnist", "--num_tests=20", "--dry_run",
             cwd=str(tmp_path), timeout=300)
    assert "records go to runs/reproduction/" in r.stdout, (r.stdout + r.stderr)[-1500:]
    assert not (tmp_path / "results").exists()
