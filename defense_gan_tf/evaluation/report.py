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
import json
import os
import platform
from typing import Optional

import numpy as np

COLUMNS = ("no attack", "no defense", "Defense-GAN-Rec", "Defense-GAN-Orig",
           "adv. training")


def versions() -> dict:
    """Package, TensorFlow, Keras and Python versions."""
    import keras
    import tensorflow as tf

    from defense_gan_tf import __version__

    return {"defense_gan_tf": __version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "python": platform.python_version()}


def write_json(path: str, payload: dict) -> str:
    """Writes ``payload`` (numpy scalars allowed) atomically."""
    def default(o):
        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=default)
        f.write("\n")
    os.replace(tmp, path)
    return path


def column_of(run: dict) -> Optional[str]:
    """Which table column a run's adversarial accuracy belongs to."""
    defense = run["settings"]["defense_type"]
    if defense == "none":
        return "no defense"
    if defense == "adv_tr":
        return "adv. training"
    if defense == "defense_gan":
        return "Defense-GAN-Rec" if run["settings"]["train_on_recs"] else "Defense-GAN-Orig"
    return None


def _cell(entry: dict) -> str:
    low, high = entry["ci95"]
    return f"{entry['accuracy']:.3f} [{low:.2f}, {high:.2f}] n={entry['n']}"


def _row_key(run: dict) -> tuple:
    s = run["settings"]
    attack = s["attack"]["attack_type"]
    detail = (f"eps {s['attack']['eps']}" if attack != "cw" else
              f"c {s['attack']['cw_initial_const']}")
    return (attack, detail, s["model"])


def whitebox_table(runs: list) -> str:
    """Markdown table (paper layout) plus the list of runs behind it."""
    rows: dict = {}
    for run in sorted(runs, key=lambda r: r.get("finished", "")):
        key = _row_key(run)
        row = rows.setdefault(key, {})
        col = column_of(run)
        if col:
            row[col] = _cell(run["result"]["adversarial"])
        if run["settings"]["defense_type"] == "none":
            row["no attack"] = _cell(run["result"]["clean"])
    lines = ["| attack | model | " + " | ".join(COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for (attack, detail, model), row in sorted(rows.items()):
        cells = [row.get(c, "") for c in COLUMNS]
        lines.append(f"| {attack} ({detail}) | {model} | " + " | ".join(cells) + " |")
    lines += ["", "Runs (latest last): settings, input-gradient norm (mean L2 over clean "
              "test images; near 0 means the attack had almost no signal), command.", ""]
    for run in sorted(runs, key=lambda r: r.get("finished", "")):
        s, r = run["settings"], run["result"]
        proj = s.get("projection") or {}
        setting = (f"L={proj.get('iterations')}, R={proj.get('restarts')}, "
                   f"gradient={s.get('gradient')}, same_init={s.get('same_init')}"
                   if s["defense_type"] == "defense_gan" else "")
        det = r.get("detection", {}).get("auc")
        lines.append(
            f"- {s['attack']['attack_type']} / model {s['model']} / {column_of(run)}: "
            f"adversarial {r['adversarial']['accuracy']:.3f}, clean {r['clean']['accuracy']:.3f}, "
            f"grad norm {r['gradient_norm_mean']:.3g}, L2 {r['l2_mean']:.3g}"
            + (f", detection AUC {det:.3f}" if det is not None else "")
            + (f"; {setting}" if setting else "")
            + f"; generator iterations {s.get('generator_iterations', 'n/a')}"
            + f"  \n  `{run['command']}`")
    return "\n".join(lines) + "\n"


def load_runs(results_dir: str, prefix: str = "whitebox_") -> list:
    """All run JSONs in ``results_dir`` whose names start with ``prefix``."""
    runs = []
    for path in sorted(glob.glob(os.path.join(results_dir, prefix + "*.json"))):
        with open(path) as f:
            runs.append(json.load(f))
    return runs


def update_whitebox_table(results_dir: str) -> str:
    """Rewrites ``results_dir/whitebox_table.md`` from every white-box run there."""
    path = os.path.join(results_dir, "whitebox_table.md")
    with open(path, "w") as f:
        f.write("# White-box results\n\n" + whitebox_table(load_runs(results_dir)))
    return path
