"""Attacks as pure functions of a ``model_fn`` (images -> logits).

White-box attacks of the Defense-GAN paper (section 4): FGSM, RAND+FGSM,
Carlini-Wagner L2, plus PGD. Every result stays inside [clip_min, clip_max].
"""

from defense_gan_tf.attacks.common import input_gradient_norm, labels_or_predictions
from defense_gan_tf.attacks.cw_l2 import cw_l2
from defense_gan_tf.attacks.fgsm import fgsm
from defense_gan_tf.attacks.pgd import pgd_linf
from defense_gan_tf.attacks.rand_fgsm import rand_fgsm

__all__ = ["cw_l2", "fgsm", "input_gradient_norm", "labels_or_predictions", "pgd_linf",
           "rand_fgsm"]
