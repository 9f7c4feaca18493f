"""One registry of attack names (config) and one dispatch to their functions (attacks)."""

import numpy as np
import pytest
import tensorflow as tf

from defense_gan_tf import attacks
from defense_gan_tf.config import ADAPTIVE_ATTACKS, WHITEBOX_ATTACKS, AttackConfig
from defense_gan_tf.workflows.adaptive import _BUDGET_FREE, _family
from defense_gan_tf.workflows.whitebox import make_attack

_NORM_OF = {"fgsm": "linf", "rand_fgsm": "linf", "pgd": "linf", "pgd_l2": "l2", "cw": "l2",
            "latent": "mse"}


def _linear(seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(784, 10)).astype(np.float32) * 0.1
    return lambda x: tf.matmul(tf.reshape(x, [-1, 784]), w)


def test_every_entry_names_a_known_algorithm_in_its_own_norm():
    for table in (WHITEBOX_ATTACKS, ADAPTIVE_ATTACKS):
        for name, entry in table.items():
            assert entry.algorithm in attacks.ALGORITHMS or entry.algorithm == "latent", name
            assert entry.norm == _NORM_OF[entry.algorithm], name
            assert entry.description, name
    # The white-box workflow's gradient comes from its --gradient flag; each adaptive
    # attack fixes its own (the latent search takes none through the defense).
    assert all(e.gradient is None for e in WHITEBOX_ATTACKS.values())
    assert {e.gradient for e in ADAPTIVE_ATTACKS.values()} == {
        "full", "bpda", "track", "track_eot", "transfer", None}
    assert ADAPTIVE_ATTACKS["fgsm"].gradient == "full"  # the paper's white box


def test_the_adaptive_families_and_budget_free_searches_follow_the_entries():
    assert set(_BUDGET_FREE) == {"fgsm", "transfer_fgsm", "cw_bpda", "cw_bpda_track",
                                 "latent"}
    assert {a for a in ADAPTIVE_ATTACKS if _family(a) == "eot"} == {
        "bpda_eot_pgd", "bpda_eot_track_pgd"}
    assert _family("cw_bpda_track") == "cw" and _family("bpda_pgd") is None


def test_perturb_dispatches_to_the_named_function_and_names_an_unknown_one():
    fn = _linear()
    x = np.random.default_rng(1).uniform(0.2, 0.8, (3, 28, 28, 1)).astype(np.float32)
    y = np.array([1, 2, 3])
    got = attacks.perturb("pgd_l2", fn, x, eps=1.0, step_size=0.3, iterations=3, y=y, seed=4)
    want = attacks.pgd_l2(fn, x, eps=1.0, step_size=0.3, iterations=3, y=y, seed=4)
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    with pytest.raises(ValueError, match="unknown attack algorithm 'pgd_l3'"):
        attacks.perturb("pgd_l3", fn, x, eps=1.0)


@pytest.mark.parametrize("kind", sorted(WHITEBOX_ATTACKS))
def test_make_attack_passes_the_config_and_the_seed_to_the_function(kind):
    fn = _linear()
    x = np.random.default_rng(2).uniform(0.2, 0.8, (3, 28, 28, 1)).astype(np.float32)
    y = np.array([4, 5, 6])
    cfg = AttackConfig(attack_type=kind, eps=0.2, alpha=0.05, pgd_iterations=3,
                       pgd_step_size=0.05, cw_iterations=3)
    direct = {
        "fgsm": lambda: attacks.fgsm(fn, x, eps=0.2, y=y),
        "rand_fgsm": lambda: attacks.rand_fgsm(fn, x, eps=0.2, alpha=0.05, y=y, seed=7),
        "pgd": lambda: attacks.pgd_linf(fn, x, eps=0.2, step_size=0.05, iterations=3, y=y,
                                        seed=7),
        "cw": lambda: attacks.cw_l2(fn, x, y=y, max_iterations=3, learning_rate=10.0,
                                    initial_const=100.0),
    }[kind]()
    got = make_attack(cfg, 0.0, 1.0, seed=7)(fn, x, y)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(direct))
    if kind in ("rand_fgsm", "pgd"):  # the seed reaches the random start
        other = make_attack(cfg, 0.0, 1.0, seed=8)(fn, x, y)
        assert not np.array_equal(np.asarray(other), np.asarray(direct))
