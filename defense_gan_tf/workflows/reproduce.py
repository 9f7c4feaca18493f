"""The paper's tables as lists of runs, run resumably (``bin/reproduce.py``).

Each table is a list of cells; a cell is one white-box or black-box run through the
existing workflows. A cell whose run record already exists in the results folder
with the same settings is skipped, so a table resumes after an interruption and
across days; one recorded in another table's folder is copied from there (a run two
tables share is made once); the table's markdown is rebuilt from all records after
each cell.

Tables (paper section 4; Samangouei et al. 2018):
  whitebox_mnist      Tables 3/4 layout: models A-D x FGSM eps 0.3, RAND+FGSM, CW-L2 x
                      no defense, Defense-GAN-Orig, Defense-GAN-Rec, FGSM adversarial
                      training, MagNet
  blackbox_mnist      Tables 1/2 layout: black box / substitute A/E, B/E, C/E, D/E, F/E,
                      A/B x the same defenses, FGSM eps 0.3
  blackbox_eps_mnist  the epsilon sweep 0.1-0.3 for F/E
  detection_mnist     Figure 4: detection ROC of FGSM eps 0.1, 0.2, 0.3 (model A)
  whitebox_fmnist, blackbox_fmnist   Fashion-MNIST: model A, and F/E
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import time
from typing import Callable, NamedTuple, Optional

from defense_gan_tf.atomic import write_text
from defense_gan_tf.config import AttackConfig, projection_preset
from defense_gan_tf.console import echo
from defense_gan_tf.errors import ConfigError
from defense_gan_tf.records import report
from defense_gan_tf.records.runs import RunSpec, flat_settings
from defense_gan_tf.records.specs import BlackboxRun, WhiteboxRun
from defense_gan_tf.measured import measured_cost
from defense_gan_tf.sharding import CLAIM_TIMEOUT_SECONDS, Claims, Shard, share_summary

TABLES = ("whitebox_mnist", "blackbox_mnist", "blackbox_eps_mnist", "detection_mnist",
          "whitebox_fmnist", "blackbox_fmnist")

# Machine costs, with where each was measured: defense_gan_tf/measured_costs.json.
SECONDS_PER_PAPER_PROJECTION = measured_cost("seconds_per_paper_projection")
SECONDS_PER_CLASSIFIER_EPOCH = {model: tuple(pair) for model, pair in
                                measured_cost("seconds_per_classifier_epoch").items()}
PROJECTIONS_PER_GRADIENT = measured_cost("projections_per_gradient")
SECONDS_PER_ORACLE_QUERY_FACTOR = measured_cost("oracle_query_factor")


def epoch_seconds(model: str, adversarial: bool) -> float:
    """Estimated seconds of one training epoch of ``model`` on 50,000 images."""
    plain, adv = SECONDS_PER_CLASSIFIER_EPOCH.get(model, SECONDS_PER_CLASSIFIER_EPOCH["A"])
    return adv if adversarial else plain


@dataclasses.dataclass(frozen=True)
class TableSettings:
    """What every cell of a table shares.

    Attributes:
      num_tests: test images per undefended cell; Defense-GAN cells use
        ``defense_gan_tests`` (projections are the cost).
      projection: ``paper`` or ``fast`` (named in every cell that uses it).
      generator, magnet, classifier_epochs, rec_train: the generator file, MagNet
        folder, classifier epochs (the paper: 10) and the training images the
        Defense-GAN-Rec classifier is trained on (reconstructions, cached).
    """

    num_tests: int = 500
    defense_gan_tests: int = 200
    projection: str = "paper"
    generator: str = "pretrained/mnist/generator.keras"
    magnet: Optional[str] = "pretrained/mnist/magnet"
    classifier_epochs: int = 10
    rec_train: int = 10_000
    seed: int = 0

    def __post_init__(self):
        for name in ("num_tests", "defense_gan_tests", "classifier_epochs", "rec_train"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"{name} must be >= 1, got {getattr(self, name)}")
        projection_preset(self.projection)  # a known preset


class Cell(NamedTuple):
    """One run of a table: ``kind`` (whitebox / blackbox), its run and its estimated cost."""

    kind: str
    run: object
    label: str
    estimate_seconds: float


def _dataset_of(table: str) -> str:
    return "fashion_mnist" if table.endswith("fmnist") else "mnist"


def _spec(s: TableSettings, dataset: str, model: str, defense: str, attack: AttackConfig,
          *, rec: bool = False, black_box: bool = False) -> RunSpec:
    gan = defense == "defense_gan"
    return RunSpec(
        dataset=dataset, model=model, defense_type=defense, train_on_recs=rec, attack=attack,
        projection=projection_preset(s.projection, dataset),
        num_tests=s.defense_gan_tests if gan else s.num_tests,
        num_train=s.rec_train if rec else 50_000, epochs=s.classifier_epochs, seed=s.seed,
        batch_size=(10 if gan else 100) if not black_box else 100,
        generator=s.generator if (gan or rec) else None,
        magnet=s.magnet if defense == "magnet" else None)


_DEFENSES = (("none", False), ("defense_gan", False), ("defense_gan", True), ("adv_tr", False),
             ("magnet", False))


def _estimate(spec: RunSpec, attack_steps: int, queries: int = 0,
              reconstruct: bool = True, train: bool = True, black_box: bool = False,
              substitute_cached: bool = False, reconstructed: int = 0) -> float:
    """Seconds: projections of test images (and attack steps through them), oracle queries,
    the Rec classifier's reconstructions (cached after the first; ``reconstructed`` of
    them kept by an interrupted run), classifier training
    (``train``: the first cell of a table with this classifier; later ones load it).

    A black-box cell (``black_box``) pays its ``queries`` and the oracle's clean test labels
    unless an earlier cell at another epsilon trained its substitute
    (``substitute_cached``); then only the adversarial images are labelled."""
    proj = spec.projection
    work = sum((end - start) * r for start, end, r in proj.restart_schedule) / 2000.0
    per_projection = SECONDS_PER_PAPER_PROJECTION * work
    seconds = 0.0
    if train:
        epoch = epoch_seconds(spec.model, spec.defense_type == "adv_tr")
        seconds += spec.epochs * epoch * spec.num_train / 50_000
    if spec.defense_type == "defense_gan":
        # a black-box oracle: its queries and test images at the oracle's cost
        oracle = SECONDS_PER_ORACLE_QUERY_FACTOR if black_box else 1.0
        passes = 1 if substitute_cached else 2
        seconds += spec.num_tests * per_projection * oracle * (
            passes + PROJECTIONS_PER_GRADIENT * attack_steps)
        if not substitute_cached:
            seconds += queries * per_projection * oracle
    if spec.train_on_recs and reconstruct:
        seconds += (max(0, spec.num_train - reconstructed) * per_projection
                    * SECONDS_PER_ORACLE_QUERY_FACTOR)
    return seconds


def _cached_classifier(spec: RunSpec, classifier_dir: Optional[str]) -> bool:
    """Whether the classifier ``spec`` trains is in ``classifier_dir`` already (a
    Defense-GAN-Rec one is keyed by the generator too: not looked up, counted as
    training)."""
    if classifier_dir is None or spec.classifier or spec.train_on_recs:
        return False
    return os.path.isfile(spec.classifier_path(classifier_dir))


def cells(table: str, settings: Optional[TableSettings] = None,
          classifier_dir: Optional[str] = None,
          rec_cached: Optional[Callable[[RunSpec], tuple]] = None,
          substitute_status: Optional[Callable[[BlackboxRun], tuple]] = None,
          pending: Optional[Callable[[list], list]] = None) -> list:
    """The cells of ``table`` (one of :data:`TABLES`); estimates leave out training a
    classifier found in ``classifier_dir``, for a Defense-GAN-Rec cell what
    ``rec_cached(spec)`` -> (classifier cached, reconstructions cached, reconstructions
    an interrupted run kept) says is done (asked only of cells that will run)
    (:func:`~defense_gan_tf.records.loading.rec_cache_status`; without it, the first
    Rec cell pays the reconstructions and every Rec cell its classifier), and for a
    black-box cell what ``substitute_status(run)`` -> (substitute cached, oracle labels
    kept by an interrupted training) says is done (likewise)
    (:func:`~defense_gan_tf.workflows.blackbox_run.substitute_cache_status`).

    Costs cells share (a classifier's training, the reconstructions, a substitute) are
    charged to the first cell, in table order, that will run: ``pending(cells)`` -> one
    flag per cell says which will (e.g. :func:`pending_cells`: selected, not done; default
    all). A cell that will not run is estimated as if run next, without taking the shared
    costs from the cells after it."""
    if table not in TABLES:
        raise ConfigError("table", f"unknown table {table!r}; expected one of {list(TABLES)}")
    s = settings or TableSettings()
    dataset = _dataset_of(table)
    first_rec = [True]  # the training-set reconstructions are computed once, then cached
    trained = set()  # classifiers trained by an earlier cell (cached, then loaded)
    substitutes = set()  # black-box substitutes trained by an earlier cell at another eps

    def estimate(spec, steps, queries=0, substitute=None, run=None, runs=True):
        # the cache file names the classifier: an adversarially trained one per epsilon
        classifier = spec.classifier_path("")
        # The caches are asked about only for a cell that will run (the lookups load
        # models and data): one that will not is estimated with nothing cached.
        rec_classifier, recs, kept = (rec_cached(spec) if runs and spec.train_on_recs
                                      and rec_cached else (False, False, 0))
        on_disk, labelled = (substitute_status(run) if runs and run is not None
                             and substitute_status else (False, 0))
        seconds = _estimate(spec, steps, max(0, queries - labelled),
                            reconstruct=first_rec[0] and not recs, reconstructed=kept,
                            train=classifier not in trained and not rec_classifier and
                            not _cached_classifier(spec, classifier_dir),
                            black_box=substitute is not None,
                            substitute_cached=substitute in substitutes or on_disk)
        if runs:
            if substitute is not None:
                substitutes.add(substitute)
            trained.add(classifier)
            if spec.train_on_recs:
                first_rec[0] = False
        return seconds

    layout = _whitebox_layout if table.startswith("whitebox") or \
        table == "detection_mnist" else _blackbox_layout
    return _estimated(layout(table, s, dataset), estimate, pending)


def _whitebox_layout(table: str, s: TableSettings, dataset: str) -> list:
    """[(cell without its estimate, the estimate's arguments)] of a white-box table
    (attack x model, by defense) or of the detection table (FGSM at three epsilons)."""
    models = ("A",) if table != "whitebox_mnist" else ("A", "B", "C", "D")
    attacks = [AttackConfig(attack_type="fgsm", eps=0.3),
               AttackConfig(attack_type="rand_fgsm", eps=0.3, alpha=0.05),
               AttackConfig(attack_type="cw")]
    defenses = _DEFENSES
    if table == "detection_mnist":
        attacks = [AttackConfig(attack_type="fgsm", eps=e) for e in (0.1, 0.2, 0.3)]
        defenses = (("defense_gan", False),)
    laid_out = []
    for model in models:
        for attack in attacks:
            for defense, rec in defenses:
                if defense == "magnet" and not s.magnet:
                    continue
                spec = _spec(s, dataset, model, defense, attack, rec=rec)
                steps = 100 if attack.attack_type == "cw" else 1
                run = WhiteboxRun(spec=spec, gradient="full")
                eps = f" eps {attack.eps:g}" if table == "detection_mnist" else ""
                laid_out.append((Cell("whitebox", run, f"{attack.attack_type} {model} "
                                      f"{defense}{' rec' if rec else ''}{eps}", 0.0),
                                 dict(spec=spec, steps=steps)))
    return laid_out


def _blackbox_layout(table: str, s: TableSettings, dataset: str) -> list:
    """[(cell without its estimate, the estimate's arguments)] of a black-box table:
    black box / substitute pairs, by epsilon, by defense."""
    pairs = {"blackbox_mnist": (("A", "E"), ("B", "E"), ("C", "E"), ("D", "E"), ("F", "E"),
                                ("A", "B")),
             "blackbox_eps_mnist": (("F", "E"),), "blackbox_fmnist": (("F", "E"),)}[table]
    epsilons = (0.1, 0.15, 0.2, 0.25, 0.3) if table == "blackbox_eps_mnist" else (0.3,)
    laid_out = []
    for model, substitute in pairs:
        for eps in epsilons:
            for defense, rec in _DEFENSES:
                if defense == "magnet" and not s.magnet:
                    continue
                spec = _spec(s, dataset, model, defense, AttackConfig(eps=eps), rec=rec,
                             black_box=True)
                run = BlackboxRun(spec=spec, substitute_model=substitute)
                laid_out.append((Cell("blackbox", run, f"{model}/{substitute} eps {eps} "
                                      f"{defense}{' rec' if rec else ''}", 0.0),
                                 dict(spec=spec, steps=0, queries=150 * 2 ** 5,
                                      substitute=(model, substitute, defense, rec),
                                      run=run)))
    return laid_out


def _estimated(laid_out: list, estimate: Callable, pending: Optional[Callable]) -> list:
    """The cells with their estimates, made in table order; only a cell ``pending`` flags
    takes the costs it shares with later cells."""
    bare = [cell for cell, _ in laid_out]
    runs = pending(bare) if pending is not None else [True] * len(bare)
    if len(runs) != len(bare):
        raise ValueError(f"pending gave {len(runs)} flags for {len(bare)} cells")
    return [cell._replace(estimate_seconds=estimate(**args, runs=bool(r)))
            for (cell, args), r in zip(laid_out, runs)]


DEFENSE_KEYS = ("none", "defense_gan", "defense_gan_rec", "adv_tr", "magnet")
ATTACK_KEYS = ("fgsm", "rand_fgsm", "cw")


def cell_keys(cell: Cell) -> tuple:
    """(model, defense, attack) of a cell, as :func:`select` matches them: the model is the
    defended (black-box: attacked) classifier, the defense one of :data:`DEFENSE_KEYS`."""
    spec = cell.run.spec
    defense = spec.defense_type + ("_rec" if spec.train_on_recs else "")
    return spec.model, defense, spec.attack.attack_type


def select(cell_list: list, *, models=None, defenses=None, attacks=None) -> list:
    """The cells whose model, defense and attack are in the given lists (None: any), in
    table order; so that the most informative or the cheapest cells can be filled first.

    Raises:
      ValueError: naming the argument, for a value no cell of any table can have.
    """
    for name, given, known in (("defenses", defenses, DEFENSE_KEYS),
                               ("attacks", attacks, ATTACK_KEYS)):
        unknown = sorted(set(given or ()) - set(known))
        if unknown:
            raise ValueError(f"{name}: unknown {unknown}; expected some of {list(known)}")
    wanted = (models, defenses, attacks)
    return [c for c in cell_list
            if all(w is None or k in w for k, w in zip(cell_keys(c), wanted))]


def pending_cells(results_dir: Optional[str] = None, **chosen) -> Callable[[list], list]:
    """For :func:`cells` ``pending``: flags the cells a run of ``results_dir``'s table
    would make: chosen (``models`` / ``defenses`` / ``attacks`` as for :func:`select`),
    not recorded there, not recorded in another table's folder (copied, not run).

    Raises:
      ValueError: as :func:`select`, at once.
    """
    select([], **chosen)  # unknown names fail here, not inside cells()

    def flags(cell_list):
        picked = {id(c) for c in select(cell_list, **chosen)}
        if results_dir is None:
            return [id(c) in picked for c in cell_list]
        done = done_flags(cell_list, results_dir)
        elsewhere = sources_elsewhere(cell_list, results_dir)
        return [id(c) in picked and not d and not e
                for c, d, e in zip(cell_list, done, elsewhere)]
    return flags


def _comparable(settings: dict) -> dict:
    return {k: v for k, v in settings.items()
            if k not in ("generator_iterations", "generator_sha", "classifier_sha",
                         "magnet_sha")}


def _settings_of(cell: Cell) -> dict:
    """The cell's settings as its record would hold them, for comparison."""
    return _comparable(report.json_ready(flat_settings(cell.run)))


def done_flags(cell_list: list, results_dir: str) -> list:
    """Per cell, whether a record with its settings exists in ``results_dir`` (the
    records are read once for the whole list)."""
    recorded = {kind: [_comparable(r["settings"]) for r in
                       report.load_runs(results_dir, prefix=f"{kind}_")]
                for kind in {c.kind for c in cell_list}}
    return [_settings_of(c) in recorded[c.kind] for c in cell_list]


def is_done(cell: Cell, results_dir: str) -> bool:
    """Whether a record with the cell's settings exists in ``results_dir``."""
    return done_flags([cell], results_dir)[0]


def sources_elsewhere(cell_list: list, results_dir: str) -> list:
    """Per cell, the path of a record with its settings in another table's folder beside
    ``results_dir`` (a run two tables share: FGSM eps 0.3 through Defense-GAN on model A
    is a white-box cell and a point of the detection figure), or None; the records are
    read once for the whole list."""
    here = os.path.normpath(os.path.abspath(results_dir))
    others = [f for f in sorted(glob.glob(os.path.join(os.path.dirname(here), "*", "")))
              if os.path.normpath(f) != here]
    recorded = {kind: [(path, _comparable(r["settings"])) for folder in others
                       for path, r in report.load_run_files(folder, prefix=f"{kind}_")]
                for kind in {c.kind for c in cell_list}}
    wanted = [_settings_of(c) for c in cell_list]
    return [next((path for path, s in recorded[c.kind] if s == w), None)
            for c, w in zip(cell_list, wanted)]


def recorded_elsewhere(cell: Cell, results_dir: str) -> Optional[str]:
    """:func:`sources_elsewhere` of one cell."""
    return sources_elsewhere([cell], results_dir)[0]


def copy_record(path: str, results_dir: str, kind: str) -> list:
    """Copies the record at ``path`` and its figures (the files named after it) into
    ``results_dir`` and rebuilds that folder's table; returns the copied paths. The
    record keeps the command that made it."""
    os.makedirs(results_dir, exist_ok=True)
    stem = os.path.splitext(path)[0]
    copied = []
    for source in sorted(glob.glob(glob.escape(stem) + "*")):
        target = os.path.join(results_dir, os.path.basename(source))
        shutil.copy2(source, target)
        copied.append(target)
    report.update_table(results_dir, kind)
    return copied


class CellOutcome(NamedTuple):
    """What :func:`run_table` did with a cell: ``done_before`` True (recorded already, or
    copied from another table), False (run now, in ``seconds``), or None (left to the
    worker that holds its claim)."""

    cell: Cell
    done_before: Optional[bool]
    seconds: float


def claim_name(cell: Cell) -> str:
    """The name of a cell's claim: its kind and a digest of its settings."""
    settings = json.dumps(_settings_of(cell), sort_keys=True, default=str)
    return f"{cell.kind}_{hashlib.sha256(settings.encode()).hexdigest()[:20]}"


def claims_folder(results_dir: str) -> str:
    """Where the workers filling one table claim its cells."""
    return os.path.join(results_dir, ".claims")


def run_table(table: str, settings: TableSettings, *, results_dir: str, classifier_dir: str,
              data_dir: Optional[str] = None, command: str = "", dry_run: bool = False,
              log: Callable[[str], None] = echo, cell_list: Optional[list] = None,
              train_data=None, test_data=None,
              time_budget_seconds: Optional[float] = None, shard: Optional[Shard] = None,
              claim_timeout: float = CLAIM_TIMEOUT_SECONDS) -> list:
    """Runs the cells of ``table`` not yet done, with progress and an estimate of the time
    left; returns a :class:`CellOutcome` per cell handled (with ``dry_run`` nothing runs).
    A cell recorded in another table's folder beside ``results_dir`` is copied from there
    (:func:`sources_elsewhere`) and counts as done before.

    Several workers may fill one table at once (``shard``; one machine or many sharing
    ``results_dir`` and ``classifier_dir``): each takes its share of the cells first,
    then the others' (see :mod:`defense_gan_tf.sharding`). A black-box cell is claimed
    whole and left to the worker that holds it; a white-box cell, which can run for a
    day, is shared: the workers that reach it split its batches. ``cell_list`` replaces the table's cells (a :func:`select`
    of them); ``train_data`` and ``test_data`` replace the loaded splits (test seam). With
    ``time_budget_seconds`` no cell starts after that long: the cells not reached are
    left out of the returned list (a rerun picks them up, since done cells are skipped).
    """
    todo = cell_list if cell_list is not None else cells(table, settings)
    done = done_flags(todo, results_dir)
    # A cell another table has run already is copied from there, not run again.
    elsewhere = [None if d else source
                 for d, source in zip(done, sources_elsewhere(todo, results_dir))]
    pending = [None if (d or e) else c.estimate_seconds
               for c, d, e in zip(todo, done, elsewhere)]
    log(f"{table}: {len(todo)} cells, {sum(done)} done, about "
        f"{sum(filter(None, pending)) / 3600:.1f} h left (estimate)")
    shard = shard or Shard()
    if shard.count > 1:
        for other, n, seconds in share_summary(shard.count, pending):
            log(f"  shard {other}: {n} cell(s) to run, about {seconds / 3600:.1f} h"
                + (" (this worker)" if other == shard else ""))
    claims = Claims(claims_folder(results_dir), timeout=claim_timeout)
    clock = _Clock(time.monotonic(), time_budget_seconds)
    out, order = [], shard.order(len(todo))
    for k, i in enumerate(order):
        cell, source = todo[i], elsewhere[i]
        later = [p for p in order[k + 1:] if pending[p] is not None]
        _say_cell(log, i, todo, done[i], source, dry_run)
        if done[i] or dry_run or source:
            if source and not dry_run:
                copy_record(source, results_dir, cell.kind)
            out.append(CellOutcome(cell, done[i] or bool(source and not dry_run), 0.0))
            continue
        if clock.spent():
            log(f"  time budget spent: {len(later) + 1} cell(s) not started; run the same "
                "command again to continue")
            break
        kwargs = dict(results_dir=results_dir, classifier_dir=classifier_dir,
                      data_dir=data_dir, command=command, log=log, train_data=train_data,
                      test_data=test_data)
        if cell.kind == "whitebox":  # its finished batches, for a cell cut short
            kwargs["cache_dir"] = os.path.join(classifier_dir, "whitebox_batches")
        if cell.kind == "whitebox" and shard.count > 1:  # workers share it by batches
            out.append(_run_shared(cell, results_dir, log, dict(
                kwargs, shard=shard, claim_timeout=claim_timeout)))
        else:
            out.append(_run_claimed(cell, claims, results_dir, log, kwargs))
        if out[-1].done_before is False:
            clock.count(cell.estimate_seconds)
            left = clock.rate() * sum(pending[p] for p in later)
            log(f"  finished {cell.label} in {out[-1].seconds / 60:.1f} min; about "
                f"{left / 3600:.1f} h left")
    return out


class _Clock:
    """A table run's time: the budget, and actual over estimated seconds of the cells
    run (1 until the estimates behind it are worth a minute: cells of a cached
    undefended classifier are estimated at nearly nothing)."""

    def __init__(self, start: float, budget: Optional[float]):
        self.start, self.budget, self.estimates = start, budget, 0.0

    def spent(self) -> bool:
        return self.budget is not None and time.monotonic() - self.start > self.budget

    def count(self, estimate: float) -> None:
        self.estimates += estimate

    def rate(self) -> float:
        return ((time.monotonic() - self.start) / self.estimates
                if self.estimates >= 60.0 else 1.0)


def _say_cell(log, i: int, todo: list, finished: bool, source: Optional[str],
              dry_run: bool) -> None:
    status = "done" if finished else "to run"
    if source:
        status = (f"recorded in {os.path.basename(os.path.dirname(source))}/, "
                  + ("copied when run" if dry_run else "copied"))
    log(f"  [{i + 1}/{len(todo)}] {todo[i].label}: {status}, estimate "
        f"{todo[i].estimate_seconds / 60:.0f} min")


def _run_shared(cell: Cell, results_dir: str, log, kwargs: dict) -> CellOutcome:
    """Runs ``cell`` unless another worker has recorded it since this run listed the
    records. Unclaimed (a white-box cell of several workers), the workers that run it
    split its batches (and its classifier's training data reconstructions), train its
    classifier once, and each writes the same record."""
    if is_done(cell, results_dir):
        log(f"  {cell.label}: recorded by another worker meanwhile")
        return CellOutcome(cell, True, 0.0)
    t_cell = time.monotonic()
    _workflow(cell.kind)(cell.run, **kwargs)
    return CellOutcome(cell, False, time.monotonic() - t_cell)


def _run_claimed(cell: Cell, claims: Claims, results_dir: str, log, kwargs: dict
                 ) -> CellOutcome:
    """Runs ``cell`` under its claim; a cell another worker holds, or has finished since
    this run listed the records, is not run."""
    claim = claims.claim(claim_name(cell))
    if claim is None:
        holder = claims.holder(claim_name(cell)) or {}
        log(f"  {cell.label}: being run by another worker ({holder.get('host', '?')}, "
            f"pid {holder.get('pid', '?')}); left to it")
        return CellOutcome(cell, None, 0.0)
    with claim:
        return _run_shared(cell, results_dir, log, kwargs)


def _workflow(kind: str):
    """The run function of a cell kind (imported here: it loads TensorFlow)."""
    if kind == "whitebox":
        from defense_gan_tf.workflows.whitebox_run import run_whitebox
        return run_whitebox
    from defense_gan_tf.workflows.blackbox_run import run_blackbox
    return run_blackbox


TITLES = {
    "whitebox_mnist": "White box, MNIST (paper Tables 3 and 4)",
    "blackbox_mnist": "Black box, MNIST, FGSM eps 0.3 (paper Tables 1 and 2)",
    "blackbox_eps_mnist": "Black box, MNIST, F/E across epsilon (paper Table 2 sweep)",
    "detection_mnist": "Detection by reconstruction error, MNIST (paper Figure 4)",
    "whitebox_fmnist": "White box, Fashion-MNIST (paper section 4)",
    "blackbox_fmnist": "Black box, Fashion-MNIST, F/E (paper section 4)",
}

# The paper's figures, by table and row (the keys of the measured rows). Only two are
# confirmed by a public source (the authors' issue #2 quotes 0.997 and 0.217); the rest
# are recalled, not confirmed, and carry NOT_VERIFIED wherever they are shown, as do the
# ranges (../shared/DESIGN.md section 5).
NOT_VERIFIED = "not verified"
PAPER_CELLS = {
    "whitebox_mnist": {("fgsm (eps 0.3)", "A"): {
        "no attack": "0.997", "no defense": "0.217",
        "Defense-GAN-Rec": f"0.988 ({NOT_VERIFIED})"}},
}
PAPER_RANGES = {
    "whitebox_mnist": "across models A-D and FGSM, RAND+FGSM and CW, Defense-GAN-Rec "
                      "stays about 0.92-0.99 while no defense falls to 0.02-0.33.",
    "blackbox_mnist": "no defense about 0.2-0.65, Defense-GAN-Rec about 0.97-0.99, "
                      "Defense-GAN-Orig a few points lower.",
    "whitebox_fmnist": "Fashion-MNIST is harder: Defense-GAN about 0.8-0.9.",
    "blackbox_fmnist": "Fashion-MNIST is harder: Defense-GAN about 0.8-0.9.",
}


def settings_for(table: str, **overrides) -> TableSettings:
    """The table's settings with its dataset's shipped generator and MagNet folder
    (``pretrained/<dataset>/``; MagNet only when that folder exists) unless given."""
    folder = _dataset_of(table)
    overrides.setdefault("generator", f"pretrained/{folder}/generator.keras")
    if overrides.get("magnet") is None:
        magnet = f"pretrained/{folder}/magnet"
        overrides["magnet"] = magnet if os.path.isdir(magnet) else None
    return TableSettings(**overrides)


@dataclasses.dataclass(frozen=True)
class Progress:
    """How far one table is: its cells laid out with the estimates of the cells a run
    would make (``todo``), which are done, and the hours the rest would take."""
    todo: list
    done: list
    hours: float

    @property
    def done_count(self) -> int:
        return sum(self.done)

    @property
    def left_count(self) -> int:
        return len(self.todo) - self.done_count


def table_progress(table: str, results_dir: str, settings: TableSettings) -> Progress:
    """Reads the table's records once: a cell is done when its folder holds it, and the
    hours count only the cells a run would make (neither done nor copied from another
    table's folder), each carrying the shared costs it would pay."""
    # The layout does not depend on the estimates, so the cells are estimated again
    # with the flags of the ones a run would make.
    layout = cells(table, settings)
    done = done_flags(layout, results_dir)
    copied = sources_elsewhere(layout, results_dir)
    to_run = [not d and not c for d, c in zip(done, copied)]
    todo = cells(table, settings, pending=lambda _: to_run)
    hours = sum(c.estimate_seconds for c, r in zip(todo, to_run) if r) / 3600
    return Progress(todo=todo, done=done, hours=hours)


def table_section(table: str, results_root: str, progress: Progress) -> str:
    """One table of REPRODUCTION.md: its command, how many cells are done and what the
    rest would cost, the measured cells beside the paper's, the reading (the optional
    hand-written ``reading.md`` in the table's folder) and every run behind it."""
    results_dir = table_results_dir(results_root, table)
    kind = "blackbox" if table.startswith("blackbox") else "whitebox"
    lines = [f"## {TITLES[table]}", "",
             f"`python bin/reproduce.py --table={table} --data_dir=../shared/data` "
             f"(records and figures in `{results_dir}/`)", "",
             f"{progress.done_count} of {len(progress.todo)} cells done"
             + (f"; {_the_rest(progress.left_count)} estimated at {progress.hours:.1f} h "
                "on the reference 2-core CPU (`--dry_run` lists what is left)."
                if progress.left_count else "."),
             ""]
    if table in PAPER_RANGES:
        lines += [f"Paper (recalled, {NOT_VERIFIED}): {PAPER_RANGES[table]}", ""]
    runs = report.load_runs(results_dir, prefix=f"{kind}_") if os.path.isdir(results_dir) \
        else []
    reference = PAPER_CELLS.get(table)
    table_text, runs_text = "", ""
    if runs or reference:
        second = "model" if kind == "whitebox" else "black box / substitute"
        text = report.paper_table(runs, "attack", second, reference=reference)
        table_text, sep, rest = text.partition("\nRuns (latest last)")
        runs_text = (sep + rest).strip() if runs else ""
        lines += [table_text.strip(), ""]
    roc = os.path.join(results_dir, "roc.png")
    if os.path.exists(roc):
        lines += [f"![ROC]({roc})", ""]
    reading = os.path.join(results_dir, "reading.md")
    if os.path.exists(reading):
        with open(reading) as f:
            lines += ["Reading: " + f.read().strip(), ""]
    if runs_text:
        lines += [runs_text, ""]
    return "\n".join(lines)


def _the_rest(n: int) -> str:
    return "the last one is" if n == 1 else f"the other {n} are"


def write_summary(path: str, results_root: str, settings_of: Callable[[str], TableSettings]
                  = settings_for) -> str:
    """Writes REPRODUCTION.md: every table of :data:`TABLES`, done or not, from the records
    under ``results_root``; ``settings_of(table)`` gives the settings a cell must match."""
    head = ["# Reproduction of the paper's tables", "",
            "Each cell: accuracy with its 95% Wilson interval and the number of test images "
            "(n); Defense-GAN cells name L and R, and the runs under each table give the "
            "generator's training iterations, the input-gradient norm, the time the "
            "evaluation took and the exact command. Rows marked (paper) hold the published "
            "figures where they are known: 0.997 and 0.217 (model A, FGSM eps 0.3) are "
            "confirmed by the authors' issue #2; figures and ranges marked "
            f"{NOT_VERIFIED} are recalled, not confirmed. Rebuilt by `python bin/reproduce.py --summary_only`"
            " and after every table run.", ""]
    progress = {t: table_progress(t, table_results_dir(results_root, t), settings_of(t))
                for t in TABLES}
    # Hours are per table: tables that share a cost (the Defense-GAN-Rec
    # reconstructions) each count it, so they are not summed.
    head += ["| table | cells done | estimated hours left |", "|---|---|---|"]
    for t, p in progress.items():
        left = f"{p.hours:.1f}" if p.left_count else "none"
        head.append(f"| [{TITLES[t]}](#{_anchor(TITLES[t])}) | {p.done_count} of "
                    f"{len(p.todo)} | {left} |")
    head.append("")
    body = [table_section(t, results_root, progress[t]) for t in TABLES]
    return write_text(path, "\n".join(head + body))


def rebuild_folder_tables(results_root: str) -> list:
    """Rewrites each table folder's ``<kind>_table.md`` under ``results_root`` from every
    record there (what a worker wrote while another was still writing records may lack
    them); returns the paths rewritten."""
    out = []
    for table in TABLES:
        folder = table_results_dir(results_root, table)
        for kind in ("whitebox", "blackbox"):
            if report.load_run_files(folder, prefix=f"{kind}_") if os.path.isdir(folder) \
                    else []:
                out.append(report.update_table(folder, kind))
    return out


def _anchor(title: str) -> str:
    """The link target GitHub gives a heading: lower case, punctuation dropped, spaces to
    hyphens."""
    kept = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def table_results_dir(root: str, table: str) -> str:
    """Where a table's records go: ``<root>/<table>``."""
    return os.path.join(root, table)


def detection_figure(results_dir: str, path: str) -> Optional[str]:
    """One ROC plot of every Defense-GAN white-box record in ``results_dir`` (paper Fig. 4:
    one curve per attack and epsilon); None when there is none."""
    from defense_gan_tf.metrics.detection import plot_roc, roc_curve

    curves = {}
    for record in report.load_runs(results_dir, prefix="whitebox_"):
        det = record["result"].get("detection")
        s = record["settings"]
        if det and s["defense_type"] == "defense_gan":
            label = (f"{s['attack']['attack_type']} eps {s['attack']['eps']}, model "
                     f"{s['model']}, n={record['result']['clean']['n']}")
            curves[label] = roc_curve(det["clean_errors"], det["adversarial_errors"])
    if not curves:
        return None
    return plot_roc(dict(sorted(curves.items())), path,
                    title="Detection by reconstruction error (Defense-GAN-Orig)")
