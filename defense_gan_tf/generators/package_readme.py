"""The README of a shipped generator package (``pretrained/<dataset>/README.md``), written
from the package's own files (``manifest.json``, ``quality.jsonl``) so that its figures
cannot go stale: ``bin/package_generator.py`` and ``bin/measure_generator.py`` rewrite it
with the package, ``python bin/reproduce.py --headline`` rewrites every package's, and a
test fails when a committed one differs from what :func:`package_readme` writes."""

from __future__ import annotations

import json
import os
from typing import Optional

from defense_gan_tf.atomic import write_text
from defense_gan_tf.training.run_files import read_quality

README = "README.md"


def _hours(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    minutes = int(round(float(seconds) / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _file_row(manifest: dict, package_dir: str, what: str, key: str) -> Optional[str]:
    name = manifest.get(key)
    if not name:
        return None
    path = os.path.join(package_dir, name)
    size = f", {os.path.getsize(path) / 1e6:.1f} MB" if os.path.isfile(path) else ""
    sha = manifest.get("sha256" if key == "file" else key.replace("_file", "_sha256"))
    return f"| {what} | `{name}`{size}, sha256 `{sha}` |"


def _summary(manifest: dict, package_dir: str) -> list:
    rows = ["| | |", "|---|---|"]
    if manifest.get("shipped_generator") == "average":  # generators/choice.py
        files = (("generator: the averaged one", "file"),
                 ("trained generator (not averaged)", "raw_file"), ("critic", "critic_file"))
    else:
        files = (("generator", "file"), ("averaged generator", "average_file"),
                 ("critic", "critic_file"))
    for what, key in files:
        row = _file_row(manifest, package_dir, what, key)
        if row:
            rows.append(row)
    if not manifest.get("critic_file") and manifest.get("critic_note"):
        rows.append(f"| critic | {manifest['critic_note']} |")
    rows.append(f"| iterations | {manifest['iterations']:,} of the paper's "
                f"{manifest.get('paper_iterations', 200_000):,} |")
    segments = manifest.get("precision_segments") or []
    if segments:
        rows.append("| precision | " + "; ".join(
            f"{s['precision']} for {s['from']:,}-{s['to']:,}" for s in segments) + " |")
    rows.append(f"| wall time | {_hours(manifest.get('train_wall_seconds'))} of training, "
                f"{_hours(manifest.get('eval_wall_seconds'))} of in-run evaluation |")
    machine = manifest.get("machine") or {}
    rows.append(f"| machine | {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
                f"native bfloat16 {'yes' if machine.get('native_bfloat16') else 'no'}, "
                f"TensorFlow {machine.get('tensorflow', '?')} |")
    for start in manifest.get("warm_starts") or []:
        rows.append(f"| warm start at {start['iteration']:,} | from `{start.get('source')}` "
                    f"({start.get('note', '')}) |")
    return rows


def _other_generator(manifest: dict) -> tuple:
    """(what, file, quality figures, sample grid) of the generator not shipped as
    generator.keras: the averaged one, or the trained one when the average is shipped."""
    if manifest.get("shipped_generator") == "average":  # generators/choice.py
        return ("trained generator (not averaged)", manifest.get("raw_file"),
                manifest.get("raw_quality"), manifest.get("raw_samples"))
    return ("averaged generator", manifest.get("average_file"),
            manifest.get("average_quality"), manifest.get("average_samples"))


def _quality(manifest: dict) -> list:
    q = manifest.get("quality") or {}
    if not q:
        return ["Not measured."]
    lines = [f"On {q.get('num_samples', 0):,} samples against {q.get('num_real', 0):,} test "
             f"images, with {manifest.get('quality_classifier') or 'classifier A'}: "
             f"classifier score **{q['classifier_score']:.2f}** (real images "
             f"{q.get('real_classifier_score', float('nan')):.2f}), Frechet distance "
             f"**{q['frechet_distance']:.2f}** (real images "
             f"{q.get('real_frechet_distance', float('nan')):.2f})."]
    what, name, other, _ = _other_generator(manifest)
    if name and other:
        lines += ["", f"The {what}, `{name}`, from the same z: classifier score "
                  f"{other['classifier_score']:.2f}, Frechet distance "
                  f"{other['frechet_distance']:.2f}."]
    return lines


def _choice(manifest: dict) -> list:
    """Why generator.keras is the raw or the averaged generator (generators/choice.py)."""
    choice = manifest.get("shipped_choice")
    if not choice:
        return []
    rows = ["| generator | images | clean | transferred FGSM |", "|---|---|---|---|"]
    for which in ("raw", "average"):
        f = choice[which]
        mark = " (shipped)" if which == choice["shipped"] else ""
        rows.append(f"| {'trained' if which == 'raw' else 'averaged'}{mark} | "
                    f"{f['num_images']:,} | {f['clean']:.3f} | {f['transferred_fgsm']:.3f} |")
    shipped = "averaged" if choice["shipped"] == "average" else "trained"
    return ["", "### Which generator is shipped", "",
            f"`generator.keras` is the {shipped} generator: {choice['rule']} (min_clean "
            f"{choice['min_clean']:g}).", "", *rows, "",
            f"Chosen with `{choice.get('command', '')}`."]


def package_readme(package_dir: str) -> str:
    """The README text of the package in ``package_dir``."""
    from defense_gan_tf.generators.training_curve import curve_table, defense_table

    with open(os.path.join(package_dir, "manifest.json")) as f:
        manifest = json.load(f)
    dataset = manifest.get("dataset", os.path.basename(os.path.normpath(package_dir)))
    lines = [f"# The shipped {dataset} generator", "",
             "Written from `manifest.json` and `quality.jsonl` by the package's tools "
             "(`python bin/reproduce.py --headline` rewrites it); do not edit.", ""]
    lines += _summary(manifest, package_dir) + ["", "## Quality", ""] + _quality(manifest)
    lines += ["", "## Defense-GAN-Orig with it", ""]
    headline = manifest.get("defense")
    if headline and isinstance(headline.get("defense_gan_orig"), dict):
        lines += [f"Of `{manifest.get('file', 'generator.keras')}` (every measurement of the "
                  "package's generators: [defense_figures.md](defense_figures.md)):", "",
                  defense_table(headline).strip(), "",
                  f"Command: `{headline.get('command', '')}`"]
    elif isinstance((manifest.get("quality_curve_last") or {}).get("defense_gan_orig"), dict):
        last = manifest["quality_curve_last"]
        lines += [f"Not measured on its own yet (`bin/measure_generator.py`). The training "
                  f"run's evaluation at {last['iteration']:,} iterations, on the first "
                  f"{last['defense_gan_orig']['clean']['n']} test images:", "",
                  defense_table(last).strip()]
        average = last.get("average")
        if manifest.get("average_file") and isinstance(
                (average or {}).get("defense_gan_orig"), dict):
            lines += ["", f"The averaged generator (`{manifest['average_file']}`) at the "
                      "same evaluation:", "",
                      defense_table(dict(average, undefended=last.get("undefended"))).strip()]
    else:
        lines += ["Not measured (`bin/measure_generator.py`)."]
    lines += _choice(manifest)
    curve = read_quality(os.path.join(package_dir, "quality.jsonl"))
    if curve:
        lines += ["", "## Quality during training", "",
                  "![quality curve](quality_curve.png)", "", curve_table(curve).strip()]
    lines += ["", "## Samples", "", f"![samples]({manifest.get('samples') or 'samples.png'})"]
    what, name, _, grid = _other_generator(manifest)
    if name and grid:
        lines += ["", f"The {what} (`{name}`), from the same z:", "",
                  f"![samples of the {what}]({grid})"]
    lines += ["", "## How it was made", ""]
    lines += [f"{k + 1}. `{c}`" for k, c in enumerate(manifest.get("train_commands") or [])]
    if manifest.get("command"):
        lines += ["", f"Packaged with `{manifest['command']}`."]
    return "\n".join(lines).rstrip() + "\n"


def write_package_readme(package_dir: str) -> bool:
    """Rewrites ``package_dir/README.md``; True if it changed."""
    path = os.path.join(package_dir, README)
    text = package_readme(package_dir)
    old = open(path).read() if os.path.isfile(path) else None
    if old != text:
        write_text(path, text)
    return old != text
