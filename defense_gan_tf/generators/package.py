"""Packages a trained generator for shipping: weights, sample grid, curve, manifest.

The manifest records what a user needs to trust the file: the config, how
many iterations it was trained for (and in which precision, with which warm
restarts) and for how long, on which machine, the sha256 of the weights, and
quality figures next to the real-data ceiling. The critic is shipped too
(unless the generator is final), so that training can continue from the
package when the run folder is gone; the run's ``quality.jsonl`` and its plot
go beside them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from defense_gan_tf.atomic import write_text
from defense_gan_tf import __version__, hardware, jsonio
from defense_gan_tf.config import Config, canonical_dataset_name
from defense_gan_tf.errors import InputError
from defense_gan_tf.metrics.quality import generator_quality, sample
from defense_gan_tf.generators.training_curve import (curve_table, defense_table,
                                                      plot_quality_curve)
from defense_gan_tf.training import run_history
from defense_gan_tf.training.run_files import AVERAGE_FILE, RAW_FILE, read_quality
from defense_gan_tf.plots import save_image_grid

# Each generator file's sample grid (generators/choice.py moves them with the weights).
SAMPLES_OF = {"generator.keras": "samples.png", AVERAGE_FILE: "samples_ema.png",
              RAW_FILE: "samples_raw.png"}
PACKAGE_FILES = ("generator.keras", "generator_ema.keras", RAW_FILE,
                 "critic.keras", "manifest.json", *SAMPLES_OF.values(),
                 "quality.jsonl", "quality_curve.png", "quality_curve.md",
                 "defense_figures.md", "README.md")


class PackageExistsError(FileExistsError):
    """The destination already holds a package (pass overwrite=True to replace it)."""


class AlreadyMeasured(InputError):
    """The generator file was measured with these settings already (pass overwrite=True
    to measure it again)."""


def sha256_of(path: str) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def precision_segments(warm_starts: Sequence[dict], iterations: int,
                       precision: str) -> list[dict]:
    """Which iterations trained in which precision, from the warm starts' records.

    A warm start may change the precision (the newest run's is ``precision``);
    each record names the precision before and after it. Without records the
    whole run has ``precision``.
    """
    segments, start = [], 0
    for record in warm_starts:
        if "precision" not in record:
            continue
        if record.get("previous_precision") and record["iteration"] > start:
            segments.append({"from": start, "to": int(record["iteration"]),
                             "precision": record["previous_precision"]})
        start = int(record["iteration"])
    segments.append({"from": start, "to": iterations, "precision": precision})
    merged = []
    for segment in segments:
        if merged and merged[-1]["precision"] == segment["precision"]:
            merged[-1]["to"] = segment["to"]
        else:
            merged.append(segment)
    return merged


def machine_description() -> dict:
    """CPU, cores, native bfloat16, Python, TensorFlow, Keras and package versions, GPUs."""
    return {**hardware.describe(), "keras": keras.__version__, "defense_gan_tf": __version__,
            "gpus": len(tf.config.list_physical_devices("GPU"))}


def quality_classifier(path: str, dataset: str, *, data_dir: Optional[str] = None,
                       model: str = "A", epochs: int = 3, log=None):
    """(classifier, description): the dataset's quality classifier from ``path``, or trained
    on the real training set and saved there (with ``<path>.json`` describing it) when the
    file is missing."""
    from defense_gan_tf import data
    from defense_gan_tf.config import ClassifierConfig
    from defense_gan_tf.training import train_classifier
    from defense_gan_tf.models.saving import save_without_optimizer

    description_path = path + ".json"
    if os.path.isfile(path):
        with open(description_path) as f:
            return keras.models.load_model(path), json.load(f)["description"]
    train_x, train_y = data.load_numpy(dataset, "train", data_dir=data_dir)
    val = data.load_numpy(dataset, "validation", data_dir=data_dir)
    test_x, test_y = data.load_numpy(dataset, "test", data_dir=data_dir)
    classifier = train_classifier(train_x, train_y, ClassifierConfig(model=model),
                                  epochs=epochs, validation=val, log=log)
    _, accuracy = classifier.evaluate(test_x, test_y, verbose=0)
    description = (f"model {model}, {epochs} epochs on the 50,000 training images, "
                   f"test accuracy {accuracy:.4f}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_without_optimizer(classifier, path)
    jsonio.write_json(description_path, {"description": description,
                                         "dataset": canonical_dataset_name(dataset)})
    return classifier, description


def package_generator(run_dir: str, dest_dir: str, *, classifier: keras.Model,
                      test_images: np.ndarray, reference_images: Optional[np.ndarray],
                      num_samples: int = 10_000, command: str = "",
                      classifier_description: str = "",
                      train_commands: Sequence[str] = (), overwrite: bool = False,
                      include_critic: bool = True, defense_probe=None,
                      defense_cache: Optional[str] = None,
                      deadline: Optional[float] = None, log=None) -> dict:
    """Copies ``run_dir/generator.keras`` to ``dest_dir`` with a manifest and samples.

    Args:
      run_dir: a ``bin/train.py`` output folder (config.json, progress.json,
        generator.keras).
      dest_dir: where to write ``generator.keras``, ``samples.png`` and
        ``manifest.json`` (and, with the run's averaged generator, its file, its quality
        figures and ``samples_ema.png``).
      classifier: the logits classifier the quality figures use.
      test_images: real images compared with generated ones.
      reference_images: other real images, for the real-data ceiling.
      num_samples: generated images for the quality figures.
      command: the command line that produced the package (recorded).
      classifier_description: how the classifier was trained (recorded).
      train_commands: training command lines the run did not record (those of
        before the run's ``runs`` list existed); the manifest's ``train_commands`` are
        these, then the run's own (training/run_history.py).
      overwrite: replace a package already in ``dest_dir``, and allow packaging
        a run that trained for 0 iterations.
      include_critic: copy the run's critic too, so that ``bin/train.py --warm_start``
        can continue from the package. A final generator may go without it (it is
        two thirds of the generator's size); the manifest then says so, and a warm
        start from the package is refused.
      defense_probe: optional generator -> dict (a
        :class:`~defense_gan_tf.generators.training_curve.DefenseQualityProbe`); its
        figures go into the manifest under ``defense``. It runs first, before
        ``dest_dir`` is touched.
      defense_cache, deadline, log: passed to the probe (a resumable cache folder, a
        ``time.monotonic()`` deadline, progress output).

    Returns:
      The manifest dict.

    Raises:
      FileNotFoundError: ``run_dir`` lacks one of its files.
      PackageExistsError: ``dest_dir`` holds a package and ``overwrite`` is False.
      ValueError: the run trained for 0 iterations and ``overwrite`` is False.
      BudgetExhausted: the probe's deadline passed first; ``dest_dir`` is unchanged and
        the finished batches are in ``defense_cache``.
    """
    paths, config, progress = _read_run(run_dir, overwrite)
    recorded = run_history.train_commands(  # the run's own record (ValueError if broken)
        run_history.read_runs(progress, paths["progress.json"]))
    if os.path.exists(os.path.join(dest_dir, "manifest.json")) and not overwrite:
        raise PackageExistsError(f"{dest_dir} already holds a packaged generator; pass "
                                 "overwrite to replace it")
    defense = None
    if defense_probe is not None:  # the slow part first: an interruption changes nothing
        defense = defense_probe(keras.models.load_model(paths["generator.keras"]),
                                cache_dir=defense_cache, deadline=deadline, log=log)
    weights, average, critic = _copy_files(run_dir, dest_dir, include_critic)
    curve = _copy_curve(run_dir, dest_dir, config.dataset)
    qualities = {}  # the same figures and sample grid (same z) for each generator
    for name in ("generator.keras",) + ((AVERAGE_FILE,) if average else ()):
        generator = keras.models.load_model(os.path.join(dest_dir, name))
        save_image_grid(sample(generator, 100, seed=1),
                        os.path.join(dest_dir, SAMPLES_OF[name]),
                        columns=10, pixel_range=config.model.pixel_range)
        qualities[name] = generator_quality(generator, classifier, test_images,
                                            num_samples=num_samples,
                                            reference_images=reference_images)
    manifest = _manifest(config, progress, weights=weights, average=average, critic=critic,
                         include_critic=include_critic, quality=qualities["generator.keras"],
                         average_quality=qualities.get(AVERAGE_FILE), defense=defense,
                         curve=curve, classifier_description=classifier_description,
                         command=command, train_commands=list(train_commands) + recorded)
    _write_manifest(dest_dir, manifest)
    return manifest


def _read_run(run_dir: str, overwrite: bool) -> tuple:
    """(paths of the run's files, its Config, its progress dict); refuses a folder that
    is not a training run, and (unless ``overwrite``) a run of 0 iterations."""
    paths = {name: os.path.join(run_dir, name)
             for name in ("config.json", "progress.json", "generator.keras")}
    for name, path in paths.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{run_dir} has no {name}; is it a bin/train.py folder?")
    with open(paths["config.json"]) as f:
        config = Config.from_json(f.read())
    with open(paths["progress.json"]) as f:
        progress = json.load(f)
    if int(progress.get("iteration", 0)) == 0 and not overwrite:
        raise ValueError(f"{run_dir} trained for 0 iterations; refusing to package an "
                         "untrained generator (pass overwrite to do it anyway)")
    return paths, config, progress


def _copy_files(run_dir: str, dest_dir: str, include_critic: bool) -> tuple:
    """Copies the generator, the averaged generator (when the run has one) and the critic
    (when asked and there) into ``dest_dir``, after removing every file of an earlier
    package; returns the paths (generator copy, run's average or None, run's critic or
    None)."""
    os.makedirs(dest_dir, exist_ok=True)
    for name in PACKAGE_FILES:  # No stale file of an earlier package stays behind.
        if os.path.exists(os.path.join(dest_dir, name)):
            os.remove(os.path.join(dest_dir, name))
    weights = os.path.join(dest_dir, "generator.keras")
    shutil.copyfile(os.path.join(run_dir, "generator.keras"), weights)
    average = os.path.join(run_dir, AVERAGE_FILE)
    if os.path.isfile(average):
        shutil.copyfile(average, os.path.join(dest_dir, AVERAGE_FILE))
    else:
        average = None
    critic = os.path.join(run_dir, "critic.keras")
    if include_critic and os.path.isfile(critic):
        shutil.copyfile(critic, os.path.join(dest_dir, "critic.keras"))
    else:
        critic = None
    return weights, average, critic


def _copy_curve(run_dir: str, dest_dir: str, dataset: str) -> list:
    """The run's quality entries, written to ``dest_dir`` as JSONL, plot and table."""
    curve = read_quality(os.path.join(run_dir, "quality.jsonl"))
    if curve:
        # Rewritten strictly: an entry of an older run may hold NaN or Infinity.
        jsonio.write_jsonl(os.path.join(dest_dir, "quality.jsonl"), curve)
        plot_quality_curve(curve, os.path.join(dest_dir, "quality_curve.png"),
                           title=f"{dataset} generator")
        write_text(os.path.join(dest_dir, "quality_curve.md"),
                   f"# Quality curve of the {dataset} generator (written by its "
                   "training run every quality_every iterations)\n\n" + curve_table(curve))
    return curve


def _manifest(config: Config, progress: dict, *, weights: str, average: Optional[str],
              critic: Optional[str], include_critic: bool, quality: dict,
              average_quality: Optional[dict],
              defense: Optional[dict], curve: list, classifier_description: str,
              command: str, train_commands: Sequence[str]) -> dict:
    """The package's manifest.json (see :func:`package_generator`)."""
    return {
        "dataset": config.dataset,
        "config": config.to_dict(),
        "iterations": int(progress["iteration"]),
        "paper_iterations": 200_000,
        "precision": config.gan.precision,
        "precision_segments": precision_segments(
            progress.get("warm_starts", []), int(progress["iteration"]),
            config.gan.precision),
        "train_wall_seconds": round(float(progress["total_train_seconds"]), 1),
        "eval_wall_seconds": round(float(progress.get("total_eval_seconds", 0.0)), 1),
        "warm_starts": list(progress.get("warm_starts", [])),
        "machine": machine_description(),
        "file": "generator.keras",
        "sha256": sha256_of(weights),
        "bytes": os.path.getsize(weights),
        "quality": quality,
        "defense": defense,
        "quality_classifier": classifier_description,
        "samples": "samples.png",
        "average_file": AVERAGE_FILE if average else None,
        "average_sha256": sha256_of(average) if average else None,
        "average_decay": config.gan.ema_decay if average else None,
        "average_quality": average_quality,
        "average_samples": SAMPLES_OF[AVERAGE_FILE] if average else None,
        "critic_file": "critic.keras" if critic else None,
        "critic_sha256": sha256_of(critic) if critic else None,
        "critic_note": _critic_note(critic is not None, include_critic),
        "quality_curve": "quality.jsonl" if curve else None,
        "quality_curve_last": curve[-1] if curve else None,
        "command": command,
        "train_commands": list(train_commands),
    }


def _critic_note(shipped: bool, requested: bool) -> Optional[str]:
    if shipped:
        return None
    if not requested:
        return ("critic not shipped (a final generator): bin/train.py cannot warm-start "
                "from this package")
    return "the run folder had no critic.keras"


def _write_manifest(dest_dir: str, manifest: dict) -> None:
    """The manifest, then the package's README written from it."""
    from defense_gan_tf.generators.package_readme import write_package_readme

    jsonio.write_json(os.path.join(dest_dir, "manifest.json"), manifest)
    write_package_readme(dest_dir)


def _measurement_key(settings: dict, file: str) -> str:
    """What makes two measurements of a package the same one: the file and the settings."""
    keep = ("num_images", "paper_fgsm_images", "eps", "projection", "random_sign")
    # BPDA images: absent (0) from the figures of probes without them and of older ones.
    return json.dumps({"file": file, **{k: settings.get(k) for k in keep},
                       "bpda_fgsm_images": settings.get("bpda_fgsm_images") or 0},
                      sort_keys=True)


def _strength(settings: dict) -> tuple:
    """How much a measurement measured: images, paper-style FGSM images, L and R."""
    projection = settings.get("projection") or {}
    return (settings.get("num_images") or 0, settings.get("paper_fgsm_images") or 0,
            projection.get("iterations") or 0, projection.get("restarts") or 0)


def _at_least_as_strong(new: dict, old: Optional[dict]) -> bool:
    if not old:
        return True
    a, b = new.get("settings", {}), old.get("settings", {})
    return a.get("eps") == b.get("eps") and all(
        x >= y for x, y in zip(_strength(a), _strength(b)))


def defense_measurements(manifest: dict) -> list:
    """Every Defense-GAN measurement of a package (older manifests hold one, ``defense``)."""
    if "defense_measurements" in manifest:
        return list(manifest["defense_measurements"])
    old = manifest.get("defense")
    return [dict(old, file=old.get("file", manifest.get("file", "generator.keras")))] \
        if old else []


def add_defense_figures(package_dir: str, defense_probe, *, command: str = "",
                        cache_dir: Optional[str] = None, deadline: Optional[float] = None,
                        log=None, file: Optional[str] = None,
                        overwrite: bool = False, **sharing) -> dict:
    """Measures a generator of a package with ``defense_probe`` and records the figures in
    its manifest.

    Every measurement is kept in ``defense_measurements``, keyed by the file measured and
    the probe's settings (images, L, R, epsilon): one with other settings is added beside
    the others, never in their place, and one with the same settings is measured again
    only with ``overwrite``. The headline figures under ``defense`` (what the README
    quotes) are those of the shipped ``generator.keras``; a new measurement replaces them
    only if it measured at least as many images at the same epsilon and at least the
    same L and R, or with ``overwrite``.

    The probe can take hours (500 test images at L=200, R=10); with ``cache_dir`` and a
    ``deadline`` it runs in parts, each call continuing from the batches cached by the
    last. The manifest changes only when every batch is done.

    Args:
      file: the generator file in ``package_dir`` to measure (default: the manifest's
        ``file``; an averaged generator is ``average_file``).
      sharing: the probe's ``shard`` and ``claim_timeout`` (workers sharing ``cache_dir``).

    Returns:
      The probe's figures.

    Raises:
      InputError: ``package_dir`` has no manifest.json or generator, or the generator file
        does not match the manifest's sha256.
      AlreadyMeasured: the measurement exists already (an InputError).
      BudgetExhausted: the deadline passed first (the manifest is unchanged).
    """
    manifest_path = os.path.join(package_dir, "manifest.json")
    file, weights, measured = check_measurable(
        package_dir, getattr(defense_probe, "settings", None), file=file, overwrite=overwrite)
    figures = defense_probe(keras.models.load_model(weights), cache_dir=cache_dir,
                            deadline=deadline, log=log, **sharing)
    figures["command"] = command
    # Read again: the probe takes hours, and the package may have changed meanwhile
    # (an edited manifest is kept; a replaced generator gets no figures).
    with open(manifest_path) as f:
        manifest = json.load(f)
    if measured != _recorded_sha(manifest, file) or measured != sha256_of(weights):
        raise InputError(f"{weights} changed while it was measured; its figures are not "
                         "stored (rerun to measure the new generator)")
    entry = dict(figures, file=file, sha256=measured)
    key = _measurement_key(figures.get("settings", {}), file)
    manifest["defense_measurements"] = [
        e for e in defense_measurements(manifest)
        if _measurement_key(e.get("settings", {}), e.get("file")) != key] + [entry]
    if file == manifest.get("file", "generator.keras"):
        if overwrite or _at_least_as_strong(figures, manifest.get("defense")):
            manifest["defense"] = figures
        elif log:
            log("these figures measured less than the package's headline figures "
                "(manifest 'defense'), which stay; they are kept under "
                "'defense_measurements'")
    _write_manifest(package_dir, manifest)
    return figures


def check_measurable(package_dir: str, settings=None, *, file: Optional[str] = None,
                     overwrite: bool = False) -> tuple:
    """What :func:`add_defense_figures` checks before it measures, callable before the
    (slow to build) probe exists: the package, the generator file and its sha256, and,
    given the probe's ``settings`` and not ``overwrite``, that the file was not measured
    with them already. Returns (file, its path, its sha256).

    Raises:
      InputError: no manifest.json or generator, or a file that does not match its sha256.
      AlreadyMeasured: the measurement exists already (an InputError).
    """
    manifest_path = os.path.join(package_dir, "manifest.json")
    if not os.path.isfile(manifest_path):
        raise InputError(f"{package_dir} has no manifest.json; is it a package of "
                         "bin/package_generator.py?")
    with open(manifest_path) as f:
        manifest = json.load(f)
    file = file or manifest.get("file", "generator.keras")
    weights = os.path.join(package_dir, file)
    if not os.path.isfile(weights):
        raise InputError(f"{package_dir} has no {file}")
    measured = sha256_of(weights)
    if measured != _recorded_sha(manifest, file):
        raise InputError(f"{weights} does not match the sha256 in {manifest_path}; "
                         "repackage it with bin/package_generator.py")
    if settings is not None and not overwrite:
        key = _measurement_key(jsonio.strict(dataclasses.asdict(settings)), file)
        for entry in defense_measurements(manifest):
            if _measurement_key(entry.get("settings", {}), entry.get("file")) == key \
                    and entry.get("sha256") == measured:
                raise AlreadyMeasured(f"{weights} was measured with these settings already "
                                      f"({entry.get('command', 'no command recorded')}); "
                                      "pass --overwrite to measure it again")
    return file, weights, measured


def _recorded_sha(manifest: dict, file: str) -> Optional[str]:
    if file == manifest.get("file", "generator.keras"):
        return manifest.get("sha256")
    if file == manifest.get("average_file"):
        return manifest.get("average_sha256")
    if file == manifest.get("raw_file"):
        return manifest.get("raw_sha256")
    return None


def defense_figures_markdown(manifest: dict) -> str:
    """defense_figures.md of a package: the headline figures, then every measurement."""
    parts = ["# Defense-GAN-Orig with this package's generators\n"]
    headline = manifest.get("defense")
    if headline:
        parts.append(f"## Headline ({manifest.get('file', 'generator.keras')}, quoted in the "
                     f"README)\n\n{defense_table(headline)}\nCommand: "
                     f"`{headline.get('command', '')}`\n")
    for entry in defense_measurements(manifest):
        s = entry.get("settings", {})
        projection = s.get("projection") or {}
        parts.append(f"## {entry.get('file')}: {s.get('num_images')} images, L="
                     f"{projection.get('iterations')}, R={projection.get('restarts')}\n\n"
                     f"{defense_table(entry)}\nCommand: `{entry.get('command', '')}`\n")
    return "\n".join(parts)
