"""The README's table of headline figures, written from the files the figures live in
(the shipped packages' manifests and the committed run records), so that it cannot go
stale: ``python bin/reproduce.py --headline`` rewrites it between the README's
``<!-- headline:begin -->`` and ``<!-- headline:end -->`` marks, and a test fails when
the committed table differs from what this module writes."""

from __future__ import annotations

import glob
import json
import os
from typing import Optional

import numpy as np

BEGIN, END = "<!-- headline:begin -->", "<!-- headline:end -->"


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _fmt(entry: Optional[dict]) -> str:
    return "-" if entry is None else f"{entry['accuracy']:.3f}"


def _records(folder: str) -> list[dict]:
    return [_load(p) for p in sorted(glob.glob(os.path.join(folder, "*.json")))]


def _whitebox(root: str, table: str, *, defense: str, eps: float = 0.3) -> Optional[dict]:
    """Model A, FGSM at ``eps``, MNIST, Orig (not Rec), from one reproduction table."""
    for r in _records(os.path.join(root, "results", "reproduction", table)):
        s = r.get("settings", {})
        if (r.get("kind") == "whitebox" and s.get("model") == "A"
                and s.get("defense_type") == defense and not s.get("train_on_recs")
                and s.get("attack", {}).get("attack_type") == "fgsm"
                and s.get("attack", {}).get("eps") == eps):
            return r
    return None


def _blackbox(root: str, *, defense: str) -> Optional[dict]:
    """Black box F, substitute E, FGSM eps 0.3 (paper Table 1's headline pair)."""
    for r in _records(os.path.join(root, "results", "reproduction", "blackbox_mnist")):
        s = r.get("settings", {})
        if (s.get("model") == "F" and s.get("substitute_model") == "E"
                and s.get("defense_type") == defense and not s.get("train_on_recs")
                and s.get("attack", {}).get("eps") == 0.3):
            return r
    return None


def _generator(records: list, shipped: int, *notes: str) -> str:
    """' (n=200, 30,000-iteration generator)': the notes, then the generator of the
    Defense-GAN records a row is made of, so that a figure made with an older generator
    than the shipped one says so."""
    counts = sorted({r.get("settings", {}).get("generator_iterations") for r in records
                     if r and r.get("settings", {}).get("defense_type") == "defense_gan"}
                    - {None})
    notes = [n for n in notes if n]
    if counts:
        older = ", older than the shipped one" if any(c != shipped for c in counts) else ""
        notes.append(" / ".join(f"{c:,}" for c in counts) + f"-iteration generator{older}")
    return f" ({', '.join(notes)})" if notes else ""


def _adaptive_records(root: str) -> list[dict]:
    return [r for r in _records(os.path.join(root, "results", "adaptive"))
            if r.get("kind") == "adaptive"]


def adaptive_worst_case(root: str, norm: str = "linf",
                        records: Optional[list] = None) -> dict:
    """{budget: accuracy} of the committed adaptive cells (``records``, read from ``root``
    when not given): an image counts as robust at a budget only if every attack at that
    budget failed on it."""
    robust: dict = {}
    for r in _adaptive_records(root) if records is None else records:
        cell = r.get("result", {})
        if cell.get("norm") != norm or "correct" not in cell:
            continue
        ok = np.asarray(cell["correct"], bool)
        key = cell["budget"]
        robust[key] = ok if key not in robust else robust[key] & ok
    return {budget: float(ok.mean()) for budget, ok in sorted(robust.items())}


def headline_table(root: str) -> str:
    """The markdown table (rows: measurement, no defense, Defense-GAN, where)."""
    rows = []
    shipped = {}
    for dataset, name in (("mnist", "MNIST"), ("fashion_mnist", "Fashion-MNIST")):
        manifest = _load(os.path.join(root, "pretrained", dataset, "manifest.json"))
        figures, source = manifest.get("defense"), "test images"
        if not figures and manifest.get("quality_curve_last"):
            # Not measured on its own yet: the training run's last in-run evaluation.
            figures = manifest["quality_curve_last"]
            source = f"test images, the training run's evaluation at {figures['iteration']:,}"
        orig = (figures or {}).get("defense_gan_orig", {})
        clean, moved = orig.get("clean"), orig.get("transferred_fgsm")
        shipped[dataset] = manifest["iterations"]
        where = f"[pretrained/README.md](pretrained/README.md) (`{dataset}/manifest.json`)"
        kind = "averaged generator" if manifest.get("shipped_generator") == "average" \
            else "generator"
        rows.append((f"{name}, {manifest['iterations']:,}-iteration {kind}: clean "
                     f"({clean['n'] if clean else 0} {source})", "-", _fmt(clean), where))
        rows.append((f"{name}: FGSM made on the undefended classifier, passed through the "
                     f"projection ({moved['n'] if moved else 0} {source})", "-", _fmt(moved),
                     where))
    reproduction = "[REPRODUCTION.md](REPRODUCTION.md)"
    none = _whitebox(root, "whitebox_mnist", defense="none")
    gan = _whitebox(root, "whitebox_mnist", defense="defense_gan")
    rows.append(("MNIST: paper-style white-box FGSM, the gradient through the unrolled "
                 "projection" + _generator([gan], shipped["mnist"], gan and
                                           f"n={gan['result']['adversarial']['n']}"),
                 _fmt(none and none["result"]["adversarial"]),
                 _fmt(gan and gan["result"]["adversarial"]), reproduction))
    adaptive = _adaptive_records(root)
    worst = adaptive_worst_case(root, records=adaptive)
    if worst:
        rows.append(("MNIST: adaptive attacks, worst case at L-inf "
                     + " / ".join(f"{b:g}" for b in worst)
                     + _generator(adaptive, shipped["mnist"]), "-",
                     " / ".join(f"{a:.3f}" for a in worst.values()),
                     "[results/adaptive/README.md](results/adaptive/README.md)"))
    bb_none, bb_gan = _blackbox(root, defense="none"), _blackbox(root, defense="defense_gan")
    rows.append(("MNIST: black box F, substitute E, FGSM eps 0.3"
                 + _generator([bb_gan], shipped["mnist"]),
                 _fmt(bb_none and bb_none["result"]["adversarial"]),
                 _fmt(bb_gan and bb_gan["result"]["adversarial"]), reproduction))
    aucs, used = [], []
    for eps in (0.1, 0.2, 0.3):
        r = _whitebox(root, "detection_mnist", defense="defense_gan", eps=eps)
        if r and r["result"].get("detection"):
            aucs.append((eps, r["result"]["detection"]["auc"]))
            used.append(r)
    if aucs:
        rows.append(("MNIST: detection AUC of the reconstruction error, FGSM eps "
                     + " / ".join(f"{e:g}" for e, _ in aucs)
                     + _generator(used, shipped["mnist"]), "-",
                     " / ".join(f"{a:.3f}" for _, a in aucs), reproduction))
    lines = ["| measurement | no defense | Defense-GAN-Orig | where |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def rewrite_readme(root: str) -> bool:
    """Rewrites the table between the README's marks; True if it changed."""
    path = os.path.join(root, "README.md")
    with open(path) as f:
        text = f.read()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    new = text[:start] + "\n" + headline_table(root) + "\n" + text[end:]
    if new != text:
        from defense_gan_tf.atomic import replacing

        with replacing(path) as tmp, open(tmp, "w") as f:
            f.write(new)
    return new != text
