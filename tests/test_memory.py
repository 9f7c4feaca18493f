"""The memory estimate that sizes batches of the full gradient through the projection."""

import pytest

from defense_gan_tf import memory


def test_the_estimate_follows_the_measured_peaks_of_the_plain_mode():
    # Peaks measured with every unrolled step kept, L=200, R=10 (1, 2, 4 and 8 images).
    measured = {1: 3.26, 2: 4.27, 4: 6.44, 8: 10.77}
    per_image = memory.gb_per_image(200, 10, segment=0)
    for batch, peak in measured.items():
        assert memory.BASE_GB + batch * per_image == pytest.approx(peak, rel=0.05)


def test_segments_are_estimated_like_the_plain_loop_and_bpda_holds_one_step():
    plain = memory.gb_per_image(200, 10, segment=0)
    # Measured at L=200, R=10: 0.76 GB per image segmented, 1.05 plain; one segment's
    # 15 steps (0.08 GB) would size batches ten times too large.
    assert memory.gb_per_image(200, 10, segment=15) == pytest.approx(plain)
    assert memory.gb_per_image(200, 10, segment=15) > 0.76
    assert memory.gb_per_image(200, 10, gradient="bpda") == pytest.approx(plain / 200)
    assert memory.gb_per_image(200, 5, segment=0) == pytest.approx(plain / 2)
    assert memory.gb_per_image(100, 10, segment=0) == pytest.approx(plain / 2)
    assert memory.gb_per_image(200, 10, segment=0, image_shape=(56, 56, 1)) == \
        pytest.approx(4 * plain)
    assert memory.held_steps(7, 15, "full") == 7
    assert memory.held_steps(200, 15, "bpda") == 1


def test_the_paper_setting_on_this_machine_kind_stays_under_8_gb():
    # Half of a 23 GB machine's available memory: the batch picked for L=200, R=10 times
    # the measured segmented slope (0.76 GB per image over a 1.29 GB base) fits in 8 GB.
    per_image = memory.gb_per_image(200, 10, segment=15)
    batch = memory.batch_for_budget(11.5, per_image, 20)
    assert 1 <= batch < 20
    assert 1.29 + 0.76 * batch < 8.0


def test_the_batch_is_the_largest_that_fits_and_never_below_one():
    assert memory.batch_for_budget(10.0, 1.0, 20) == 7          # (10 - 2.1) // 1
    assert memory.batch_for_budget(100.0, 1.0, 20) == 20        # never above the wish
    assert memory.batch_for_budget(1.0, 1.0, 20) == 1           # even when none fits
    sizes = [memory.batch_for_budget(b, 0.3, 50) for b in (3, 5, 8, 12, 30)]
    assert sizes == sorted(sizes)


def test_the_default_budget_is_half_of_what_is_available(tmp_path, monkeypatch):
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       24000000 kB\nMemAvailable:   16000000 kB\n")
    assert memory.available_gb(str(info)) == pytest.approx(16000000 * 1024 / 1e9)
    assert memory.available_gb(str(tmp_path / "missing")) is None
    monkeypatch.setattr(memory, "available_gb", lambda: 12.0)
    assert memory.default_budget_gb() == 6.0
