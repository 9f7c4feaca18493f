"""The Defense-GAN-Rec training-set reconstructions: cached, and resumed after an interruption."""
import os
import signal

import numpy as np
import pytest

from defense_gan_tf.batch_cache import save_batch
from defense_gan_tf.defense.reconstruction import (batches_folder, kept_reconstructions,
                                                   reconstruct_dataset,
                                                   reconstruction_cache_path)


class Projection:
    """A deterministic per-batch stand-in for G(z*) that records what it was asked."""

    def __init__(self, fail_at_call=None):
        self.calls, self.fail_at_call = [], fail_at_call

    def __call__(self, batch):
        if self.fail_at_call is not None and len(self.calls) == self.fail_at_call:
            raise KeyboardInterrupt
        self.calls.append(batch.copy())
        # depends on the batch as a whole, so a shifted batch boundary changes the output
        return np.tanh(batch * 3.0 + batch.mean())


def _images(n=10):
    return np.random.default_rng(0).uniform(size=(n, 4, 4, 1)).astype(np.float32)


def _files(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def _kept(cache, images, batch_size=3):
    """The batch files an interrupted call left for ``images`` under key "k"."""
    return _files(batches_folder(reconstruction_cache_path(cache, "k", images)))


def test_interrupted_reconstruction_resumes_where_it_stopped(tmp_path):
    images, cache = _images(), str(tmp_path / "cache")
    expected = reconstruct_dataset(Projection(), images, cache_key="k", batch_size=3)

    first, messages = Projection(fail_at_call=2), []
    with pytest.raises(KeyboardInterrupt):
        reconstruct_dataset(first, images, cache_key="k", cache_dir=cache, batch_size=3,
                            log=messages.append)
    assert len(_kept(cache, images)) == 2, _files(cache)
    assert "interrupted: 6/10 reconstructions kept" in messages[-1], messages

    second = Projection()
    recs = reconstruct_dataset(second, images, cache_key="k", cache_dir=cache,
                               batch_size=3, log=messages.append)
    # only images 6..9 were projected again, in the same batches as an uninterrupted run
    np.testing.assert_array_equal(np.concatenate(second.calls), images[6:])
    assert [len(b) for b in second.calls] == [3, 1]
    np.testing.assert_allclose(recs, expected, rtol=1e-6)
    assert any(m.startswith("resuming: 6/10") for m in messages), messages
    # the batch folder is gone once the whole set is one file; no temporary file is left
    assert _files(cache) == [os.path.basename(reconstruction_cache_path(cache, "k", images))]

    third = Projection()
    np.testing.assert_array_equal(
        reconstruct_dataset(third, images, cache_key="k", cache_dir=cache, batch_size=3,
                            log=lambda m: None), recs)
    assert third.calls == []


def test_every_batch_is_kept_as_it_finishes(tmp_path):
    images, cache = _images(), str(tmp_path / "cache")
    seen = []

    def project(batch):
        # a SIGKILL would skip any except clause: the batches before must be on disk
        seen.append(len(_kept(cache, images)))
        return batch * 2.0

    reconstruct_dataset(project, images, cache_key="k", cache_dir=cache, batch_size=3,
                        log=lambda m: None)
    assert seen == [0, 1, 2, 3]


def test_batches_of_another_batch_size_are_not_resumed(tmp_path):
    images, cache = _images(), str(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        reconstruct_dataset(Projection(fail_at_call=1), images, cache_key="k",
                            cache_dir=cache, batch_size=4, log=lambda m: None)
    path = reconstruction_cache_path(cache, "k", images)
    assert kept_reconstructions(path, 10, 4) == 4 and kept_reconstructions(path, 10, 3) == 0
    again = Projection()
    recs = reconstruct_dataset(again, images, cache_key="k", cache_dir=cache, batch_size=3,
                               log=lambda m: None)
    np.testing.assert_array_equal(np.concatenate(again.calls), images)
    np.testing.assert_allclose(
        recs, reconstruct_dataset(Projection(), images, cache_key="k", batch_size=3),
        rtol=1e-6)
    assert not os.path.exists(batches_folder(path))


def test_unusable_kept_batches_are_projected_again(tmp_path):
    images, cache = _images(), str(tmp_path / "cache")
    expected = reconstruct_dataset(Projection(), images, cache_key="k", batch_size=3)
    folder = batches_folder(reconstruction_cache_path(cache, "k", images))
    os.makedirs(folder)
    with open(os.path.join(folder, "b3_0000000.npz"), "wb") as f:
        f.write(b"PK\x03\x04 truncated")  # a zip header and nothing after it
    save_batch(os.path.join(folder, "b3_0000003.npz"), reconstructions=images[:2])
    proj, messages = Projection(), []
    recs = reconstruct_dataset(proj, images, cache_key="k", cache_dir=cache, batch_size=3,
                               log=messages.append)
    assert len(proj.calls) == 4  # both unusable batches, and the two never done
    np.testing.assert_allclose(recs, expected, rtol=1e-6)
    assert any("ignoring kept batch b3_0000003" in m for m in messages), messages


def test_other_images_or_key_do_not_share_a_cache(tmp_path):
    images, cache = _images(), str(tmp_path / "cache")
    reconstruct_dataset(Projection(), images, cache_key="k", cache_dir=cache, batch_size=5)
    for other_images, key in ((images[::-1].copy(), "k"), (images, "other generator")):
        proj = Projection()
        reconstruct_dataset(proj, other_images, cache_key=key, cache_dir=cache, batch_size=5,
                            log=lambda m: None)
        assert len(proj.calls) == 2
    with pytest.raises(ValueError, match="batch_size"):
        reconstruct_dataset(Projection(), images, cache_key="k", batch_size=0)


def test_sigterm_becomes_an_interruption_that_keeps_the_finished_batches(tmp_path):
    from defense_gan_tf.console import interrupt_on_sigterm

    images, cache = _images(), str(tmp_path / "cache")
    calls = []

    def project(batch):
        calls.append(len(batch))
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return batch * 2.0

    previous = signal.getsignal(signal.SIGTERM)
    try:
        interrupt_on_sigterm()
        with pytest.raises(KeyboardInterrupt):
            reconstruct_dataset(project, images, cache_key="k", cache_dir=cache,
                                batch_size=3, log=lambda m: None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert _kept(cache, images) == ["b3_0000000.npz"]  # the batch before the signal
    recs = reconstruct_dataset(lambda b: b * 2.0, images, cache_key="k", cache_dir=cache,
                               batch_size=3, log=lambda m: None)
    np.testing.assert_allclose(recs, images * 2.0)
