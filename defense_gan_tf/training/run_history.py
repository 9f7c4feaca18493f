"""The commands that trained a run, recorded by the run itself.

Every call of :func:`~defense_gan_tf.training.train_gan` adds one entry to the ``runs``
list of ``progress.json``: its command line, how it started (afresh, by an exact resume
or by a warm start from a package), the iterations it trained, the in-run evaluations
it made and why it stopped. The entry is rewritten with every checkpoint, so a process
killed without warning leaves its last checkpoint's iteration and no stop reason. A warm
start begins the list with the package's own ``train_commands``, so the history follows
the weights from package to run to package; ``bin/package_generator.py`` turns the list
into the manifest's ``train_commands`` (one line each).
"""

from __future__ import annotations

from typing import Optional, Sequence

# Why a call stopped (TrainResult.stop_reason), in the words of a manifest line.
_STOPS = {
    "completed": "reached its train_iters",
    "time_budget": "stopped by its time budget",
    "signal": "stopped by SIGINT or SIGTERM",
    "nan": "stopped by a non-finite loss (nothing saved after its last checkpoint)",
}


def new_run(command: Optional[str], start_iteration: int, start: str,
            budget_minutes: Optional[float] = None,
            launcher: Optional[str] = None) -> dict:
    """The entry of one call, before it has trained.

    Args:
      command: its command line (None: a call from Python without one).
      start_iteration: the iteration it starts at.
      start: how it started: ``fresh``, ``resumed`` or ``warm start from <package>``.
      budget_minutes: its time budget, if any.
      launcher: the script that ran the command, if any (e.g. a leg of
        ``pretrained/train_chain.sh``).
    """
    entry = {"command": command, "start": start, "start_iteration": int(start_iteration),
             "end_iteration": int(start_iteration), "evaluated": [], "stop_reason": None}
    if budget_minutes is not None:
        entry["budget_minutes"] = budget_minutes
    if launcher:
        entry["launcher"] = launcher
    return entry


def from_package(train_commands: Sequence[str], source: str) -> list[dict]:
    """Entries for a package's recorded ``train_commands`` (kept as they were written)."""
    return [{"command": str(c), "recorded_in": source} for c in train_commands]


def read_runs(progress: dict, path: str) -> list[dict]:
    """The ``runs`` list of a progress dict read from ``path`` (``[]`` for a run folder
    written before runs were recorded); raises ValueError naming ``path`` when it is not
    a list of objects."""
    runs = progress.get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise ValueError(f"{path}: 'runs' is not a list of objects")
    return [dict(r) for r in runs]


def _iterations(values: Sequence[int]) -> str:
    values = [int(v) for v in values]
    if len(values) == 1:
        return f"the evaluation at {values[0]}"
    return "the evaluations at " + ", ".join(str(v) for v in values[:-1]) + f" and {values[-1]}"


def describe(entry: dict) -> str:
    """One manifest line for a ``runs`` entry: the command, then in brackets how it started,
    the iterations it trained with its evaluations, and how it ended."""
    if "start_iteration" not in entry:  # carried over from a package, already a line
        return str(entry.get("command"))
    command = entry.get("command") or "train_gan() called from Python"
    start, end = int(entry["start_iteration"]), int(entry["end_iteration"])
    span = f"iterations {start}-{end}"
    if entry.get("evaluated"):
        span += " with " + _iterations(entry["evaluated"])
    reason = entry.get("stop_reason")
    if reason is None:
        stop = "ended without a clean stop (killed or crashed) after its last checkpoint"
    else:
        stop = _STOPS.get(reason, f"stopped ({reason})")
        if entry.get("evaluation_left") is not None:
            stop += f" before the evaluation at {int(entry['evaluation_left'])}"
    how = {"fresh": "started afresh", "resumed": "resumed exactly"}.get(
        entry.get("start"), entry.get("start") or "how it started not recorded")
    if entry.get("budget_minutes") is not None:
        how += f", budget {entry['budget_minutes']:g} min"
    through = f"through {entry['launcher']}; " if entry.get("launcher") else ""
    return f"{command} ({through}{how}, {span}, {stop})"


def train_commands(runs: Sequence[dict]) -> list[str]:
    """The manifest lines of a run's ``runs`` list, oldest first."""
    return [describe(r) for r in runs]
