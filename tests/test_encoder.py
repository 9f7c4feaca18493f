import numpy as np
import tensorflow as tf
from binaries import run_script

from defense_gan_tf import config as config_lib
from defense_gan_tf import models, training
from defense_gan_tf.defense import Projector


def test_encoder_inverts_the_generator_and_starts_the_projection_better(dense_generator):
    g = dense_generator()
    cfg = config_lib.override(config_lib.preset("mnist"), {"model.latent_dim": 8})
    z_train = tf.random.stateless_normal([512, 8], seed=[1, 1])
    real = g(z_train).numpy()  # "real" images on the range of G
    encoder = models.build_encoder(cfg, seed=0, width=8)
    result = training.train_encoder(encoder, g, real, steps=300, batch_size=64,
                                    learning_rate=3e-3, seed=0, log=lambda m: None)
    assert result.latent_loss < 0.5
    # E(G(z)) lands closer to z than the projection's random start (N(0, 1/d)) does.
    z = tf.random.stateless_normal([64, 8], seed=[2, 2])
    encoded = encoder(g(z))
    random_start = tf.random.stateless_normal([64, 8], seed=[3, 3]) * np.sqrt(1 / 8)
    assert float(tf.reduce_mean(tf.square(encoded - z))) < \
        0.5 * float(tf.reduce_mean(tf.square(random_start - z)))
    # From the encoder's start, the projection reaches a lower error in fewer steps.
    x = g(z[:16]).numpy()
    short = config_lib.ProjectionConfig(iterations=5, restarts=1, encoder_start=True)
    long = config_lib.ProjectionConfig(iterations=20, restarts=1)
    with_encoder = Projector(g, short, encoder=encoder)(x, seed=4)
    without = Projector(g, long)(x, seed=4)
    assert float(tf.reduce_mean(with_encoder.error)) < float(tf.reduce_mean(without.error))
    assert int(with_encoder.steps) < int(without.steps)


def test_bin_train_encoder(tmp_path, mnist_dir, dense_generator):
    import json
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    gen_path = str(tmp_path / "generator.keras")
    dense_generator().save(gen_path)
    cmd = [os.path.join(root, "bin", "train_encoder.py"),
           f"--generator={gen_path}", f"--data_dir={mnist_dir}", "--steps=3",
           "--batch_size=8"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    ok = run_script(*cmd, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    with open(tmp_path / "encoder.json") as f:
        record = json.load(f)
    assert record["steps"] == 3 and record["command"].startswith("python ")
    encoder = __import__("keras").models.load_model(str(tmp_path / "encoder.keras"))
    assert encoder.output_shape == (None, 8)
    again = run_script(*cmd, env=env, timeout=300)
    assert again.returncode != 0 and "--output" in again.stderr
