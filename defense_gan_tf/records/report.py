"""Results as data: one JSON per run, rendered into markdown tables and PNG figures.

The white-box table follows the paper's layout (Table 3): rows are attack x
classifier model, columns are no attack, no defense, Defense-GAN-Rec,
Defense-GAN-Orig and adversarial training. Every cell shows the accuracy with
its 95% Wilson interval and the number of test images; the runs behind the
table are listed underneath with their settings, gradient norms and the exact
command that produced them.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import warnings
from typing import Optional

from defense_gan_tf.atomic import write_text
from defense_gan_tf import jsonio

COLUMNS = ("no attack", "no defense", "Defense-GAN-Rec", "Defense-GAN-Orig",
           "adv. training", "MagNet", "MagNet, detected counted as defended")


def versions() -> dict:
    """Package, TensorFlow, Keras and Python versions."""
    import keras
    import tensorflow as tf

    from defense_gan_tf import __version__

    return {"defense_gan_tf": __version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "python": platform.python_version()}


def settings_id(settings: dict) -> str:
    """A short digest of a run's full settings: part of its file name, so that two
    runs that differ in any setting that can change a number are both kept."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def file_digest(path: Optional[str]) -> Optional[str]:
    """First 16 hex digits of a file's sha256 (None without a path)."""
    if not path:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def json_ready(obj):
    """``obj`` as it reads back from JSON (tuples become lists, numpy scalars numbers,
    non-finite floats None)."""
    return json.loads(jsonio.dumps(obj))


def column_of(run: dict) -> Optional[str]:
    """Which table column a run's adversarial accuracy belongs to."""
    defense = run["settings"]["defense_type"]
    if defense == "none":
        return "no defense"
    if defense == "adv_tr":
        return "adv. training"
    if defense == "defense_gan":
        return "Defense-GAN-Rec" if run["settings"]["train_on_recs"] else "Defense-GAN-Orig"
    if defense == "magnet":
        return "MagNet"
    return None


def _cell(entry: dict) -> str:
    low, high = entry["ci95"]
    return f"{entry['accuracy']:.3f} [{low:.2f}, {high:.2f}] n={entry['n']}"


def _attack_label(s: dict) -> str:
    attack = s["attack"]["attack_type"]
    detail = (f"eps {s['attack']['eps']}" if attack != "cw" else
              f"c {s['attack']['cw_initial_const']}")
    return f"{attack} ({detail})"


def _row_key(run: dict, with_dataset: bool = False) -> tuple:
    """(first cell, second cell) of the run's table row; the second names the dataset
    too when ``with_dataset`` (a folder holding runs of several datasets)."""
    s = run["settings"]
    dataset = f" ({s.get('dataset', 'mnist')})" if with_dataset else ""
    if run.get("kind") == "blackbox":
        return (f"FGSM (eps {s['attack']['eps']})",
                f"{s['model']} / {s['substitute_model']}{dataset}")
    return (_attack_label(s), s["model"] + dataset)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _run_line(run: dict, with_dataset: bool = False) -> str:
    s, r = run["settings"], run["result"]
    proj = s.get("projection") or {}
    setting = ""
    if s["defense_type"] == "defense_gan":
        setting = f"L={proj.get('iterations')}, R={proj.get('restarts')}"
        if "gradient" in s:
            setting += f", gradient={s['gradient']}, same_init={s.get('same_init')}"
        if s.get("train_on_recs") and s.get("num_train"):
            setting += f", classifier trained on {s['num_train']:,} reconstructions"
    extra = []
    if "gradient_norm_mean" in r:
        mean = r["gradient_norm_mean"]
        extra.append("grad norm " + ("-" if mean is None else f"{mean:.3g}"))
        if r.get("gradient_norm_nonfinite"):
            extra.append(f"{r['gradient_norm_nonfinite']} of {r['gradient_norm_images']} "
                         "grad norms not finite")
    if "l2_mean" in r:
        extra.append(f"L2 {r['l2_mean']:.3g}")
    if r.get("detection", {}).get("auc") is not None:
        extra.append(f"detection AUC {r['detection']['auc']:.3f}")
    if "oracle_queries" in r:
        extra.append(f"oracle queries {r['oracle_queries']}, substitute agreement "
                     f"{r['substitute_agreement'][-1]:.3f}")
    first, second = _row_key(run, with_dataset)
    return (f"- {first} / {second} / {column_of(run)}: adversarial "
            f"{r['adversarial']['accuracy']:.3f}, clean {r['clean']['accuracy']:.3f}"
            + "".join(f", {e}" for e in extra) + (f"; {setting}" if setting else "")
            + (f"; generator iterations {s['generator_iterations']}"
               if s.get("generator_iterations") is not None else "")
            + (f"; attack and evaluation took {_duration(r['seconds'])}" if "seconds" in r
               else "")
            + (f"; run {run['run_id']}" if run.get("run_id") else "")
            + f"  \n  `{run['command']}`")


def defense_tag(run: dict) -> str:
    """Short label of the settings that distinguish Defense-GAN runs in one cell.

    Projection size (L, R) and the attacker's gradient through the projection
    (full = through the unrolled loop, bpda = identity, none = masked) change the
    number a lot, so runs that differ in them are shown side by side rather than
    the latest one replacing the others; a Defense-GAN-Rec tag also names how many
    reconstructions its classifier was trained on. Empty for the other defenses.
    """
    s = run["settings"]
    if s["defense_type"] != "defense_gan":
        return ""
    proj = s.get("projection") or {}
    tag = f"L={proj.get('iterations')} R={proj.get('restarts')}"
    if "gradient" in s:
        tag += f" {s['gradient']}" + (" same-init" if s.get("same_init") else "")
    if s.get("train_on_recs") and s.get("num_train"):
        tag += f", {s['num_train']:,} recs"
    return tag


def paper_table(runs: list, first: str, second: str, reference: Optional[dict] = None) -> str:
    """Markdown table in the paper's layout plus the list of runs behind it.

    A cell holds the latest run for each distinct :func:`defense_tag` (ordered by
    L, then R), so the paper-style and adaptive Defense-GAN numbers sit next to
    each other. When runs with other settings (another generator, classifier,
    epochs...) fall in the same place, the cell shows the latest and names the
    run; all of them are listed under the table with their settings.

    ``reference`` maps a row's (first, second) cells to {column: text}: the
    published figures, shown in a row of their own, marked "(paper)", under the
    measured row (or alone when that row has no run yet).
    """
    rows: dict = {}
    ordered = sorted(runs, key=lambda r: r.get("finished", ""))
    # Runs of several datasets in one folder: each row names its dataset.
    several = len({r["settings"].get("dataset", "mnist") for r in runs}) > 1

    def put(row, col, order, cell, run):
        cell_runs = row.setdefault(col, {}).setdefault(order, {"ids": set()})
        cell_runs["ids"].add(run.get("run_id") or run.get("finished", ""))
        cell_runs["cell"] = cell
        cell_runs["latest"] = run.get("run_id")

    for run in ordered:
        row = rows.setdefault(_row_key(run, several), {})
        col = column_of(run)
        if col:
            tag = defense_tag(run)
            proj = run["settings"].get("projection") or {}
            order = (proj.get("iterations") or 0, proj.get("restarts") or 0, tag)
            cell = _cell(run["result"]["adversarial"]) + (f" ({tag})" if tag else "")
            put(row, col, order, cell, run)
        if run["settings"]["defense_type"] == "none":
            put(row, "no attack", (), _cell(run["result"]["clean"]), run)
        magnet = run["result"].get("magnet")
        if magnet:
            put(row, "MagNet, detected counted as defended", (),
                _cell(magnet["adversarial_defended_counting_detections"])
                + f" (rejects {magnet['clean_rejection_rate']:.1%} of clean)", run)

    def show(entry):
        others = len(entry["ids"]) - 1
        if others and entry["latest"]:
            return (entry["cell"] + f" [run {entry['latest']}; {others} other run(s) "
                    "with other settings listed below]")
        return entry["cell"]

    lines = [f"| {first} | {second} | " + " | ".join(COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    reference = reference or {}
    for key in sorted(set(rows) | set(reference)):
        a, b = key
        if key in rows:
            row = rows[key]
            cells = ["<br>".join(show(row[c][k]) for k in sorted(row[c])) if c in row
                     else "" for c in COLUMNS]
            lines.append(f"| {a} | {b} | " + " | ".join(cells) + " |")
        if key in reference:
            unknown = set(reference[key]) - set(COLUMNS)
            if unknown:
                raise ValueError(f"reference row {key}: unknown columns {sorted(unknown)}")
            lines.append(f"| {a} | {b} (paper) | "
                         + " | ".join(reference[key].get(c, "") for c in COLUMNS) + " |")
    lines += ["", "Runs (latest last): settings, input-gradient norm (mean L2 over clean "
              "test images; near 0 means the attack had almost no signal), command.", ""]
    lines += [_run_line(run, several) for run in ordered]
    return "\n".join(lines) + "\n"


def whitebox_table(runs: list) -> str:
    """The white-box table (paper Table 3 layout)."""
    return paper_table(runs, "attack", "model")


def blackbox_table(runs: list) -> str:
    """The black-box table (paper Tables 1-2 layout; one row per epsilon gives the sweep)."""
    return paper_table(runs, "attack", "black box / substitute")


def is_run_record(record, kind: str) -> bool:
    """Whether a loaded JSON is this package's record of a ``kind`` run."""
    return (isinstance(record, dict) and record.get("kind") == kind
            and isinstance(record.get("settings"), dict)
            and isinstance(record.get("result"), dict)
            and all(isinstance(record["result"].get(k), dict) for k in ("clean", "adversarial")))


def load_runs(results_dir: str, prefix: str = "whitebox_") -> list:
    """All run records in ``results_dir`` whose file names start with ``prefix``.

    Files that are not this package's records of that kind of run (foreign or
    unreadable JSON) are skipped with a warning, so they cannot stop a table
    from being rebuilt.
    """
    return [record for _, record in load_run_files(results_dir, prefix)]


def load_run_files(results_dir: str, prefix: str = "whitebox_") -> list:
    """[(path, record)] of :func:`load_runs`, skipping the same files."""
    kind = prefix.rstrip("_")
    runs = []
    for path in sorted(glob.glob(os.path.join(results_dir, prefix + "*.json"))):
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError) as e:
            warnings.warn(f"skipping {path}: not readable JSON ({e})")
            continue
        if not is_run_record(record, kind):
            warnings.warn(f"skipping {path}: not a {kind} run record of this package")
            continue
        runs.append((path, record))
    return runs


def update_table(results_dir: str, kind: str = "whitebox") -> str:
    """Rewrites ``results_dir/<kind>_table.md`` from every run of that kind there."""
    path = os.path.join(results_dir, f"{kind}_table.md")
    runs = load_runs(results_dir, prefix=f"{kind}_")
    body = whitebox_table(runs) if kind == "whitebox" else blackbox_table(runs)
    title = "White-box" if kind == "whitebox" else "Black-box"
    return write_text(path, f"# {title} results\n\n" + body)
