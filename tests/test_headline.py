"""The README's headline table, and each shipped package's README, are what the committed
manifests and records say."""

import json
import os
import shutil

import pytest
from conftest import shipped_measurement

from defense_gan_tf.records import headline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_committed_headline_table_is_what_the_files_say():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    committed = text[text.index(headline.BEGIN) + len(headline.BEGIN):
                     text.index(headline.END)].strip()
    assert committed == headline.headline_table(ROOT), (
        "README.md's headline table is stale: run python bin/reproduce.py --headline")


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_the_committed_package_readme_is_what_its_files_say(dataset):
    from defense_gan_tf.generators.package_readme import README, package_readme

    package = os.path.join(ROOT, "pretrained", dataset)
    with open(os.path.join(package, README)) as f:
        committed = f.read()
    assert committed == package_readme(package), (
        f"pretrained/{dataset}/README.md is stale: run python bin/reproduce.py --headline")


def _measured(manifest: dict) -> dict:
    """``manifest`` with headline figures (conftest.shipped_measurement)."""
    manifest["defense"] = shipped_measurement(manifest)
    return manifest


def test_a_package_readme_follows_its_manifest(tmp_path):
    from defense_gan_tf.generators.package_readme import package_readme, write_package_readme

    package = tmp_path / "mnist"
    package.mkdir()
    for name in ("manifest.json", "quality.jsonl"):
        shutil.copy(os.path.join(ROOT, "pretrained/mnist", name), package)
    manifest = _measured(json.loads((package / "manifest.json").read_text()))
    manifest["iterations"] = 123_456
    manifest["defense"]["defense_gan_orig"]["paper_fgsm"]["accuracy"] = 0.123
    (package / "manifest.json").write_text(json.dumps(manifest))
    assert write_package_readme(str(package))
    text = (package / "README.md").read_text()
    assert "| iterations | 123,456 of the paper's 200,000 |" in text
    assert "| 0.12 [" in text  # the paper-style FGSM row's new accuracy
    assert "2,500 | 6.77" in text  # the curve, from quality.jsonl
    assert not write_package_readme(str(package))  # unchanged the second time
    # A new package not measured yet shows its training run's last evaluation.
    manifest["defense"] = None
    last = {k: v for k, v in manifest["quality_curve_last"].items() if k != "average"}
    manifest.update(quality_curve_last=last, average_file="generator_ema.keras")
    (package / "manifest.json").write_text(json.dumps(manifest))
    text = package_readme(str(package))
    assert f"evaluation at {last['iteration']:,} iterations, on the first 100" in text
    clean = last["defense_gan_orig"]["clean"]
    assert "at the same evaluation" not in text  # no averaged generator in it
    # An evaluation of the averaged generator too shows its figures after the others.
    average = json.loads(json.dumps(last))
    average.pop("undefended")
    average["defense_gan_orig"]["transferred_fgsm"]["accuracy"] = 0.777
    manifest["quality_curve_last"] = dict(last, average=average)
    (package / "manifest.json").write_text(json.dumps(manifest))
    with_average = package_readme(str(package))
    section = text[:text.index("## Quality during training")].rstrip()
    assert with_average.startswith(section)
    added = with_average[len(section):with_average.index("## Quality during training")]
    assert "The averaged generator (`generator_ema.keras`) at the same evaluation:" in added
    assert "| 0.78 [" in added and "| clean | " in added
    undefended = last["undefended"]["clean"]["accuracy"]
    assert f"| clean | {undefended:.2f} | {clean['accuracy']:.2f} [" in text
    (package / "quality.jsonl").unlink()
    assert "## Quality during training" not in package_readme(str(package))


def test_the_table_follows_its_sources(tmp_path):
    """A changed manifest figure, and an adaptive cell that breaks more images, show up;
    the worst case is over images (robust only if every attack failed on it)."""
    for folder in ("pretrained/mnist", "pretrained/fashion_mnist"):
        os.makedirs(tmp_path / folder)
        shutil.copy(os.path.join(ROOT, folder, "manifest.json"), tmp_path / folder)
    shutil.copy(os.path.join(ROOT, "README.md"), tmp_path / "README.md")
    path = tmp_path / "pretrained/mnist/manifest.json"
    manifest = _measured(json.loads(path.read_text()))
    manifest["defense"]["defense_gan_orig"]["transferred_fgsm"]["accuracy"] = 0.75
    path.write_text(json.dumps(manifest))
    os.makedirs(tmp_path / "results/adaptive")
    shipped = manifest["iterations"]

    def adaptive(name, correct, iterations):
        (tmp_path / f"results/adaptive/{name}.json").write_text(json.dumps({
            "kind": "adaptive", "result": {"norm": "linf", "budget": 0.3, "correct": correct},
            "settings": {"defense_type": "defense_gan", "generator_iterations": iterations}}))

    adaptive("a", [True, True, False, True], shipped)
    table = headline.headline_table(str(tmp_path))
    assert f"worst case at L-inf 0.3 ({shipped:,}-iteration generator) | - | 0.750 |" in table
    adaptive("b", [True, False, True, True], 1_000)  # made with an older generator
    table = headline.headline_table(str(tmp_path))
    assert "| 0.750 |" in table
    # A package not measured on its own yet shows its training run's last evaluation.
    path = tmp_path / "pretrained/fashion_mnist/manifest.json"
    manifest = json.loads(path.read_text())
    last = manifest["quality_curve_last"]
    manifest["defense"] = None
    manifest["shipped_generator"] = "average"  # generators/choice.py chose the average
    path.write_text(json.dumps(manifest))
    moved = last["defense_gan_orig"]["transferred_fgsm"]
    table = headline.headline_table(str(tmp_path))
    assert (f"passed through the projection ({moved['n']} test images, the training run's "
            f"evaluation at {last['iteration']:,}) | - | {moved['accuracy']:.3f} |") in table
    assert f"Fashion-MNIST, {manifest['iterations']:,}-iteration averaged generator:" in table
    assert (f"worst case at L-inf 0.3 (1,000 / {shipped:,}-iteration generator, older than "
            "the shipped one) | - | 0.500 |") in table
    assert headline.rewrite_readme(str(tmp_path)) is True
    assert headline.rewrite_readme(str(tmp_path)) is False
    assert table in (tmp_path / "README.md").read_text()
    assert headline.adaptive_worst_case(str(tmp_path), "l2") == {}
    with pytest.raises(FileNotFoundError):
        headline.headline_table(str(tmp_path / "nowhere"))
