"""Which of a package's two generators is shipped as ``generator.keras``: the one trained
(raw) or the exponential moving average of its weights (Yazici et al. 2019), whichever
defends better on the package's measured figures (paper section 3.3: Defense-GAN is only
as good as the range of its G).

The rule: among the generators whose clean accuracy through Defense-GAN-Orig reaches
``min_clean`` (0.98 MNIST, 0.85 Fashion-MNIST), the higher accuracy on FGSM images made
on the undefended classifier (the transferred attack); ties keep the raw generator. If
neither reaches ``min_clean``, the one with the higher clean accuracy. Both must have
been measured by ``bin/measure_generator.py`` on at least ``num_images`` test images at
the package's L and R.

When the averaged generator wins, ``generator.keras`` becomes the average and the raw
generator moves to ``generator_raw.keras`` (training continues from it: warm starts read
the manifest's ``raw_file``); the manifest's ``shipped_generator`` says which it is and
``shipped_choice`` holds the figures the choice was made on. Every measurement follows its
weights (by sha256) to the new file name, and so do each generator's quality figures
(``quality`` is the shipped one's) and sample grid (``samples.png`` is the shipped one's).
"""

from __future__ import annotations

import json
import os
from typing import Optional

from defense_gan_tf.errors import InputError
from defense_gan_tf.generators.package import (SAMPLES_OF, _write_manifest,
                                               defense_measurements, sha256_of)
from defense_gan_tf.training.run_files import AVERAGE_FILE, GENERATOR_FILE, RAW_FILE

MIN_CLEAN = {"mnist": 0.98, "fashion_mnist": 0.85}


def files_of(manifest: dict) -> dict:
    """{'raw': (file, sha256), 'average': (file, sha256) or None} of a package."""
    shipped = manifest.get("file", GENERATOR_FILE)
    raw = (manifest.get("raw_file") or shipped,
           manifest.get("raw_sha256") or manifest.get("sha256"))
    average = manifest.get("average_file")
    return {"raw": raw,
            "average": (average, manifest.get("average_sha256")) if average else None}


def _best_measurement(manifest: dict, sha: str, num_images: int, eps: float) -> \
        Optional[dict]:
    """The measurement of the weights with ``sha`` with the most images, of at least
    ``num_images`` at the package's L and R and at ``eps``."""
    projection = (manifest.get("config") or {}).get("projection") or {}
    found = []
    for entry in defense_measurements(manifest):
        s = entry.get("settings") or {}
        p = s.get("projection") or {}
        if (entry.get("sha256") == sha and (s.get("num_images") or 0) >= num_images
                and s.get("eps") == eps
                and p.get("iterations") == projection.get("iterations")
                and p.get("restarts") == projection.get("restarts")):
            found.append(entry)
    return max(found, key=lambda e: e["settings"]["num_images"], default=None)


def _figures(entry: dict) -> dict:
    orig = entry["defense_gan_orig"]
    return {"clean": orig["clean"]["accuracy"],
            "transferred_fgsm": orig["transferred_fgsm"]["accuracy"],
            "num_images": entry["settings"]["num_images"], "command": entry.get("command")}


def decide(figures: dict, min_clean: float) -> str:
    """'raw' or 'average' from {'raw': {clean, transferred_fgsm}, 'average': {...}}."""
    eligible = [k for k in ("raw", "average") if figures[k]["clean"] >= min_clean]
    if not eligible:
        return max(("raw", "average"), key=lambda k: (figures[k]["clean"], k == "raw"))
    return max(eligible, key=lambda k: (figures[k]["transferred_fgsm"], k == "raw"))


def choose_shipped_generator(package_dir: str, *, min_clean: Optional[float] = None,
                             num_images: int = 500, eps: float = 0.3,
                             command: str = "") -> dict:
    """Ships the better of the package's raw and averaged generators as generator.keras.

    Args:
      package_dir: a package of ``bin/package_generator.py`` with an averaged generator,
        both generators measured.
      min_clean: the clean accuracy a generator must keep (default: MIN_CLEAN of the
        package's dataset).
      num_images, eps: the measurements that count (at least this many images, at the
        package's L and R).

    Returns:
      The manifest's new ``shipped_choice``.

    Raises:
      InputError: no manifest, no averaged generator, a generator not measured, or a file
        that does not match its sha256.
    """
    path = os.path.join(package_dir, "manifest.json")
    if not os.path.isfile(path):
        raise InputError(f"{package_dir} has no manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    manifest["defense_measurements"] = defense_measurements(manifest)  # older manifests
    files = files_of(manifest)
    if files["average"] is None:
        raise InputError(f"{package_dir} has no averaged generator to choose from")
    for name, sha in files.values():
        if sha256_of(os.path.join(package_dir, name)) != sha:
            raise InputError(f"{os.path.join(package_dir, name)} does not match the sha256 "
                             f"in {path}")
    if min_clean is None:
        min_clean = MIN_CLEAN.get(manifest.get("dataset"), 0.0)
    figures = {}
    for which, (name, sha) in files.items():
        entry = _best_measurement(manifest, sha, num_images, eps)
        if entry is None:
            raise InputError(
                f"{os.path.join(package_dir, name)} ({which} generator) has no measurement "
                f"of at least {num_images} images at eps {eps} and the package's L and R: "
                f"run bin/measure_generator.py --generator_file={name} first")
        figures[which] = _figures(entry)
    which = decide(figures, min_clean)
    _place(package_dir, manifest, files, which, eps)
    choice = {"shipped": which, "min_clean": min_clean, "num_images": num_images, "eps": eps,
              "rule": "the higher transferred-FGSM accuracy among the generators whose "
                      "clean accuracy reaches min_clean (ties: raw); if neither does, the "
                      "higher clean accuracy",
              "raw": figures["raw"], "average": figures["average"], "command": command}
    manifest["shipped_generator"] = which
    manifest["shipped_choice"] = choice
    _write_manifest(package_dir, manifest)
    return choice


def _rename(package_dir: str, moves: dict) -> None:
    """Renames files {old name: new name} of ``package_dir``, through temporary names
    because two files may swap; a name that is not there is left out."""
    moves = {old: new for old, new in moves.items()
             if old != new and os.path.isfile(os.path.join(package_dir, old))}
    for old in moves:
        os.replace(os.path.join(package_dir, old), os.path.join(package_dir, old + ".choosing"))
    for old, new in moves.items():
        os.replace(os.path.join(package_dir, old + ".choosing"), os.path.join(package_dir, new))


def _place(package_dir: str, manifest: dict, files: dict, which: str, eps: float) -> None:
    """Renames the files so that ``which`` is generator.keras, moves each generator's
    sample grid and quality figures with it, and points the manifest's file names, hashes
    and measurements at the new names."""
    (raw, raw_sha), (average, average_sha) = files["raw"], files["average"]
    if which == "average":
        names = {raw_sha: RAW_FILE, average_sha: GENERATOR_FILE}
    else:
        names = {raw_sha: GENERATOR_FILE, average_sha: AVERAGE_FILE}
    # Before the first choice, generator.keras is the raw generator with "quality" and
    # "samples"; the averaged one has "average_quality" and "average_samples". Either may
    # be None (a package that never measured the averaged generator's quality).
    quality = {raw_sha: manifest.get("raw_quality") or manifest.get("quality"),
               average_sha: manifest.get("average_quality")}
    grids = {raw_sha: manifest.get("raw_samples") or manifest.get("samples"),
             average_sha: manifest.get("average_samples")}
    _rename(package_dir, {raw: names[raw_sha], average: names[average_sha]})
    _rename(package_dir, {grid: SAMPLES_OF[names[sha]] for sha, grid in grids.items() if grid})
    grids = {sha: SAMPLES_OF[names[sha]] if grid else None for sha, grid in grids.items()}
    shipped_sha = average_sha if which == "average" else raw_sha
    manifest.update({
        "file": GENERATOR_FILE, "sha256": shipped_sha,
        "bytes": os.path.getsize(os.path.join(package_dir, GENERATOR_FILE)),
        "raw_file": names[raw_sha], "raw_sha256": raw_sha,
        "average_file": names[average_sha], "average_sha256": average_sha,
        "quality": quality[shipped_sha], "raw_quality": quality[raw_sha],
        "average_quality": quality[average_sha],
        "samples": grids[shipped_sha], "raw_samples": grids[raw_sha],
        "average_samples": grids[average_sha]})
    for entry in manifest["defense_measurements"]:
        if entry.get("sha256") in names:
            entry["file"] = names[entry["sha256"]]
    # The headline figures are the shipped generator's (its largest measurement).
    manifest["defense"] = _best_measurement(manifest, shipped_sha, 0, eps)
