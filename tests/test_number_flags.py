"""Every number flag of every binary refuses NaN and infinity, and the flags where zero
or a negative value means nothing refuse those, each naming the flag, before any work."""

import os
import xml.etree.ElementTree as ET

import pytest
from binaries import Refusals

from defense_gan_tf import config as config_lib
from defense_gan_tf.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# DEFENSE_GAN_TF_LOGS=1: no stderr filter process per run (refusals print no TensorFlow
# lines to filter; the filter has tests of its own).
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", DEFENSE_GAN_TF_LOGS="1")

G, C = "pretrained/mnist/generator.keras", "pretrained/mnist/classifier_A.keras"
# What each binary needs to get past its required-flag and path checks (real files: a
# value that is not refused would start the job, and the test fails by its timeout).
_REQUIRED = {
    "adaptive.py": [f"--generator={G}", f"--classifier={C}"],
    "blackbox.py": [f"--classifier={C}"],
    "export.py": [f"--generator={G}", f"--classifier={C}", "--output_dir=runs/never"],
    "choose_generator.py": ["--package_dir=pretrained/mnist"],
    "measure_generator.py": ["--package_dir=pretrained/mnist", f"--classifier={C}"],
    "package_generator.py": ["--run_dir=r", "--dest_dir=d", f"--classifier={C}"],
    "reproduce.py": ["--table=whitebox_mnist", "--dry_run"],
    "train.py": ["--output_dir=runs/never"],
    "train_encoder.py": [f"--generator={G}", "--output=runs/never.keras"],
    "train_magnet.py": ["--output_dir=runs/never"],
    "whitebox.py": [f"--classifier={C}"],
}
BINARIES = sorted(f for f in os.listdir(os.path.join(ROOT, "bin"))
                  if f.endswith(".py") and f != "flags.py")

# Flags where zero and negative values mean nothing (a step, a constant, a budget).
_POSITIVE = ("rec_lr", "cw_lr", "cw_const", "pgd_step_size", "time_budget_minutes",
             "learning_rate", "cw_learning_rate", "latent_learning_rate",
             "memory_budget_gb", "claim_timeout_minutes")
# ... except where the binary documents 0 as "none".
_ZERO_MEANS_NONE = {("measure_generator.py", "time_budget_minutes")}


_RUNNERS = {}


@pytest.fixture(scope="module", autouse=True)
def _close_runners():
    yield
    for runner in _RUNNERS.values():
        runner.close()
    _RUNNERS.clear()


def _run(name, *args):
    """``python bin/<name>`` with the flags it needs and ``args`` (forked from one helper
    process per binary: these are hundreds of runs, each refused in a fraction of a
    second; a value not refused starts the job and fails the test by its timeout)."""
    if name not in _RUNNERS:
        _RUNNERS[name] = Refusals(name, env=ENV, timeout=60)
    return _RUNNERS[name].run(*_REQUIRED.get(name, []), *args)


def _float_flags(name):
    xml = _run(name, "--helpxml").stdout
    flags = []
    for flag in ET.fromstring(xml).iter("flag"):
        if flag.findtext("type") == "float" and not flag.findtext("file").startswith("absl"):
            flags.append((flag.findtext("name"), flag.findtext("default")))
    return flags


@pytest.mark.parametrize("name", BINARIES)
def test_number_flags_refuse_nan_and_infinity(name):
    for flag, _ in _float_flags(name):
        for value in ("nan", "inf"):
            r = _run(name, f"--{flag}={value}")
            assert r.returncode != 0, f"{name} --{flag}={value} was accepted"
            last = r.stderr.strip().splitlines()[-2:]
            assert any(f"--{flag}" in line for line in last), (flag, value, r.stderr[-600:])


@pytest.mark.parametrize("name", BINARIES)
def test_steps_and_constants_refuse_zero_and_negative(name):
    checked = [flag for flag, _ in _float_flags(name) if flag in _POSITIVE]
    for flag in checked:
        for value in ("-1",) if (name, flag) in _ZERO_MEANS_NONE else ("0", "-1"):
            r = _run(name, f"--{flag}={value}")
            assert r.returncode != 0, f"{name} --{flag}={value} was accepted"
            assert f"--{flag}" in r.stderr, (flag, value, r.stderr[-600:])


@pytest.mark.parametrize("section", ["gan", "projection", "classifier", "attack"])
def test_every_float_field_of_the_configs_refuses_nan_and_infinity(section):
    defaults = getattr(config_lib.preset("mnist"), section)
    fields = [k for k, v in vars(defaults).items() if isinstance(v, float)]
    assert fields
    for field in fields:
        for value in (float("nan"), float("inf")):
            with pytest.raises(ConfigError, match=f"{section}.{field}") as refused:
                config_lib.override(config_lib.preset("mnist"), {f"{section}.{field}": value})
            assert refused.value.fields == (f"{section}.{field}",)


def test_attacks_that_would_do_nothing_are_refused():
    for key, value in (("attack.pgd_iterations", 0), ("attack.cw_initial_const", 0.0),
                       ("attack.cw_confidence", -1.0)):
        with pytest.raises(ValueError, match=key):
            config_lib.override(config_lib.preset("mnist"), {key: value})


def test_an_error_names_the_flag_of_every_field_it_concerns():
    """The config's error carries its fields; the binary puts each one's flag beside it
    (bin/flags.py's one table), the GAN fields of bin/train.py included."""
    r = _run("adaptive.py", "--attack_rec_iters=-1")
    assert r.returncode != 0
    assert ("--attack_rec_iters (attack_iterations) and --attack_rec_rr (attack_restarts) "
            "must be >= 0") in r.stderr, r.stderr[-600:]
    r = _run("train.py", "--critic_steps=0")
    assert "--critic_steps (gan.critic_steps) must be > 0, got 0" in r.stderr, r.stderr[-600:]
    r = _run("whitebox.py", "--rec_rr=0")
    assert "--rec_rr (projection.restarts) must be in [1, " in r.stderr, r.stderr[-600:]
    with pytest.raises(ConfigError) as refused:  # a field in a longer name is not it
        config_lib.AttackConfig(attack_type="rand_fgsm", eps=0.1, alpha=0.5)
    assert refused.value.fields == ("attack.alpha",)


def test_a_zero_augmentation_step_is_refused():
    r = _run("blackbox.py", "--lmbda=0")
    assert r.returncode != 0 and "--lmbda" in r.stderr, r.stderr[-600:]


@pytest.mark.parametrize("name", BINARIES)
def test_help_lists_the_shared_flags_a_binary_takes(name):
    """--help (not only --helpfull) lists the flags defined in bin/flags.py that the
    binary uses, and names the data folder's environment variable where there is one."""
    xml = _run(name, "--helpxml").stdout
    shared = {flag.findtext("name") for flag in ET.fromstring(xml).iter("flag")
              if flag.findtext("file") == "flags"}      # the module bin/flags.py
    shown = _run(name, "--help").stdout
    missing = sorted(f for f in shared if f"--{f}:" not in shown and f"--[no]{f}:" not in shown)
    assert not missing, (name, missing)
    assert shared or name in ("choose_generator.py", "measure_generator.py",
                              "package_generator.py", "reproduce.py"), name
    if "--data_dir" in shown:
        assert "DEFENSE_GAN_DATA_DIR" in shown, name


def test_shard_flag_shows_each_shares_hours_and_refuses_bad_values():
    # a dry run (see _REQUIRED) of a table whose cache lookups need no TensorFlow
    r = _run("reproduce.py", "--table=detection_mnist", "--shard=1/3")
    assert r.returncode == 0, r.stderr[-800:]
    shares = [line for line in r.stdout.splitlines() if line.strip().startswith("shard ")]
    assert [line.split(":")[0].strip() for line in shares] == [
        "shard 0/3", "shard 1/3", "shard 2/3"], r.stdout[:2000]
    assert shares[1].endswith("(this worker)") and all(" h" in s for s in shares)
    for bad in ("--shard=3/3", "--shard=1", "--shard=a/b", "--shard=auto"):
        r = _run("reproduce.py", bad)
        assert r.returncode != 0 and "--shard" in r.stderr.strip().splitlines()[-2], (
            bad, r.stderr[-600:])
