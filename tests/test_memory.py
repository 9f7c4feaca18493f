"""The memory estimate that sizes batches of the full gradient through the projection."""

import pytest

from defense_gan_tf import memory


def test_the_estimate_follows_the_measured_peaks_of_the_plain_mode():
    # Peaks measured with every unrolled step kept, L=200, R=10 (1, 2, 4 and 8 images).
    measured = {1: 3.26, 2: 4.27, 4: 6.44, 8: 10.77}
    per_image = memory.gb_per_image(200, 10, segment=0)
    for batch, peak in measured.items():
        assert memory.BASE_GB + batch * per_image == pytest.approx(peak, rel=0.05)


def test_a_fused_segmented_gradient_holds_one_segment_and_an_eager_one_all_steps():
    plain = memory.gb_per_image(200, 10, segment=0)
    fused = memory.gb_per_image(200, 10)                       # default segment: 15 steps
    # Measured at L=200, R=10: 0.048 GB per image fused and segmented, 0.99 under an
    # eager tape with segments, 1.04 plain: the estimate covers each.
    assert memory.gb_per_image(200, 10, segment=15) == pytest.approx(fused)
    assert fused == pytest.approx(plain * 15 / 200)
    assert 0.048 <= fused < 0.2
    assert memory.gb_per_image(200, 10, fused=False) == pytest.approx(plain)
    assert memory.gb_per_image(200, 10, segment=15, fused=False) > 0.99
    assert memory.gb_per_image(200, 10, gradient="bpda") == pytest.approx(plain / 200)
    assert memory.gb_per_image(200, 5, segment=0) == pytest.approx(plain / 2)
    assert memory.gb_per_image(100, 10, segment=0) == pytest.approx(plain / 2)
    assert memory.gb_per_image(200, 10, segment=0, image_shape=(56, 56, 1)) == \
        pytest.approx(4 * plain)
    assert memory.held_steps(7, 15, "full") == 7
    assert memory.held_steps(200, 15, "full", fused=False) == 200
    assert memory.held_steps(200, 15, "bpda") == 1


def test_the_paper_setting_on_this_machine_kind_stays_under_8_gb():
    # Half of a 23 GB machine's available memory. FGSM's fused gradient takes the
    # paper's 20 images in one batch (measured 0.048 GB per image over a 0.95 GB base;
    # the paper command itself peaked at 2.1 GB); CW's eager one a batch whose measured
    # peak (0.99 per image over 1.03) stays inside the budget.
    batch = memory.batch_for_budget(11.5, memory.gb_per_image(200, 10), 20)
    assert batch == 20 and 0.95 + 0.048 * batch < 8.0
    batch = memory.batch_for_budget(11.5, memory.gb_per_image(200, 10, fused=False), 20)
    assert 1 <= batch < 20
    assert 1.03 + 0.99 * batch < 11.5


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
