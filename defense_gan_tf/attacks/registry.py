"""The one dispatch from an attack algorithm's name to its function.

The names the binaries accept, and what each attack is (norm, gradient mode), are in
``defense_gan_tf.config`` (``WHITEBOX_ATTACKS``, ``ADAPTIVE_ATTACKS``: TensorFlow-free, so
flags are checked before TensorFlow loads); each entry's ``algorithm`` is a key here.
"""

from __future__ import annotations

from defense_gan_tf.attacks.cw_l2 import cw_l2
from defense_gan_tf.attacks.fgsm import fgsm
from defense_gan_tf.attacks.pgd import pgd_l2, pgd_linf
from defense_gan_tf.attacks.rand_fgsm import rand_fgsm

# The latent attack (``latent_attack``) searches the generator's range rather than
# perturbing through a model_fn, so it has its own call in the adaptive workflow.
ALGORITHMS = {"fgsm": fgsm, "rand_fgsm": rand_fgsm, "pgd": pgd_linf, "pgd_l2": pgd_l2,
              "cw": cw_l2}


def perturb(algorithm: str, model_fn, x, **settings):
    """Adversarial images of ``algorithm`` against ``model_fn``; ``settings`` are that
    function's keyword arguments (``eps``, ``y``, ``clip_min``, ``clip_max``, ...)."""
    try:
        function = ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"unknown attack algorithm {algorithm!r}; known: "
                         f"{sorted(ALGORITHMS)}") from None
    return function(model_fn, x, **settings)
