"""generators/choice.py and bin/choose_generator.py: the better of a package's trained and
averaged generators is shipped as generator.keras, by the issue's rule, and training,
measurements and the package README follow the files."""

import copy
import hashlib
import json
import os

import pytest
from conftest import shipped_measurement

from defense_gan_tf.errors import InputError
from defense_gan_tf.generators import choice

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("raw, average, expected", [
    ((0.99, 0.60), (0.99, 0.70), "average"),  # both keep clean: the higher transferred
    ((0.99, 0.70), (0.99, 0.60), "raw"),
    ((0.99, 0.60), (0.97, 0.90), "raw"),      # the average loses too many clean images
    ((0.97, 0.60), (0.96, 0.90), "raw"),      # neither keeps clean: the higher clean
    ((0.96, 0.90), (0.97, 0.10), "average"),
    ((0.99, 0.65), (0.99, 0.65), "raw"),      # a tie keeps the trained generator
])
def test_the_rule(raw, average, expected):
    figures = {k: {"clean": c, "transferred_fgsm": t}
               for k, (c, t) in (("raw", raw), ("average", average))}
    assert choice.decide(figures, 0.98) == expected


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _entry(template, sha, file, clean, moved, images=500, iterations=200):
    entry = copy.deepcopy(template)
    entry["defense_gan_orig"]["clean"]["accuracy"] = clean
    entry["defense_gan_orig"]["transferred_fgsm"]["accuracy"] = moved
    entry["settings"]["num_images"] = images
    entry["settings"]["projection"]["iterations"] = iterations
    entry.update(sha256=sha, file=file, command=f"measure {file} {images}")
    return entry


@pytest.fixture
def package(tmp_path):
    """A package whose two generators are stand-in files, measured on 500 images (and
    the average also on 100 images and at L=50, which must not count)."""
    with open(os.path.join(ROOT, "pretrained/mnist/manifest.json")) as f:
        shipped = json.load(f)
    folder = tmp_path / "mnist"
    folder.mkdir()
    raw, average = b"trained weights", b"averaged weights"
    (folder / "generator.keras").write_bytes(raw)
    (folder / "generator_ema.keras").write_bytes(average)
    (folder / "critic.keras").write_bytes(b"critic")
    (folder / "samples.png").write_bytes(b"raw samples")
    (folder / "samples_ema.png").write_bytes(b"averaged samples")
    template = shipped_measurement(shipped)  # any measurement's fields will do
    manifest = {
        "dataset": "mnist", "config": shipped["config"], "iterations": 1000,
        "file": "generator.keras", "sha256": _sha(raw), "average_file": "generator_ema.keras",
        "average_sha256": _sha(average), "critic_file": "critic.keras",
        "samples": "samples.png", "average_samples": "samples_ema.png",
        "quality": {"classifier_score": 9.0, "frechet_distance": 3.0},
        "average_quality": {"classifier_score": 9.1, "frechet_distance": 2.5},
        "defense_measurements": [
            _entry(template, _sha(raw), "generator.keras", 0.99, 0.60),
            _entry(template, _sha(average), "generator_ema.keras", 0.99, 0.70),
            _entry(template, _sha(average), "generator_ema.keras", 1.0, 1.0, images=100),
            _entry(template, _sha(average), "generator_ema.keras", 1.0, 1.0, iterations=50)],
    }
    manifest["defense"] = manifest["defense_measurements"][0]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder, raw, average


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_the_average_is_shipped_and_training_continues_from_the_trained_one(package):
    from defense_gan_tf import training

    folder, raw, average = package
    made = choice.choose_shipped_generator(str(folder), command="choose")
    assert made["shipped"] == "average" and made["min_clean"] == 0.98
    assert made["average"]["transferred_fgsm"] == 0.70  # the 500-image figure
    assert (folder / "generator.keras").read_bytes() == average
    assert (folder / "generator_raw.keras").read_bytes() == raw
    assert not (folder / "generator_ema.keras").exists()
    m = _manifest(folder)
    assert m["shipped_generator"] == "average" and m["sha256"] == _sha(average)
    assert (m["raw_file"], m["raw_sha256"]) == ("generator_raw.keras", _sha(raw))
    assert m["average_file"] == "generator.keras"
    # Every measurement follows its weights; the headline figures are the shipped one's.
    for entry in m["defense_measurements"]:
        expected = "generator.keras" if entry["sha256"] == _sha(average) else \
            "generator_raw.keras"
        assert entry["file"] == expected
    assert m["defense"]["sha256"] == _sha(average)
    assert m["defense"]["settings"]["num_images"] == 500
    # So do the quality figures and the sample grids.
    assert m["quality"]["frechet_distance"] == 2.5 == m["average_quality"]["frechet_distance"]
    assert m["raw_quality"]["frechet_distance"] == 3.0
    assert (folder / m["samples"]).read_bytes() == b"averaged samples"
    assert (folder / m["raw_samples"]).read_bytes() == b"raw samples"
    assert m["average_samples"] == m["samples"] == "samples.png"
    assert not (folder / "samples_ema.png").exists()
    # A warm start continues the trained generator, with the average beside it.
    warm = training.load_warm_start(str(folder))
    assert warm.generator_path.endswith("generator_raw.keras")
    assert warm.average_path.endswith(os.sep + "generator.keras")
    text = (folder / "README.md").read_text()
    assert "generator: the averaged one | `generator.keras`" in text
    assert "| averaged (shipped) | 500 | 0.990 | 0.700 |" in text
    assert "classifier score **9.10**" in text  # the shipped (averaged) generator's
    assert ("The trained generator (not averaged), `generator_raw.keras`, from the same z: "
            "classifier score 9.00, Frechet distance 3.00.") in text
    assert "![samples](samples.png)" in text and "(samples_raw.png)" in text
    # Choosing again changes nothing.
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    choice.choose_shipped_generator(str(folder), command="choose")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_new_figures_can_turn_the_choice_back(package):
    folder, raw, average = package
    choice.choose_shipped_generator(str(folder))
    m = _manifest(folder)
    for entry in m["defense_measurements"]:  # the trained one measured better after all
        if entry["sha256"] == _sha(raw):
            entry["defense_gan_orig"]["transferred_fgsm"]["accuracy"] = 0.80
    (folder / "manifest.json").write_text(json.dumps(m))
    assert choice.choose_shipped_generator(str(folder))["shipped"] == "raw"
    assert (folder / "generator.keras").read_bytes() == raw
    assert (folder / "generator_ema.keras").read_bytes() == average
    assert not (folder / "generator_raw.keras").exists()
    m = _manifest(folder)
    assert m["shipped_generator"] == "raw" and m["defense"]["sha256"] == _sha(raw)
    assert m["quality"]["frechet_distance"] == 3.0
    assert (folder / "samples.png").read_bytes() == b"raw samples"
    assert (folder / "samples_ema.png").read_bytes() == b"averaged samples"
    assert not (folder / "samples_raw.png").exists()


def test_unmeasured_or_changed_generators_are_refused(package):
    folder, raw, average = package
    with pytest.raises(InputError, match=r"generator.keras \(raw generator\) has no "
                       "measurement of at least 2000 images"):
        choice.choose_shipped_generator(str(folder), num_images=2000)
    (folder / "generator_ema.keras").write_bytes(b"retrained")
    with pytest.raises(InputError, match="generator_ema.keras does not match the sha256"):
        choice.choose_shipped_generator(str(folder))
    assert (folder / "generator.keras").read_bytes() == raw  # nothing moved


def test_the_binary(package):
    from binaries import run_script

    folder, raw, average = package
    script = os.path.join(ROOT, "bin", "choose_generator.py")
    r = run_script(script, f"--package_dir={folder}", "--min_clean=1.5")
    assert r.returncode != 0 and "--min_clean must be in [0, 1]" in r.stderr
    r = run_script(script, f"--package_dir={folder}", "--num_images=2000")
    assert r.returncode != 0 and "--generator_file=generator.keras" in r.stderr
    r = run_script(script, f"--package_dir={folder}")
    assert r.returncode == 0, r.stderr[-800:]
    assert "generator.keras is now the averaged generator" in r.stdout
    assert _manifest(folder)["shipped_choice"]["command"].startswith(
        "python bin/choose_generator.py")
