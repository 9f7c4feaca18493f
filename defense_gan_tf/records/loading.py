"""Loading what a workflow needs: data splits, a generator, a classifier (with its cache).

Every loader checks what it loads and says which file (and which flag or
argument) is at fault: a file that is missing or not a ``.keras`` archive, a
classifier where a generator belongs or the reverse, a generator whose
manifest names another dataset, more test images asked for than the split has.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Callable, NamedTuple, Optional

import keras
import numpy as np

from defense_gan_tf import data as data_lib
from defense_gan_tf.config import ClassifierConfig, canonical_dataset_name
from defense_gan_tf.console import echo
from defense_gan_tf.defense import Projector
from defense_gan_tf.errors import InputError
from defense_gan_tf.models.checks import check_classifier, check_generator
from defense_gan_tf.defense.reconstruction import (kept_reconstructions,
                                                   reconstruct_dataset,
                                                   reconstruction_cache_key,
                                                   reconstruction_cache_path)
from defense_gan_tf.models.saving import save_without_optimizer, weights_digest
from defense_gan_tf.sharding import Claims, claim_unless_ready
from defense_gan_tf.training.classifier import train_classifier


def load_model_file(path: str, name: str) -> keras.Model:
    """Loads a ``.keras`` model, with errors that name ``name`` (a flag or argument) and the file.

    Raises:
      InputError: the file does not exist, is not a ``.keras`` (zip) archive, or
        Keras cannot build a model from it.
    """
    if not os.path.exists(path):
        raise InputError(f"{name} {path} does not exist")
    if not os.path.isfile(path):
        raise InputError(f"{name} {path} is not a file")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{name} {path} is not a valid .keras archive (not a zip file: "
                         "truncated, or saved in another format)")
    try:
        return keras.models.load_model(path)
    except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise InputError(f"{name} {path} is not a loadable .keras model "
                         f"({type(e).__name__}: {first})") from None


def side_car(path: str) -> dict:
    """The ``manifest.json`` (or, in a run folder, ``progress.json``) beside a model file."""
    folder = os.path.dirname(os.path.abspath(path))
    for file_name in ("manifest.json", "progress.json"):
        candidate = os.path.join(folder, file_name)
        if os.path.isfile(candidate):
            content = _read_json_beside(candidate, path)
            return {**(content if isinstance(content, dict) else {}), "file": file_name}
    return {}


def _read_json_beside(candidate: str, path: str):
    """The JSON in ``candidate``, a file describing the model file ``path``."""
    try:
        with open(candidate) as f:
            return json.load(f)
    except ValueError:
        raise InputError(f"{candidate} (beside {path}) is not valid JSON") from None


def load_generator(path: Optional[str], *, dataset: Optional[str] = None,
                   name: str = "--generator"):
    """(generator, iterations trained or None) from a ``.keras`` file; (None, None) without one.

    The iterations come from a ``manifest.json`` (a package) or ``progress.json``
    (a run folder) beside the file. When the manifest or the run's config names
    another dataset than ``dataset``, the generator is refused.

    Raises:
      InputError: the file is missing or corrupt, is not a generator, or was
        trained on another dataset.
    """
    if not path:
        return None, None
    generator = check_generator(load_model_file(path, name), f"{name} {path}")
    info = side_car(path)
    trained_on = info.get("dataset")
    if trained_on is None and info.get("file") == "progress.json":
        config_path = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
        if os.path.isfile(config_path):
            with open(config_path) as f:
                trained_on = json.load(f).get("dataset")
    if dataset and trained_on and canonical_dataset_name(trained_on) != \
            canonical_dataset_name(dataset):
        raise InputError(f"{name} {path} was trained on {trained_on} (says its "
                         f"{info['file']}), but this run uses {dataset}")
    iterations = info.get("iterations", info.get("iteration"))
    return generator, (int(iterations) if iterations is not None else None)


# Classes of each dataset's labels (CelebA: the Male attribute).
CLASSES = {"mnist": 10, "fashion_mnist": 10, "celeba": 2}


def load_classifier(path: str, *, image_shape=None, name: str = "--classifier",
                    dataset: Optional[str] = None) -> keras.Model:
    """A logits classifier from a ``.keras`` file, checked to take ``image_shape`` images
    and, with ``dataset``, to give that dataset's number of classes and not to have been
    trained on another dataset (as its ``<file>.json`` or the package's ``manifest.json``
    beside it says).

    Raises:
      InputError: the file is missing or corrupt, is not a classifier of such images, has
        another number of classes, or was trained on another dataset.
    """
    model = check_classifier(load_model_file(path, name), f"{name} {path}",
                             image_shape=image_shape)
    if dataset:
        dataset = canonical_dataset_name(dataset)
        classes = int(model.output_shape[-1])
        if dataset in CLASSES and classes != CLASSES[dataset]:
            raise InputError(f"{name} {path} gives {classes} outputs, but {dataset} has "
                             f"{CLASSES[dataset]} classes (is it a classifier of it?)")
        trained_on, said_by = _classifier_dataset(path)
        if trained_on and canonical_dataset_name(trained_on) != dataset:
            raise InputError(f"{name} {path} was trained on {trained_on} (says {said_by}), "
                             f"but this run uses {dataset}")
    return model


def _classifier_dataset(path: str):
    """(dataset, file that says so) of a classifier file, or (None, None)."""
    own = path + ".json"
    if os.path.isfile(own):
        content = _read_json_beside(own, path)
        if isinstance(content, dict) and content.get("dataset"):
            return content["dataset"], os.path.basename(own)
    info = side_car(path)
    if info.get("file") == "manifest.json" and info.get("dataset"):
        return info["dataset"], "the manifest.json beside it"
    return None, None


def load_splits(dataset: str, data_dir: Optional[str], train_data=None, test_data=None):
    """(train, test) as (images, labels) pairs; given ones are used as they are."""
    if train_data is None:
        train_data = data_lib.load_numpy(dataset, "train", data_dir=data_dir)
    if test_data is None:
        test_data = data_lib.load_numpy(dataset, "test", data_dir=data_dir)
    return train_data, test_data


def take(split, count: int, what: str, start: int = 0, start_name: str = ""):
    """The ``count`` examples of ``split`` from ``start``; refuses to silently return fewer.

    Raises:
      InputError: the split holds fewer than ``start + count`` examples.
    """
    images, labels = split
    if start + count > len(images):
        raise InputError(f"{what}={count} asks for more images than the {len(images)} "
                         f"available" + (f" after the first {start}" if start else "")
                         + (f" ({start_name})" if start_name else ""))
    return images[start:start + count], labels[start:start + count]


class RunInputs(NamedTuple):
    """What an evaluation workflow works on, loaded and checked before any work.

    Attributes:
      generator: the generator (None without one) and ``generator_iterations``.
      classifier: the run's classifier (given, cached or trained).
      test_x, test_y: the ``num_tests`` test images from ``test_start`` on.
      test_split: the whole test split (images, labels).
    """

    generator: Optional[keras.Model]
    generator_iterations: Optional[int]
    classifier: keras.Model
    test_x: np.ndarray
    test_y: np.ndarray
    test_split: tuple

    def record_fields(self, spec) -> dict:
        """Settings the run record adds to the spec's: what was loaded, by digest."""
        from defense_gan_tf.records.report import file_digest

        return {"generator_iterations": self.generator_iterations,
                "generator_sha": weights_digest(self.generator)[:16] if self.generator
                else None,
                "classifier_sha": file_digest(spec.classifier),
                "magnet_sha": file_digest(os.path.join(spec.magnet, "magnet.json"))
                if getattr(spec, "magnet", None) else None}


def load_run_inputs(spec, *, results_dir: str, classifier_dir: str,
                    data_dir: Optional[str] = None, train_data=None, test_data=None,
                    test_start: int = 0, test_start_name: str = "",
                    log: Callable[[str], None] = echo,
                    claim_timeout: Optional[float] = None) -> RunInputs:
    """Checks the output folders, loads the generator, the splits and the classifier of a
    :class:`~defense_gan_tf.records.runs.RunSpec`; fails before any work.

    ``claim_timeout`` (seconds): other workers share ``classifier_dir`` (see
    :func:`get_classifier`).

    Raises:
      InputError: an output folder is a file or not writable, a model file is missing,
        corrupt or of the wrong kind, or more images are asked for than the splits hold.
    """
    prepare_output_dir(results_dir, "results_dir")
    generator, iterations = load_generator(spec.generator, dataset=spec.dataset)
    train_data, test_data = load_splits(spec.dataset, data_dir, train_data, test_data)
    train_x, train_y = take(train_data, spec.num_train, "num_train")
    test_x, test_y = take(test_data, spec.num_tests, "num_tests", start=test_start,
                          start_name=test_start_name)
    if not spec.classifier:
        prepare_output_dir(classifier_dir, "classifier_dir")
    classifier = get_classifier(spec, train_x, train_y, classifier_dir=classifier_dir,
                                generator=generator, log=log, claim_timeout=claim_timeout)
    return RunInputs(generator, iterations, classifier, test_x, test_y, test_data)


def prepare_output_dir(path: str, name: str) -> str:
    """Creates ``path`` if needed and checks that it is a writable folder, before any work.

    Raises:
      InputError: ``path`` is a file, or cannot be created or written.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{name} {path} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise InputError(f"{name} {path} cannot be created: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise InputError(f"{name} {path} is not writable")
    return path


def rec_cache_status(spec, *, classifier_dir: str, data_dir: Optional[str] = None,
                     train_data=None) -> tuple[bool, bool, int]:
    """For a Defense-GAN-Rec run: whether its classifier, and whether the reconstructions
    of its training images, are in ``classifier_dir`` already, and how many of those
    reconstructions an interrupted run kept there when not all are (loads the generator,
    and the training split, or uses ``train_data``, when the classifier is not there)."""
    generator, _ = load_generator(spec.generator, dataset=spec.dataset)
    key = reconstruction_cache_key(generator, spec.projection, spec.seed)
    if os.path.isfile(spec.classifier_path(classifier_dir, key)):
        return True, True, 0
    if train_data is None:
        train_data = data_lib.load_numpy(spec.dataset, "train", data_dir=data_dir)
    train_x, _ = take(train_data, spec.num_train, "num_train")
    path = reconstruction_cache_path(classifier_dir, key, train_x)
    if os.path.isfile(path):
        return False, True, 0
    return False, False, kept_reconstructions(path, len(train_x))


def get_classifier(run, train_x: np.ndarray, train_y: np.ndarray, *, classifier_dir: str,
                   generator: Optional[keras.Model] = None,
                   log: Callable[[str], None] = echo,
                   claim_timeout: Optional[float] = None) -> keras.Model:
    """The run's classifier: the given file, else from the cache folder, else trained.

    Args:
      run: a :class:`~defense_gan_tf.records.runs.RunSpec` (which classifier, how
        it is trained and defended).
      train_x, train_y: its training data.
      classifier_dir: the cache folder.
      generator: the generator, for a classifier trained on reconstructions.
      log: progress output.
      claim_timeout: other workers share ``classifier_dir`` (seconds after which a dead
        worker's claim is taken over): they project the Defense-GAN-Rec reconstructions
        together, batch by batch, and one trains the classifier while the others wait.
    """
    image_shape = train_x.shape[1:]
    if run.classifier:
        log(f"using classifier {run.classifier}")
        return load_classifier(run.classifier, image_shape=image_shape, dataset=run.dataset)
    mode = run.classifier_mode
    extra = ""
    if mode == "recs":
        extra = reconstruction_cache_key(generator, run.projection, run.seed)
    path = run.classifier_path(classifier_dir, extra)
    claims = (None if claim_timeout is None else
              Claims(os.path.join(classifier_dir, ".claims"), timeout=claim_timeout))
    cached = _cached_classifier(path, image_shape, run.dataset, log)
    if cached is not None:
        return cached
    config = ClassifierConfig(model=run.model, epochs=run.epochs,
                              adversarial_eps=run.attack.eps)
    images = train_x
    if mode == "recs":
        projector = Projector(generator, run.projection)
        images = reconstruct_dataset(
            lambda x: projector(x, seed=run.seed).reconstruction,
            train_x, cache_key=extra, cache_dir=classifier_dir, log=log,
            claim_timeout=claim_timeout)
        mse = np.mean(np.square(images - train_x).reshape(len(images), -1), axis=1)
        log(f"reconstruction MSE of the training images: mean {mse.mean():.4f}, "
            f"median {np.median(mse):.4f}, 99th percentile {np.percentile(mse, 99):.4f}")
    claim = claim_unless_ready(claims, os.path.basename(path),
                               lambda: os.path.isfile(path))
    if claim is None:  # another worker trained it meanwhile
        return _cached_classifier(path, image_shape, run.dataset, log)
    with claim:
        log(f"training classifier {run.model} on {len(images)} {mode} images "
            f"for {run.epochs} epochs")
        model = train_classifier(images, train_y, config, seed=run.seed,
                                 adversarial_eps=config.adversarial_eps
                                 if mode == "adv_tr" else None, log=log)
        os.makedirs(classifier_dir, exist_ok=True)
        save_without_optimizer(model, path)
    return model


def _cached_classifier(path: str, image_shape, dataset: str,
                       log: Callable[[str], None]) -> Optional[keras.Model]:
    """The classifier cached at ``path``, or None (absent, or unusable: trained again)."""
    if not os.path.isfile(path):
        return None
    try:
        model = load_classifier(path, image_shape=image_shape, name="cached classifier",
                                dataset=dataset)
        log(f"loaded classifier {path}")
        return model
    except InputError as e:  # a cache is rebuilt, never a reason to stop for good
        log(f"warning: {e}; training it again")
        os.remove(path)  # so that waiting workers wait for the new one
        return None
