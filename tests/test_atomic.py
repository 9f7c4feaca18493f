"""Caches and models written whole or not at all; unreadable caches computed again."""

import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from defense_gan_tf import atomic
from defense_gan_tf.batch_cache import load_batch, save_batch
from defense_gan_tf.records import loading
from defense_gan_tf.records.runs import RunSpec


def _left_right(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.uniform(0, 0.2, (n, 28, 28, 1)).astype(np.float32)
    for i, label in enumerate(y):
        x[i, :, label * 14:(label + 1) * 14] += 0.7
    return x, y.astype(np.int64)


def test_an_exception_while_writing_leaves_the_old_file_and_no_temporary(tmp_path):
    path = str(tmp_path / "batch.npz")
    save_batch(path, a=np.arange(3))
    with pytest.raises(RuntimeError):
        with atomic.replacing(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half a fi")
            raise RuntimeError("killed")
    np.testing.assert_array_equal(load_batch(path)["a"], np.arange(3))
    assert os.listdir(tmp_path) == ["batch.npz"]


def test_temporary_names_are_unique_and_keep_the_extension(tmp_path):
    names = {atomic.temporary_name(str(tmp_path / "m.keras")) for _ in range(50)}
    assert len(names) == 50 and all(n.endswith(".keras") for n in names)
    assert atomic.temporary_name(str(tmp_path / "r.partial.npz")).endswith(".partial.npz")
    assert atomic.temporary_name(str(tmp_path / "s.weights.h5")).endswith(".weights.h5")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unreadable_batches_are_treated_as_missing_with_a_warning(tmp_path, capsys, damage):
    path = str(tmp_path / "batch_000000.npz")
    save_batch(path, ok=np.ones(50, bool), grads=np.random.default_rng(0).normal(size=500))
    data = open(path, "rb").read()
    content = {"truncated": data[:len(data) // 2], "garbage": b"\x00not a zip" * 20,
               "empty": b""}[damage]
    with open(path, "wb") as f:
        f.write(content)
    assert load_batch(path) is None
    out = capsys.readouterr().out
    assert path in out and out.count("\n") == 1


def test_a_batch_lacking_a_required_array_is_treated_as_missing(tmp_path, capsys):
    path = str(tmp_path / "batch.npz")
    save_batch(path, ok_plain=np.ones(3, bool))
    assert load_batch(path, required=("ok", "ok_plain")) is None
    assert "lacks ['ok']" in capsys.readouterr().out
    assert load_batch(path, required=("ok_plain",))["ok_plain"].all()


# Saves one batch 300 times; imports the batch cache alone (not TensorFlow), so that the
# two writers overlap for most of their lives.
_SAVE_MANY = ("import sys\nimport numpy as np\n"
              "from defense_gan_tf.batch_cache import save_batch\n"
              "value = float(sys.argv[2])\n"
              "for _ in range(300):\n"
              "    save_batch(sys.argv[1], x=np.full(20_000, value, np.float32),\n"
              "               tag=np.asarray(value))\n")


def test_two_processes_saving_the_same_batch_never_corrupt_it(tmp_path):
    path = str(tmp_path / "shared.npz")
    procs = [subprocess.Popen([sys.executable, "-c", _SAVE_MANY, path, str(v)])
             for v in (1.0, 2.0)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None  # every CRC good
    saved = load_batch(path)
    assert float(saved["tag"]) in (1.0, 2.0)
    assert np.all(saved["x"] == saved["tag"])
    assert os.listdir(tmp_path) == ["shared.npz"]


def test_a_truncated_cached_classifier_is_trained_again(tmp_path):
    x, y = _left_right(64)
    spec = RunSpec(epochs=1, num_train=64, batch_size=16)
    folder = str(tmp_path / "classifiers")
    messages = []
    first = loading.get_classifier(spec, x, y, classifier_dir=folder, log=messages.append)
    path = spec.classifier_path(folder)
    assert os.path.isfile(path)
    with open(path, "r+b") as f:  # what a kill during a non-atomic save left
        f.truncate(0)
    second = loading.get_classifier(spec, x, y, classifier_dir=folder, log=messages.append)
    assert any(path in m and "training it again" in m for m in messages)
    assert os.path.getsize(path) > 0
    keras.models.load_model(path)  # a valid archive again
    np.testing.assert_allclose(first.predict(x[:4], verbose=0),
                               second.predict(x[:4], verbose=0), rtol=1e-4, atol=1e-5)
