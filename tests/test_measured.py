"""Machine costs come from one data file, each with its meaning and source."""

import json

import pytest

from defense_gan_tf import measured, memory
from defense_gan_tf.workflows import reproduce


def test_every_figure_says_what_it_means_and_where_it_was_measured():
    with open(measured.COSTS_FILE) as f:
        costs = json.load(f)
    figures = {k: v for k, v in costs.items() if k != "about"}
    assert len(figures) >= 6
    for name, figure in figures.items():
        assert set(figure) == {"value", "meaning", "source"}, name
        assert figure["meaning"] and figure["source"], name


def test_the_estimates_read_the_file(monkeypatch):
    assert reproduce.SECONDS_PER_PAPER_PROJECTION == measured.measured_cost(
        "seconds_per_paper_projection")
    assert reproduce.epoch_seconds("C", True) == measured.measured_cost(
        "seconds_per_classifier_epoch")["C"][1]
    assert memory.BASE_GB == measured.measured_cost("full_gradient_base_gb")
    assert memory.gb_per_image(200, 10, segment=0) == pytest.approx(
        measured.measured_cost("full_gradient_gb_per_image"))


def test_a_missing_figure_names_itself_and_the_file():
    with pytest.raises(KeyError, match="no measured figure 'warp_speed' in .*measured_costs"):
        measured.measured_cost("warp_speed")
