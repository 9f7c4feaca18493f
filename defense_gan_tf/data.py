"""Datasets: MNIST, Fashion-MNIST and CelebA as ``tf.data.Dataset`` of (image, label).

Splits follow the Defense-GAN authors' code: ``train`` is the
first 50,000 official training images, ``validation`` the last 10,000 and
``test`` the official 10,000 test images. CelebA uses its own official splits.

Pixel ranges: MNIST and Fashion-MNIST float32 in [0, 1]; CelebA float32 in
[-1, 1], centre-cropped to 108x108 and resized to 64x64 with the ``Male``
attribute as the label.

Sources, in order of precedence:
1. ``data_dir`` argument: a folder holding ``mnist/`` and ``fashion-mnist/``
   with the four standard IDX files each (``.gz`` or raw);
2. the environment variable ``DEFENSE_GAN_DATA_DIR`` (same layout);
3. tensorflow-datasets, which downloads on first use.
"""

from __future__ import annotations

import gzip
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from defense_gan_tf.config import SPLIT_SIZES, canonical_dataset_name
from defense_gan_tf.errors import InputError

DATA_DIR_ENV = "DEFENSE_GAN_DATA_DIR"
SPLITS = ("train", "validation", "test")
NUM_TRAIN = SPLIT_SIZES["mnist"]["train"]

# Folder names inside data_dir, as in the authors' data/ folder.
_IDX_FOLDERS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist"}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TFDS_NAMES = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "celeba": "celeb_a"}
_TFDS_SPLITS = {"train": f"train[:{NUM_TRAIN}]", "validation": f"train[{NUM_TRAIN}:]",
                "test": "test"}
_IDX_TYPE_UBYTE = 0x08

CELEBA_CROP = 108
CELEBA_SIZE = 64


class DatasetUnavailableError(InputError, RuntimeError):
    """tensorflow-datasets could not provide the data (offline, no download)."""


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    return split


def resolve_data_dir(data_dir: Optional[str]) -> Optional[str]:
    """The local IDX folder to use: the argument, else $DEFENSE_GAN_DATA_DIR, else None."""
    if data_dir:
        return os.fspath(data_dir)
    return os.environ.get(DATA_DIR_ENV) or None


def read_idx(path: str) -> np.ndarray:
    """Reads one IDX file of unsigned bytes (``.gz`` or raw).

    The format: two zero bytes, a type byte (0x08 = unsigned byte), the number
    of dimensions, then one big-endian uint32 per dimension, then the data.

    Raises:
      FileNotFoundError: if the file does not exist.
      ValueError: if the magic number is wrong or the file is truncated or too long.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file not found: {path}")
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except (EOFError, OSError, gzip.BadGzipFile) as e:
        raise ValueError(f"{path}: cannot decompress ({e}); the file is corrupt "
                         "or truncated") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: file is {len(raw)} bytes, too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_TYPE_UBYTE:
        magic = int.from_bytes(raw[:4], "big")
        raise ValueError(
            f"{path}: wrong IDX magic number 0x{magic:08x}; expected 0x000008NN "
            "(unsigned-byte data with NN dimensions)")
    ndim = raw[3]
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, "
                         f"need {header} for {ndim} dimensions)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(
            f"{path}: file is {what}: {len(raw)} bytes, header {dims} implies {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(folder: str, stem: str) -> str:
    for candidate in (stem, stem + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"missing IDX file {stem} (or {stem}.gz) in {folder}")


def _load_idx_split(name: str, split: str, data_dir: str):
    folder = os.path.join(data_dir, _IDX_FOLDERS[name])
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data folder does not exist: {data_dir}")
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"data folder {data_dir} has no {_IDX_FOLDERS[name]}/ subfolder for "
            f"{name}; expected the layout of shared/data/README.md")
    source = "test" if split == "test" else "train"
    image_file, label_file = (_find_idx(folder, f) for f in _IDX_FILES[source])
    images = read_idx(image_file)
    labels = read_idx(label_file)
    if images.ndim != 3:
        raise ValueError(f"{image_file}: expected 3 dimensions (count, rows, cols), "
                         f"got shape {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{label_file}: expected 1 dimension, got shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"image/label count mismatch: {image_file} has {images.shape[0]} images, "
            f"{label_file} has {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{label_file}: label {labels.max()} outside 0-9")
    if split == "train":
        images, labels = images[:NUM_TRAIN], labels[:NUM_TRAIN]
    elif split == "validation":
        images, labels = images[NUM_TRAIN:], labels[NUM_TRAIN:]
    images = images.astype(np.float32)[..., None] / 255.0
    return images, labels.astype(np.int64)


# The host tensorflow-datasets downloads MNIST (and its prepared copies) from.
_TFDS_HOST = ("storage.googleapis.com", 443)


def _no_network_reason(host=_TFDS_HOST, timeout: float = 5.0) -> Optional[str]:
    """Why a download cannot start (no name resolution or connection), else None.

    A download attempted offline can hang instead of failing (tensorflow-datasets
    retries); a proxy in the environment is trusted to do its job.
    """
    import socket

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return None
    try:
        socket.create_connection(host, timeout=timeout).close()
    except OSError as e:
        return f"cannot reach {host[0]} ({type(e).__name__}: {e})"
    return None


def _tfds_load(name: str, split: str):
    """A split through tensorflow-datasets: its prepared copy (``$TFDS_DATA_DIR`` or
    ``~/tensorflow_datasets``), else downloaded and prepared first when the network
    can be reached. Every failure names its real cause."""
    tfds_name = _TFDS_NAMES[name]
    tfds_split = split if name == "celeba" else _TFDS_SPLITS[split]
    local = (f"pass a local IDX folder with data_dir=... (--data_dir) or set "
             f"{DATA_DIR_ENV}")
    try:
        import tensorflow_datasets as tfds  # Imported lazily: slow, and optional offline.

        builder = tfds.builder(tfds_name, data_dir=os.environ.get("TFDS_DATA_DIR") or None)
        prepared = builder.is_prepared()
    except Exception as e:  # an import or registry failure: not the network's fault
        raise DatasetUnavailableError(
            f"tensorflow-datasets cannot be used ({type(e).__name__}: {e}); {local}") from e
    if not prepared:
        reason = _no_network_reason()
        if reason is not None:
            raise DatasetUnavailableError(
                f"tensorflow-datasets has no prepared copy of {tfds_name!r} in "
                f"{builder.data_dir} and cannot download one: {reason}; {local}")
        try:
            builder.download_and_prepare()
        except Exception as e:  # tfds raises many types for download failures
            raise DatasetUnavailableError(
                f"tensorflow-datasets could not download and prepare {tfds_name!r} "
                f"({type(e).__name__}: {e}); {local}") from e
    try:
        return builder.as_dataset(split=tfds_split, shuffle_files=False)
    except Exception as e:
        raise DatasetUnavailableError(
            f"tensorflow-datasets could not read {tfds_name!r} split {tfds_split!r} from "
            f"{builder.data_dir} ({type(e).__name__}: {e}); {local}") from e


def _mnist_from_tfds(example):
    image = tf.cast(example["image"], tf.float32) / 255.0
    return image, tf.cast(example["label"], tf.int64)


def preprocess_celeba(image: tf.Tensor) -> tf.Tensor:
    """Centre-crops a CelebA image to 108x108, resizes to 64x64 and maps to [-1, 1]."""
    image = tf.convert_to_tensor(image)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    crop = tf.minimum(CELEBA_CROP, tf.minimum(height, width))
    top = (height - crop) // 2
    left = (width - crop) // 2
    image = tf.image.crop_to_bounding_box(image, top, left, crop, crop)
    image = tf.image.resize(tf.cast(image, tf.float32), (CELEBA_SIZE, CELEBA_SIZE),
                            method="area", antialias=True)
    image = tf.clip_by_value(image / 127.5 - 1.0, -1.0, 1.0)
    image.set_shape((CELEBA_SIZE, CELEBA_SIZE, 3))
    return image


def _celeba_from_tfds(example):
    image = preprocess_celeba(example["image"])
    return image, tf.cast(example["attributes"]["Male"], tf.int64)


def load_numpy(name: str, split: str, *, data_dir: Optional[str] = None,
               limit: Optional[int] = None):
    """Loads a whole MNIST or Fashion-MNIST split into memory.

    Args:
      name: ``mnist`` or ``fashion_mnist`` (aliases such as ``f-mnist`` work).
      split: ``train``, ``validation`` or ``test``.
      data_dir: local IDX folder; defaults to $DEFENSE_GAN_DATA_DIR, then tfds.
      limit: keep only the first ``limit`` examples (as ``load`` does).

    Returns:
      (images, labels): float32 [N, 28, 28, 1] in [0, 1] and int64 [N].

    Raises:
      ValueError: unknown name or split, malformed files, bad ``limit``.
      FileNotFoundError: missing folder or file.
      DatasetUnavailableError: tfds could not download the data.
    """
    name = canonical_dataset_name(name)
    _check_split(split)
    _check_limit(limit)
    if name == "celeba":
        raise ValueError("load_numpy does not hold CelebA in memory; use load()")
    local = resolve_data_dir(data_dir)
    if local is not None:
        images, labels = _load_idx_split(name, split, local)
        return (images, labels) if limit is None else (images[:limit], labels[:limit])
    ds = _tfds_load(name, split).map(_mnist_from_tfds)
    if limit is not None:
        ds = ds.take(limit)
    images = np.zeros((0, 28, 28, 1), np.float32)
    labels = np.zeros((0,), np.int64)
    for image, label in ds.batch(10_000):
        images = np.concatenate([images, image.numpy()])
        labels = np.concatenate([labels, label.numpy()])
    return images, labels


def _check_limit(limit) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 0):
        raise ValueError(f"limit must be an integer >= 0 or None, got {limit!r}")


def load(name: str, split: str, *, data_dir: Optional[str] = None,
         limit: Optional[int] = None) -> tf.data.Dataset:
    """Loads a split as a ``tf.data.Dataset`` of (image, label) pairs.

    Args:
      name: ``mnist``, ``fashion_mnist`` or ``celeba`` (aliases: ``f-mnist``,
        ``fashion-mnist``, ``celeb_a``).
      split: ``train``, ``validation`` or ``test``.
      data_dir: local folder with ``mnist/`` and ``fashion-mnist/`` IDX files;
        defaults to $DEFENSE_GAN_DATA_DIR, then tensorflow-datasets.
        CelebA always comes from tensorflow-datasets.
      limit: keep only the first ``limit`` examples.

    Returns:
      Unbatched dataset of (float32 image, int64 label), in file order.

    Raises:
      ValueError: unknown dataset or split, malformed files, bad ``limit``.
      FileNotFoundError: missing data folder or file.
      DatasetUnavailableError: tensorflow-datasets could not get the data.
    """
    name = canonical_dataset_name(name)
    _check_split(split)
    _check_limit(limit)
    if name == "celeba":
        ds = _tfds_load(name, split).map(_celeba_from_tfds,
                                         num_parallel_calls=tf.data.AUTOTUNE)
    elif resolve_data_dir(data_dir) is not None:
        images, labels = load_numpy(name, split, data_dir=data_dir, limit=limit)
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
    else:
        ds = _tfds_load(name, split).map(_mnist_from_tfds)
    if limit is not None:
        ds = ds.take(limit)
    return ds
