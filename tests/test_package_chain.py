"""pretrained/package_chain.sh, the package made between the legs of train_chain.sh: the
package command, the encoder refit only when the generator changed, the headline, and
one-line refusals (no run, a leg still training). Run in a copy of the script with a
stand-in for Python that records each binary's arguments."""

import fcntl
import hashlib
import json
import os

import chain_scripts

# The package step writes a manifest for the run's generator, as bin/package_generator.py
# does; PACKAGE_STATUS makes it fail.
STAND_IN = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then exec "$REAL_PYTHON" "$@"; fi
echo "$*" >> calls.txt
case "$1" in
  bin/package_generator.py)
    [ "${PACKAGE_STATUS:-0}" = 0 ] || exit "$PACKAGE_STATUS"
    "$REAL_PYTHON" -c 'import hashlib, json, sys
g = open("runs/mnist/generator.keras", "rb").read()
json.dump({"iterations": 80000, "sha256": hashlib.sha256(g).hexdigest()},
          open("pretrained/mnist/manifest.json", "w"))' ;;
esac
"""


def _world(tmp_path, encoder_for=b"older weights"):
    root = tmp_path / "repo"
    os.makedirs(root / "pretrained" / "mnist")
    os.makedirs(root / "runs" / "mnist")
    chain_scripts.copy_scripts(root, "package_chain.sh", "chain_lib.sh")
    (root / "runs/mnist/generator.keras").write_bytes(b"new weights")
    (root / "runs/mnist/progress.json").write_text(json.dumps({"iteration": 80000}))
    (root / "runs/mnist/.lock").write_text("123")  # left by a leg that has stopped
    (root / "pretrained/mnist/encoder.json").write_text(json.dumps(
        {"generator_sha256": hashlib.sha256(encoder_for).hexdigest()}))
    return root, chain_scripts.stand_in(tmp_path, STAND_IN)


def _run(root, python, *args, **env):
    return chain_scripts.run(root, "package_chain.sh", python, *args, **env)


_calls = chain_scripts.calls


def test_packages_the_run_then_refits_a_stale_encoder_then_the_headline(tmp_path):
    root, python = _world(tmp_path)
    r = _run(root, python, "mnist")
    assert r.returncode == 0, r.stderr
    package, encoder, headline = _calls(root)
    words = package.split()
    assert words[0] == "bin/package_generator.py" and "--overwrite" in words
    assert {"--run_dir=runs/mnist", "--dest_dir=pretrained/mnist",
            "--classifier=pretrained/mnist/classifier_A.keras"} <= set(words)
    assert not any(w.startswith("--train_command") for w in words)  # the run's own record
    assert encoder.split()[0] == "bin/train_encoder.py"
    assert "--generator=pretrained/mnist/generator.keras" in encoder.split()
    assert headline.split() == ["bin/reproduce.py", "--headline"]
    assert "at iteration 80000" in r.stdout
    # An encoder already fitted to the packaged generator is kept.
    root, python = _world(tmp_path / "b", encoder_for=b"new weights")
    assert _run(root, python, "mnist").returncode == 0
    assert [c.split()[0] for c in _calls(root)] == ["bin/package_generator.py",
                                                    "bin/reproduce.py"]


def test_a_failed_package_stops_before_the_encoder(tmp_path):
    root, python = _world(tmp_path)
    r = _run(root, python, "mnist", PACKAGE_STATUS="1")
    assert r.returncode == 1
    assert [c.split()[0] for c in _calls(root)] == ["bin/package_generator.py"]


def test_no_run_a_training_leg_or_a_wrong_dataset_is_one_line(tmp_path):
    root, python = _world(tmp_path)
    with open(root / "runs/mnist/.lock", "w") as lock:  # a leg holds the run folder
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = _run(root, python, "mnist")
    assert r.returncode == 2 and "a leg is training into runs/mnist" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    os.remove(root / "runs/mnist/progress.json")
    for args, needle in ((["mnist"], "runs/mnist has no progress.json"),
                         (["celeba"], "DATASET must be mnist or fashion_mnist")):
        r = _run(root, python, *args)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.splitlines()) == 1
    assert _calls(root) == []
    r = _run(root, python)
    assert r.returncode != 0 and "usage: bash pretrained/package_chain.sh" in r.stderr
