"""Training: WGAN-GP generators, classifiers and the projection's encoder."""

from defense_gan_tf.training.classifier import train_classifier
from defense_gan_tf.training.checkpoints import CheckpointError, Checkpointer
from defense_gan_tf.training.encoder import EncoderResult, train_encoder
from defense_gan_tf.training.gan_trainer import (ConfigMismatchError, OutputDirBusyError,
                                                 TrainResult, WarmStart, WarmStartError,
                                                 load_warm_start,
                                                 indexed_batches, make_strategy,
                                                 streaming_batches, train_gan)
from defense_gan_tf.training.wgan_gp import WGANGP, gradient_penalty, safe_norm

__all__ = ["CheckpointError", "Checkpointer", "ConfigMismatchError", "EncoderResult",
           "OutputDirBusyError", "TrainResult", "WGANGP", "WarmStart", "WarmStartError",
           "gradient_penalty", "indexed_batches", "load_warm_start", "make_strategy",
           "safe_norm", "streaming_batches", "train_classifier", "train_encoder", "train_gan"]
