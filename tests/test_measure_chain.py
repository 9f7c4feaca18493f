"""pretrained/measure_chain.sh, the measurements that finish a package: their order, that
the choice is made once, that a stopped measurement stops the chain with its status, and
one-line refusals. Run in a copy of the script with a stand-in for Python that records
each binary's arguments (the JSON it reads runs in the real interpreter)."""

import hashlib
import json
import os

import chain_scripts

STAND_IN = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then exec "$REAL_PYTHON" "$@"; fi
echo "$*" >> calls.txt
case "$1" in
  bin/measure_generator.py) exit "${MEASURE_STATUS:-0}" ;;
  bin/choose_generator.py)
    "$REAL_PYTHON" -c 'import json, sys
p = sys.argv[1] + "/manifest.json"; m = json.load(open(p))
m["shipped_choice"] = {"shipped": "raw"}; json.dump(m, open(p, "w"))' "${2#--package_dir=}" ;;
esac
"""


def _world(tmp_path, dataset="mnist", encoder_for=b"generator", **manifest):
    root = tmp_path / "repo"
    package = root / "pretrained" / dataset
    os.makedirs(package)
    chain_scripts.copy_scripts(root, "measure_chain.sh", "chain_lib.sh")
    (package / "generator.keras").write_bytes(b"generator")
    (package / "manifest.json").write_text(json.dumps(dict(
        {"file": "generator.keras", "sha256": hashlib.sha256(b"generator").hexdigest(),
         "average_file": "generator_ema.keras"}, **manifest)))
    if encoder_for is not None:
        (package / "encoder.json").write_text(json.dumps(
            {"generator_sha256": hashlib.sha256(encoder_for).hexdigest()}))
    return root, chain_scripts.stand_in(tmp_path, STAND_IN)


def _chain(root, python, *args, **env):
    return chain_scripts.run(root, "measure_chain.sh", python, *args, **env)


_calls = chain_scripts.calls


def _flag(call, name):
    return [w.split("=", 1)[1] for w in call.split() if w.startswith(f"--{name}=")][0]


def test_both_generators_then_the_choice_then_the_shipped_one_on_2000_images(tmp_path):
    root, python = _world(tmp_path, encoder_for=b"an older generator")
    r = _chain(root, python, "mnist", "90")
    assert r.returncode == 0, r.stderr
    calls = _calls(root)
    assert [c.split()[0] for c in calls] == [
        "bin/measure_generator.py", "bin/measure_generator.py", "bin/choose_generator.py",
        "bin/measure_generator.py", "bin/train_encoder.py", "bin/reproduce.py"]
    raw, average, _, shipped, encoder, headline = calls
    assert _flag(raw, "generator_file") == "generator.keras"
    assert _flag(average, "generator_file") == "generator_ema.keras"
    for call in (raw, average):
        assert _flag(call, "num_images") == "500" and _flag(call, "paper_fgsm_images") == "0"
        assert "--skip_measured" in call.split()
    assert _flag(shipped, "generator_file") == "generator.keras"
    assert (_flag(shipped, "num_images"), _flag(shipped, "paper_fgsm_images"),
            _flag(shipped, "bpda_fgsm_images")) == ("2000", "500", "500")
    assert _flag(shipped, "classifier") == "pretrained/mnist/classifier_A.keras"
    # Each measurement gets the minutes left, never more than asked for.
    assert 0 < float(_flag(shipped, "time_budget_minutes")) <= 90
    # The encoder was fitted to another generator: fitted again, into the package.
    assert _flag(encoder, "generator") == "pretrained/mnist/generator.keras"
    assert "--overwrite" in encoder.split() and _flag(encoder, "dataset") == "mnist"
    assert headline.split()[1:] == ["--headline"]


def test_a_chosen_package_keeps_its_choice_and_a_current_encoder_is_kept(tmp_path):
    root, python = _world(tmp_path, "fashion_mnist", shipped_choice={"shipped": "average"},
                          raw_file="generator_raw.keras")
    r = _chain(root, python, "fashion_mnist", "30")
    assert r.returncode == 0, r.stderr
    assert [c.split()[0] for c in _calls(root)] == [
        "bin/measure_generator.py", "bin/reproduce.py"]
    assert _flag(_calls(root)[0], "num_images") == "2000"
    # A package without an averaged generator has nothing to choose from.
    root, python = _world(tmp_path / "b", average_file=None)
    assert _chain(root, python, "mnist", "30").returncode == 0
    assert _flag(_calls(root)[0], "num_images") == "2000"


def test_a_measurement_stopped_by_its_budget_stops_the_chain(tmp_path):
    root, python = _world(tmp_path)
    r = _chain(root, python, "mnist", "30", MEASURE_STATUS="3")
    assert r.returncode == 3
    assert [c.split()[0] for c in _calls(root)] == ["bin/measure_generator.py"]
    assert "shipped_choice" not in json.loads(
        (root / "pretrained/mnist/manifest.json").read_text())


def test_bad_arguments_are_one_line(tmp_path):
    root, python = _world(tmp_path)
    for args, needle in ((["celeba", "5"], "DATASET must be mnist or fashion_mnist"),
                         (["mnist", "1.5"], "MINUTES must be a whole number"),
                         (["mnist", "0"], "MINUTES must be a whole number"),
                         (["fashion_mnist", "5"], "has no manifest.json")):
        r = _chain(root, python, *args)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.splitlines()) == 1
    assert _calls(root) == []
    r = _chain(root, python, "mnist")
    assert r.returncode != 0 and "usage: bash pretrained/measure_chain.sh" in r.stderr
