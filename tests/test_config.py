import dataclasses
import json

import pytest

from defense_gan_tf import config as config_lib


@pytest.mark.parametrize("name", ["mnist", "f-mnist", "celeba"])
def test_json_round_trip(name):
    cfg = config_lib.preset(name)
    again = config_lib.Config.from_json(cfg.to_json())
    assert again == cfg
    assert isinstance(again.model.image_shape, tuple)


def test_presets_mirror_authors_settings():
    mnist = config_lib.preset("mnist")
    assert mnist.dataset == "mnist"
    assert mnist.model.image_shape == (28, 28, 1)
    assert mnist.model.pixel_range == (0.0, 1.0)
    assert (mnist.model.latent_dim, mnist.model.net_dim) == (128, 64)
    assert (mnist.gan.batch_size, mnist.gan.critic_steps) == (50, 5)
    assert mnist.gan.gradient_penalty_weight == 10.0
    assert (mnist.gan.learning_rate, mnist.gan.beta_1, mnist.gan.beta_2) == (1e-4, 0.5, 0.9)
    p = mnist.projection
    assert (p.iterations, p.restarts, p.learning_rate, p.momentum, p.decay) == (
        200, 10, 10.0, 0.7, False)
    assert config_lib.preset("f-mnist").dataset == "fashion_mnist"
    celeba = config_lib.preset("celeba")
    assert celeba.model.image_shape == (64, 64, 3)
    assert celeba.model.pixel_range == (-1.0, 1.0)
    assert celeba.projection.restarts == 2


def test_configs_are_frozen():
    cfg = config_lib.preset("mnist")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.gan.batch_size = 3


def test_unknown_keys_rejected_with_their_names():
    data = config_lib.preset("mnist").to_dict()
    data["gan"]["bach_size"] = 5
    with pytest.raises(ValueError, match=r"gan\.bach_size"):
        config_lib.Config.from_json(json.dumps(data))
    data = config_lib.preset("mnist").to_dict()
    data["colour"] = "red"
    data["shade"] = "dark"
    with pytest.raises(ValueError, match="colour, shade"):
        config_lib.Config.from_dict(data)


def test_wrong_types_and_values_rejected():
    data = config_lib.preset("mnist").to_dict()
    data["gan"]["batch_size"] = "fifty"
    with pytest.raises(ValueError, match="gan.batch_size"):
        config_lib.Config.from_dict(data)
    with pytest.raises(ValueError, match="projection.momentum"):
        config_lib.ProjectionConfig(momentum=1.5)
    with pytest.raises(ValueError, match="image_shape"):
        config_lib.ModelConfig(image_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="not valid JSON"):
        config_lib.Config.from_json("{not json")


def test_override_dotted_keys_parses_strings():
    cfg = config_lib.override(config_lib.preset("mnist"),
                              {"gan.batch_size": "64", "projection.decay": "true",
                               "model.net_dim": 8})
    assert cfg.gan.batch_size == 64 and cfg.projection.decay is True
    assert cfg.model.net_dim == 8
    with pytest.raises(ValueError, match="gan.nope"):
        config_lib.override(cfg, {"gan.nope": 1})


def test_unknown_preset():
    with pytest.raises(ValueError, match="cifar"):
        config_lib.preset("cifar")
