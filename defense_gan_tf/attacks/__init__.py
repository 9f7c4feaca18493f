"""Attacks as pure functions of a ``model_fn`` (images -> logits).

White-box attacks of the Defense-GAN paper (section 4): FGSM, RAND+FGSM,
Carlini-Wagner L2, plus PGD; and the black-box substitute training of
section 4.1 (Papernot et al. 2017). Every result stays inside [clip_min, clip_max].
"""

from defense_gan_tf.attacks.common import input_gradient_norm, labels_or_predictions
from defense_gan_tf.attacks.cw_l2 import cw_l2
from defense_gan_tf.attacks.fgsm import fgsm
from defense_gan_tf.attacks.pgd import pgd_linf
from defense_gan_tf.attacks.rand_fgsm import rand_fgsm
from defense_gan_tf.attacks.substitute import (SubstituteResult, jacobian_augmentation,
                                               train_substitute)

__all__ = ["SubstituteResult", "cw_l2", "fgsm", "input_gradient_norm", "jacobian_augmentation",
           "labels_or_predictions", "pgd_linf", "rand_fgsm", "train_substitute"]
