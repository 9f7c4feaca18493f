"""pretrained/train_chain.sh, the leg of time-budgeted training that the shipped packages
are trained with: which flags it passes, and that a run folder is restored from and
copied to the backup. Run in a copy of the script with a stand-in for Python."""

import os
import shutil

import chain_scripts

STAND_IN = """#!/usr/bin/env bash
printf '%s\\n' "$@" > args.txt
echo "$PYTHONPATH" > pythonpath.txt
echo "$DEFENSE_GAN_LAUNCHER" > launcher.txt
mkdir -p runs/$DATASET_SEEN && echo trained >> runs/$DATASET_SEEN/log
if [ -n "${EDIT_SCRIPT:-}" ]; then  # the script edited in place during the leg
  { printf '# a longer comment, as an edit above the running line adds %0300d\n' 0
    cat pretrained/train_chain.sh; } > edited
  cat edited > pretrained/train_chain.sh
fi
exit 3
"""


def _world(tmp_path, dataset, critic):
    root = tmp_path / "repo"
    for folder in ("pretrained/" + dataset, "defense_gan_tf", "bin"):
        os.makedirs(root / folder)
    chain_scripts.copy_scripts(root, "train_chain.sh")
    (root / "defense_gan_tf" / "marker.py").write_text("")
    if critic:
        (root / "pretrained" / dataset / "critic.keras").write_text("")
    return root, chain_scripts.stand_in(tmp_path, STAND_IN)


def _leg(root, python, dataset, *args, cwd="/", **env):
    return chain_scripts.run(root, "train_chain.sh", python, dataset, *args, cwd=cwd,
                             DATASET_SEEN=dataset, **env)


def test_a_leg_resumes_or_warm_starts_with_a_new_critic_only_when_needed(tmp_path):
    root, python = _world(tmp_path, "fashion_mnist", critic=False)
    r = _leg(root, python, "fashion_mnist", "30")
    assert r.returncode == 3, r.stderr  # the budget's status is passed on
    args = (root / "args.txt").read_text().split("\n")
    assert "--output_dir=runs/fashion_mnist" in args and "--time_budget_minutes=30" in args
    assert "--warm_start=pretrained/fashion_mnist" in args
    assert "--warm_start_fresh_critic" in args  # the package has no critic
    assert "--quality_classifier=pretrained/fashion_mnist/classifier_A.keras" in args
    assert "--train_iters=200000" in args and "--quality_every=10000" in args
    # The frozen copy of the code, not the work tree, is what runs.
    assert (root / "pythonpath.txt").read_text().strip() == "runs/.train_code"
    assert (root / "runs/.train_code/defense_gan_tf/marker.py").exists()
    assert (root / "launcher.txt").read_text().strip() == (
        "bash pretrained/train_chain.sh fashion_mnist 30")

    root, python = _world(tmp_path / "b", "mnist", critic=True)
    assert _leg(root, python, "mnist", "30", "100000", QUALITY_EVERY="2500").returncode == 3
    args = (root / "args.txt").read_text().split("\n")
    assert "--warm_start_fresh_critic" not in args and "--train_iters=100000" in args
    assert "--quality_every=2500" in args
    # The leg's command, as the run records it beside its train.py command line.
    assert (root / "launcher.txt").read_text().strip() == (
        "QUALITY_EVERY=2500 bash pretrained/train_chain.sh mnist 30 100000")


def test_the_run_folder_is_backed_up_and_restored(tmp_path):
    root, python = _world(tmp_path, "mnist", critic=True)
    backup = tmp_path / "backup"  # given relative to the caller's folder
    # The script is edited in place while the leg trains: the running leg still
    # finishes, backup included.
    r = _leg(root, python, "mnist", "5", cwd=tmp_path, CHAIN_BACKUP="backup",
             EDIT_SCRIPT="1")
    assert r.returncode == 3, r.stderr
    assert r.stderr == "" and "backed up runs/mnist" in r.stdout
    chain_scripts.copy_scripts(root, "train_chain.sh")
    assert (backup / "mnist" / "log").read_text() == "trained\n"
    shutil.rmtree(root / "runs" / "mnist")  # the work tree lost it
    r = _leg(root, python, "mnist", "5", CHAIN_BACKUP=str(backup))
    assert "restoring runs/mnist" in r.stdout
    # The restored folder was continued, and the backup replaced by the newer one.
    assert (root / "runs/mnist/log").read_text() == "trained\ntrained\n"
    assert (backup / "mnist" / "log").read_text() == "trained\ntrained\n"
    assert not (backup / "mnist.new").exists()


def test_a_wrong_dataset_or_missing_minutes_is_one_line(tmp_path):
    root, python = _world(tmp_path, "mnist", critic=True)
    r = _leg(root, python, "celeba", "5")
    assert r.returncode == 2 and "DATASET must be mnist or fashion_mnist" in r.stderr
    r = _leg(root, python, "mnist")
    assert r.returncode != 0 and "usage" in r.stderr
    assert not (root / "args.txt").exists()
