"""The Defense-GAN-Rec training-set reconstructions: cached, and resumed after an interruption."""
import os

import numpy as np
import pytest

from defense_gan_tf.training.classifier import reconstruct_dataset


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


def test_interrupted_reconstruction_resumes_where_it_stopped(tmp_path):
    images, cache = _images(), str(tmp_path / "cache")
    expected = reconstruct_dataset(Projection(), images, cache_key="k", batch_size=3)

    first = Projection(fail_at_call=2)
    with pytest.raises(KeyboardInterrupt):
        reconstruct_dataset(first, images, cache_key="k", cache_dir=cache, batch_size=3,
                            log=lambda m: None)
    assert [f for f in _files(cache) if f.endswith(".partial.npz")], _files(cache)

    second = Projection()
    recs = reconstruct_dataset(second, images, cache_key="k", cache_dir=cache,
                               batch_size=3, log=lambda m: None)
    # only images 6..9 were projected again, in the same batches as an uninterrupted run
    np.testing.assert_array_equal(np.concatenate(second.calls), images[6:])
    assert [len(b) for b in second.calls] == [3, 1]
    np.testing.assert_allclose(recs, expected, rtol=1e-6)
    assert not [f for f in _files(cache) if "partial" in f or "tmp" in f], _files(cache)

    third = Projection()
    np.testing.assert_array_equal(
        reconstruct_dataset(third, images, cache_key="k", cache_dir=cache, batch_size=3,
                            log=lambda m: None), recs)
    assert third.calls == []


def test_progress_is_saved_while_running_not_only_on_interruption(tmp_path):
    images, cache = _images(), str(tmp_path / "cache")
    seen = []

    def project(batch):
        # a SIGKILL would skip the except clause: the periodic save must already be there
        partial = [f for f in _files(cache) if f.endswith(".partial.npz")]
        if partial:
            with np.load(os.path.join(cache, partial[0])) as saved:
                seen.append(len(saved["reconstructions"]))
        else:
            seen.append(0)
        return batch * 2.0

    reconstruct_dataset(project, images, cache_key="k", cache_dir=cache, batch_size=3,
                        checkpoint_seconds=0.0, log=lambda m: None)
    assert seen == [0, 3, 6, 9]


def test_partial_file_of_another_batch_size_is_not_resumed(tmp_path):
    images, cache = _images(), str(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        reconstruct_dataset(Projection(fail_at_call=1), images, cache_key="k",
                            cache_dir=cache, batch_size=4, log=lambda m: None)
    again, messages = Projection(), []
    recs = reconstruct_dataset(again, images, cache_key="k", cache_dir=cache, batch_size=3,
                               log=messages.append)
    np.testing.assert_array_equal(np.concatenate(again.calls), images)
    assert any("ignoring partial" in m for m in messages), messages
    np.testing.assert_allclose(
        recs, reconstruct_dataset(Projection(), images, cache_key="k", batch_size=3),
        rtol=1e-6)


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


def test_sigterm_becomes_an_interruption_that_keeps_the_partial_result(tmp_path):
    import signal

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
    partial = [f for f in _files(cache) if f.endswith(".partial.npz")]
    with np.load(os.path.join(cache, partial[0])) as saved:
        assert len(saved["reconstructions"]) == 3  # the batch before the signal
