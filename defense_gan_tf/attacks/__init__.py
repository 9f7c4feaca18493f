"""Attacks as pure functions of a ``model_fn`` (images -> logits).

White-box attacks of the Defense-GAN paper (section 4): FGSM, RAND+FGSM,
Carlini-Wagner L2, plus PGD in L-infinity and L2 (with expectation over a randomized
model's draws, EOT), BPDA that follows z* from step to step (``TrackingBPDA``, also over
K draws of the projection at once for EOT), the
latent-space attack of Athalye et al. (2018, 5.4.2); and the
black-box substitute training of section 4.1 (Papernot et al. 2017). Every result
stays inside [clip_min, clip_max].
"""

from defense_gan_tf.attacks.common import (accepts_seed, expected_loss_and_gradient,
                                           input_gradient_norm, labels_or_predictions)
from defense_gan_tf.attacks.cw_l2 import cw_l2
from defense_gan_tf.attacks.fgsm import fgsm, fgsm_direction
from defense_gan_tf.attacks.latent import LatentAttackResult, latent_attack
from defense_gan_tf.attacks.pgd import pgd_l2, pgd_linf
from defense_gan_tf.attacks.rand_fgsm import rand_fgsm
from defense_gan_tf.attacks.registry import ALGORITHMS, perturb
from defense_gan_tf.attacks.substitute import (SubstituteResult, jacobian_augmentation,
                                               train_substitute)
from defense_gan_tf.attacks.tracking import TrackingBPDA

__all__ = ["ALGORITHMS", "LatentAttackResult", "SubstituteResult", "TrackingBPDA", "accepts_seed", "cw_l2",
           "expected_loss_and_gradient", "fgsm", "fgsm_direction", "input_gradient_norm",
           "jacobian_augmentation", "labels_or_predictions", "latent_attack", "perturb",
           "pgd_l2", "pgd_linf", "rand_fgsm", "train_substitute"]
