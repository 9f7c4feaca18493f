"""Training: WGAN-GP generators and classifiers."""

from defense_gan_tf.training.classifier import train_classifier
from defense_gan_tf.training.checkpoints import CheckpointError, Checkpointer
from defense_gan_tf.training.gan_trainer import (ConfigMismatchError, OutputDirBusyError,
                                                 TrainResult, WarmStart, WarmStartError,
                                                 load_warm_start,
                                                 indexed_batches, make_strategy,
                                                 streaming_batches, train_gan)
from defense_gan_tf.training.wgan_gp import WGANGP, gradient_penalty, safe_norm

__all__ = ["CheckpointError", "Checkpointer", "ConfigMismatchError", "OutputDirBusyError",
           "TrainResult", "WarmStart", "WarmStartError", "load_warm_start",
           "WGANGP", "gradient_penalty", "indexed_batches", "make_strategy",
           "safe_norm", "streaming_batches", "train_classifier", "train_gan"]
