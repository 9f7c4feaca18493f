import keras
import numpy as np
import pytest

from defense_gan_tf import config as config_lib
from defense_gan_tf import models


def test_mnist_generator_and_critic_parameter_counts():
    cfg = config_lib.preset("mnist")
    # Generator: Dense 128 -> 4*4*256 (128*4096 + 4096), tconv 5x5 256->128 (25*256*128 + 128),
    # tconv 128->64 (25*128*64 + 64), tconv 64->1 (25*64 + 1).
    expected_g = (128 * 4096 + 4096) + (25 * 256 * 128 + 128) + (25 * 128 * 64 + 64) + (25 * 64 + 1)
    assert models.build_generator(cfg).count_params() == expected_g == 1_554_177
    # Critic: conv 1->64, 64->128, 128->256 (5x5 each, with biases), Dense 4*4*256 -> 1.
    expected_d = (25 * 64 + 64) + (25 * 64 * 128 + 128) + (25 * 128 * 256 + 256) + (4096 + 1)
    assert models.build_critic(cfg).count_params() == expected_d == 1_030_145


def test_mnist_generator_shapes_range_and_crop():
    cfg = config_lib.preset("mnist")
    g = models.build_generator(cfg)
    assert g.input_shape == (None, 128)
    assert g.get_layer("crop7").output.shape[1:3] == (7, 7)
    z = np.random.default_rng(0).normal(size=(5, 128)).astype(np.float32) * 10
    x = g(z).numpy()
    assert x.shape == (5, 28, 28, 1)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert models.build_critic(cfg)(x).shape == (5, 1)


def test_celeba_generator_and_critic():
    cfg = config_lib.preset("celeba")
    g = models.build_generator(cfg)
    z = np.random.default_rng(0).normal(size=(2, 128)).astype(np.float32) * 10
    x = g(z).numpy()
    assert x.shape == (2, 64, 64, 3)
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < 0.0
    critic = models.build_critic(cfg)
    # The whole 8x8x256 feature map is flattened into the score unit.
    assert critic.get_layer("score").kernel.shape == (8 * 8 * 256, 1)
    assert critic(x).shape == (2, 1)


def test_generator_batch_norm_option():
    cfg = config_lib.override(config_lib.preset("mnist"),
                              {"model.generator_batch_norm": True, "model.net_dim": 4})
    g = models.build_generator(cfg)
    assert any(isinstance(l, keras.layers.BatchNormalization) for l in g.layers)
    assert not any(isinstance(l, keras.layers.BatchNormalization)
                   for l in models.build_critic(cfg).layers)


def test_models_accept_model_config_and_reject_others():
    cfg = config_lib.preset("mnist").model
    assert models.build_generator(cfg).output_shape == (None, 28, 28, 1)
    with pytest.raises(TypeError, match="Config or ModelConfig"):
        models.build_generator({"net_dim": 4})


def _dropout_rates(model):
    return [l.rate for l in model.layers if isinstance(l, keras.layers.Dropout)]


@pytest.mark.parametrize("name,rates", [
    ("A", [0.25, 0.5]), ("B", [0.2, 0.5]), ("C", [0.25, 0.5]),
    ("D", [0.5]), ("E", []), ("F", []),
])
def test_classifiers_output_logits_and_keras_dropout_rates(name, rates):
    model = models.build_classifier(name)
    assert _dropout_rates(model) == rates
    x = np.random.default_rng(1).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    logits = model(x).numpy()
    assert logits.shape == (3, 10)
    # Logits, not probabilities: rows need not sum to one and can be negative.
    assert not np.allclose(logits.sum(axis=1), 1.0)


def test_classifier_b_layer_shapes():
    b = models.build_classifier("b")
    # 28 -(8x8 s2 same)-> 14 -(6x6 s2 valid)-> 5 -(5x5 valid)-> 1
    assert [b.get_layer(n).output.shape[1] for n in ("conv1", "conv2", "conv3")] == [14, 5, 1]


def test_classifier_registry_errors_and_shapes():
    assert sorted(models.CLASSIFIERS) == list("ABCDEF")
    with pytest.raises(ValueError, match="unknown classifier 'G'"):
        models.build_classifier("G")
    with pytest.raises(ValueError, match="input_shape"):
        models.build_classifier("A", input_shape=(28, 28))
    m = models.build_classifier("E", input_shape=(64, 64, 3), num_classes=2)
    assert m.output_shape == (None, 2)


def test_seeded_builders_are_reproducible():
    cfg = config_lib.override(config_lib.preset("mnist"), {"model.net_dim": 4})
    a = [w.numpy() for w in models.build_generator(cfg, seed=1).weights]
    b = [w.numpy() for w in models.build_generator(cfg, seed=1).weights]
    c = [w.numpy() for w in models.build_generator(cfg, seed=2).weights]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    d1 = models.build_critic(cfg, seed=1).weights[0].numpy()
    np.testing.assert_array_equal(d1, models.build_critic(cfg, seed=1).weights[0].numpy())
