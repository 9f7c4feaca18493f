"""Training: WGAN-GP generators, classifiers and the projection's encoder.

The names below load their modules on first use, so that the run folder's checks
(``run_folder``, ``run_files``) import without TensorFlow: ``bin/train.py`` refuses a
folder trained with another config before TensorFlow loads.
"""

import importlib

_HOME = {
    "train_classifier": "classifier", "CheckpointError": "checkpoints",
    "Checkpointer": "checkpoints", "EncoderResult": "encoder", "train_encoder": "encoder",
    "ConfigMismatchError": "gan_trainer", "OutputDirBusyError": "gan_trainer",
    "TrainResult": "gan_trainer", "WarmStart": "gan_trainer", "WarmStartError": "gan_trainer",
    "load_warm_start": "gan_trainer", "indexed_batches": "gan_trainer",
    "make_strategy": "gan_trainer", "streaming_batches": "gan_trainer",
    "train_gan": "gan_trainer", "WGANGP": "wgan_gp", "gradient_penalty": "wgan_gp",
    "safe_norm": "wgan_gp",
}
__all__ = sorted(_HOME)


def __getattr__(name):
    if name in _HOME:
        module = importlib.import_module(f"defense_gan_tf.training.{_HOME[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'defense_gan_tf.training' has no attribute {name!r}")
