import gzip
import os

import numpy as np
import pytest

from defense_gan_tf import data


def _idx_bytes(array, magic_type=0x08):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, magic_type, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def _write(path, payload, compress):
    if compress:
        with gzip.open(path + ".gz", "wb") as f:
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)


def make_idx_folder(root, *, n_train=60_010, n_test=7, compress=True, name="mnist",
                    rng_seed=0):
    """Writes a fake dataset in the shared/data layout; returns the arrays written."""
    rng = np.random.default_rng(rng_seed)
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        _write(os.path.join(folder, f"{split}-images-idx3-ubyte"), _idx_bytes(images), compress)
        _write(os.path.join(folder, f"{split}-labels-idx1-ubyte"), _idx_bytes(labels), compress)
        arrays[split] = (images, labels)
    return arrays


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("idx"))
    return root, make_idx_folder(root, n_train=50_003, n_test=7)


def test_splits_and_scaling(fake_dir):
    root, arrays = fake_dir
    train_images, train_labels = arrays["train"]
    x, y = data.load_numpy("mnist", "train", data_dir=root)
    assert x.shape == (50_000, 28, 28, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[..., 0], train_images[:50_000] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y, train_labels[:50_000])
    xv, yv = data.load_numpy("mnist", "validation", data_dir=root)
    assert xv.shape[0] == 3
    np.testing.assert_array_equal(yv, train_labels[50_000:])
    xt, yt = data.load_numpy("mnist", "test", data_dir=root)
    np.testing.assert_array_equal(yt, arrays["t10k"][1])
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_dataset_matches_numpy_and_limit(fake_dir):
    root, arrays = fake_dir
    ds = data.load("mnist", "test", data_dir=root)
    pairs = list(ds.as_numpy_iterator())
    assert len(pairs) == 7
    image, label = pairs[3]
    assert image.shape == (28, 28, 1) and image.dtype == np.float32
    np.testing.assert_allclose(image[..., 0], arrays["t10k"][0][3] / 255.0, atol=1e-7)
    assert label == arrays["t10k"][1][3]
    assert len(list(data.load("mnist", "test", data_dir=root, limit=2))) == 2


def test_raw_files_and_environment_variable(tmp_path, monkeypatch):
    arrays = make_idx_folder(str(tmp_path), n_train=50_001, n_test=4, compress=False,
                             name="fashion-mnist")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    x, y = data.load_numpy("f-mnist", "test")
    np.testing.assert_array_equal(y, arrays["t10k"][1])


def _corrupt(root, filename, payload):
    path = os.path.join(root, "mnist", filename)
    os.remove(path + ".gz")
    with open(path, "wb") as f:
        f.write(payload)
    return path


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_numpy("mnist", "test", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no mnist/ subfolder"):
        data.load_numpy("mnist", "test", data_dir=str(tmp_path))
    make_idx_folder(str(tmp_path), n_train=10, n_test=3)
    os.remove(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load_numpy("mnist", "test", data_dir=str(tmp_path))


def test_wrong_magic_number(tmp_path):
    make_idx_folder(str(tmp_path), n_train=10, n_test=3)
    payload = _idx_bytes(np.zeros((3, 28, 28)), magic_type=0x0D)  # float type code
    path = _corrupt(str(tmp_path), "t10k-images-idx3-ubyte", payload)
    with pytest.raises(ValueError, match="magic number") as err:
        data.load_numpy("mnist", "test", data_dir=str(tmp_path))
    assert path in str(err.value)


def test_truncated_raw_and_gzip(tmp_path):
    make_idx_folder(str(tmp_path), n_train=10, n_test=3)
    payload = _idx_bytes(np.zeros((3, 28, 28)))[:-100]
    path = _corrupt(str(tmp_path), "t10k-images-idx3-ubyte", payload)
    with pytest.raises(ValueError, match="truncated") as err:
        data.load_numpy("mnist", "test", data_dir=str(tmp_path))
    assert path in str(err.value)
    os.remove(path)
    full = gzip.compress(_idx_bytes(np.zeros((3, 28, 28))))
    with open(path + ".gz", "wb") as f:
        f.write(full[: len(full) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        data.load_numpy("mnist", "test", data_dir=str(tmp_path))


def test_count_mismatch(tmp_path):
    make_idx_folder(str(tmp_path), n_train=10, n_test=3)
    _corrupt(str(tmp_path), "t10k-labels-idx1-ubyte", _idx_bytes(np.zeros(4)))
    with pytest.raises(ValueError, match="count mismatch.*3 images.*4 labels"):
        data.load_numpy("mnist", "test", data_dir=str(tmp_path))


def test_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'"):
        data.load("cifar10", "train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        data.load("mnist", "dev", data_dir=str(tmp_path))


def _tiny_tfds_copy(root, n_train=60, n_test=20):
    """A prepared tensorflow-datasets copy of 'mnist' (version 3.0.1, the registered
    builder's features) under ``root``, written offline; returns its uint8 arrays."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(1)
    arrays = {split: (rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                      rng.integers(0, 10, (n,)).astype(np.int64))
              for split, n in (("train", n_train), ("test", n_test))}
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(28, 28, 1)),
        "label": tfds.features.ClassLabel(num_classes=10)})
    splits = {split: tf.data.Dataset.from_tensor_slices({"image": x, "label": y})
              for split, (x, y) in arrays.items()}
    tfds.dataset_builders.store_as_tfds_dataset(
        name="mnist", version="3.0.1", features=features, split_datasets=splits,
        data_dir=str(root), disable_shuffling=True)
    return arrays


def test_the_tfds_path_reads_a_prepared_copy_without_network(tmp_path, monkeypatch):
    arrays = _tiny_tfds_copy(tmp_path)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))

    def no_download(*args, **kwargs):
        raise AssertionError("a prepared copy needs no network")

    monkeypatch.setattr(data, "_no_network_reason", no_download)
    x, y = data.load_numpy("mnist", "test")
    assert x.shape == (20, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x, arrays["test"][0] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y, arrays["test"][1])
    x5, y5 = data.load_numpy("mnist", "test", limit=5)
    np.testing.assert_array_equal(y5, arrays["test"][1][:5])
    pairs = list(data.load("mnist", "test", limit=3).as_numpy_iterator())
    assert [int(label) for _, label in pairs] == list(arrays["test"][1][:3])
    # The package's train split is the first 50,000 official images: too few here.
    with pytest.raises(data.DatasetUnavailableError, match="'train\\[:50000\\]'.*60 examples"):
        data.load_numpy("mnist", "train")


def test_the_tfds_path_offline_without_a_copy_fails_fast_naming_the_cause(
        tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(data, "_no_network_reason",
                        lambda *a, **k: "cannot reach storage.googleapis.com (gaierror)")
    with pytest.raises(data.DatasetUnavailableError,
                       match="no prepared copy of 'mnist'.*cannot reach.*data_dir"):
        data.load("mnist", "train")


def test_a_broken_tensorflow_datasets_is_not_blamed_on_the_network(monkeypatch):
    import tensorflow_datasets as tfds

    def broken(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'")

    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(tfds, "builder", broken)
    with pytest.raises(data.DatasetUnavailableError) as e:
        data.load("mnist", "train")
    assert "cannot be used (ModuleNotFoundError: No module named 'importlib_resources')" \
        in str(e.value)
    assert "offline" not in str(e.value) and "data_dir" in str(e.value)


def test_load_numpy_takes_the_limit_load_takes(fake_dir):
    root, arrays = fake_dir
    x, y = data.load_numpy("mnist", "test", data_dir=root, limit=3)
    assert x.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(y, arrays["t10k"][1][:3])
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="limit"):
            data.load_numpy("mnist", "test", data_dir=root, limit=bad)


def test_celeba_through_mocked_tfds(monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(data, "_no_network_reason", lambda *a, **k: None)
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        pairs = list(data.load("celeba", "train").as_numpy_iterator())
    assert len(pairs) == 3
    for image, label in pairs:
        assert image.shape == (64, 64, 3) and image.dtype == np.float32
        assert -1.0 <= image.min() and image.max() <= 1.0
        assert label in (0, 1)


def test_celeba_preprocessing_crops_the_centre():
    # A 218x178 image whose centre 108x108 square is white and the rest black.
    image = np.zeros((218, 178, 3), np.uint8)
    top, left = (218 - 108) // 2, (178 - 108) // 2
    image[top:top + 108, left:left + 108] = 255
    out = data.preprocess_celeba(image).numpy()
    assert out.shape == (64, 64, 3)
    np.testing.assert_allclose(out, 1.0, atol=1e-5)


def test_real_mnist(mnist_dir):
    import time

    t0 = time.monotonic()
    x, y = data.load_numpy("mnist", "train", data_dir=mnist_dir)
    xv, yv = data.load_numpy("mnist", "validation", data_dir=mnist_dir)
    xt, yt = data.load_numpy("mnist", "test", data_dir=mnist_dir)
    seconds = time.monotonic() - t0
    assert (len(x), len(xv), len(xt)) == (50_000, 10_000, 10_000)
    assert list(y[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert list(yt[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert list(np.bincount(yt)) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert x.min() == 0.0 and x.max() == 1.0
    assert seconds < 30, f"reading 70,000 images took {seconds:.1f} s"


def test_real_fashion_mnist(mnist_dir):
    if not os.path.isdir(os.path.join(mnist_dir, "fashion-mnist")):
        pytest.skip("no fashion-mnist folder")
    xt, yt = data.load_numpy("fashion_mnist", "test", data_dir=mnist_dir)
    assert xt.shape == (10_000, 28, 28, 1)
    assert list(np.bincount(yt)) == [1000] * 10
