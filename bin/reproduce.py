#!/usr/bin/env python3
r"""Regenerates one of the paper's tables, resumably: python bin/reproduce.py --table=...

Runs every cell of --table through the white- and black-box workflows, skipping cells
whose record already exists in <results_root>/<table>/ with the same settings (so it
resumes after an interruption and across days), copying a cell another table's folder
holds already (a run two tables share is made once), prints progress with an estimate
of the time left, and rebuilds the table there. --dry_run lists the cells, their cost
estimate and which are done.

--models, --defenses and --attacks restrict a run to some cells (the cheap or the most
informative ones first); the table is rebuilt from every record in the folder, and so is
--summary (REPRODUCTION.md: every table beside the paper's figures, with what is left to
run). --summary_only rebuilds those files and runs nothing.

Many workers can fill one table at once when they share <results_root> and
--classifier_dir (one machine or many): --shard=I/N gives each its share of the cells
(every N-th, from the I-th) first, then the others'. A black-box cell is claimed whole
and left to the worker that holds it; a white-box cell is shared by its batches. When
all are done, --summary_only builds the tables from every worker's records.

Example:
  python bin/reproduce.py --table=whitebox_mnist --dry_run --data_dir=../shared/data
  python bin/reproduce.py --table=whitebox_mnist --models=A --defenses=none,adv_tr \
      --data_dir=../shared/data
  python bin/reproduce.py --table=whitebox_mnist --shard=0/4 ...   # and 1/4, 2/4, 3/4
  python bin/reproduce.py --summary_only
  python bin/reproduce.py --headline      # the README's headline table and the shipped
                                          # packages' READMEs, from the files behind them
"""

import os
import sys

from absl import app
from absl import flags as absl_flags

import flags as shared  # bin/flags.py
from defense_gan_tf.config import PROJECTION_PRESETS
from defense_gan_tf.workflows.reproduce import TABLES

FLAGS = absl_flags.FLAGS
# Where runs with other settings than the paper's go by default (ignored by git).
CUSTOM_ROOT = "runs/reproduction"
# The flags that change a cell's figures; a run with any of them changed is not the
# committed tables' documented command.
_SETTING_FLAGS = ("num_tests", "defense_gan_tests", "projection", "generator", "nb_epochs",
                  "rec_train", "seed")
absl_flags.DEFINE_enum("table", None, list(TABLES),
                       "Which table (required unless --summary_only).")
absl_flags.DEFINE_string("summary", "REPRODUCTION.md", "Rebuilt after a (non-dry) run from "
                         "every table's records: the tables beside the paper's figures; "
                         "empty: leave it alone. With settings other than the paper's "
                         f"(see --results_root) the default is {CUSTOM_ROOT}/REPRODUCTION.md.")
absl_flags.DEFINE_bool("summary_only", False, "Only rebuild --summary and each table "
                       "folder's table from the records; run nothing.")
absl_flags.DEFINE_bool("headline", False, "Only rewrite the README's table of headline "
                       "figures from the shipped manifests and the committed records, and "
                       "each shipped package's README from its manifest; run nothing.")
absl_flags.DEFINE_bool("dry_run", False, "List the cells, their estimates and which are "
                       "done; run nothing.")
absl_flags.DEFINE_integer("num_tests", 500, "Test images per cell without Defense-GAN.")
absl_flags.DEFINE_integer("defense_gan_tests", 200, "Test images per Defense-GAN cell.")
absl_flags.DEFINE_enum("projection", "paper", list(PROJECTION_PRESETS), "Projection preset "
                       "of every Defense-GAN cell (named in each cell's record).")
absl_flags.DEFINE_string("generator", None, "Generator (default: pretrained/<dataset>/"
                         "generator.keras).")
absl_flags.DEFINE_string("magnet", None, "MagNet folder (default: pretrained/<dataset>/magnet "
                         "when it exists; without one the MagNet cells are left out).")
absl_flags.DEFINE_integer("nb_epochs", 10, "Classifier training epochs (the paper: 10).")
absl_flags.DEFINE_integer("rec_train", 10_000, "Training images the Defense-GAN-Rec "
                          "classifier is trained on (their reconstructions are cached).")
absl_flags.DEFINE_integer("seed", 0, "Seed of every cell.")
absl_flags.DEFINE_string("results_root", "results/reproduction", "Each table goes to "
                         "<results_root>/<table>/. A run whose --num_tests, "
                         "--defense_gan_tests, --projection, --generator, --nb_epochs, "
                         f"--rec_train or --seed differ from the defaults writes to {CUSTOM_ROOT} "
                         "instead unless --results_root is given, so that the committed "
                         "tables change only with the paper's settings.")
absl_flags.DEFINE_string("classifier_dir", "runs/classifiers", "Cache of trained "
                         "classifiers and reconstructions.")
absl_flags.DEFINE_string("data_dir", None, "Local IDX folder (default: "
                         "$DEFENSE_GAN_DATA_DIR).")
absl_flags.DEFINE_list("models", None, "Only the cells of these classifiers (black box: "
                       "the attacked one), e.g. A or A,F (default: all).")
absl_flags.DEFINE_list("defenses", None, "Only these defense columns, some of none, "
                       "defense_gan, defense_gan_rec, adv_tr, magnet (default: all).")
absl_flags.DEFINE_list("attacks", None, "Only these attacks, some of fgsm, rand_fgsm, cw "
                       "(default: all).")
shared.define_time_budget_flag("No cell starts after this many minutes")
shared.define_shard_flags("the selected cells")
shared.define_execution_flags()


def _rec_cache_lookup():
    """spec -> (Rec classifier cached, reconstructions cached, reconstructions kept by an
    interrupted run), each asked once per
    generator, projection, seed, model and training-set size (TensorFlow loads at the
    first question)."""
    known = {}

    def lookup(spec):
        from defense_gan_tf.errors import InputError
        from defense_gan_tf.records.loading import rec_cache_status

        key = (spec.generator, spec.dataset, str(spec.projection), spec.seed, spec.model,
               spec.num_train)
        if key not in known:
            try:
                known[key] = rec_cache_status(spec, classifier_dir=FLAGS.classifier_dir,
                                              data_dir=FLAGS.data_dir)
            except (InputError, OSError, ValueError) as e:  # the run itself will say
                print(f"estimates count the Defense-GAN-Rec reconstructions of model "
                      f"{spec.model}: their cache could not be looked up ({e})")
                known[key] = (False, False, 0)
        return known[key]
    return lookup


def _substitute_status(run):
    """(substitute cached, oracle labels kept) of a black-box cell in --classifier_dir."""
    from defense_gan_tf.workflows.blackbox_run import substitute_cache_status

    return substitute_cache_status(run, FLAGS.classifier_dir)


def _redirect_custom_runs() -> None:
    """Sends a run with non-default settings to CUSTOM_ROOT unless told otherwise."""
    changed = [name for name in _SETTING_FLAGS
               if FLAGS[name].value != FLAGS[name].default]
    if not changed:
        return
    if not FLAGS["results_root"].present:
        FLAGS.results_root = CUSTOM_ROOT
    if not FLAGS["summary"].present and FLAGS.summary:
        FLAGS.summary = os.path.join(CUSTOM_ROOT, "REPRODUCTION.md")
    print(f"--{', --'.join(changed)} differ from the paper's settings: records go to "
          f"{FLAGS.results_root}/, the summary to {FLAGS.summary or '(none)'}")


def _settings_of(table):
    """The TableSettings of ``table`` from the flags (--generator and --magnet belong to
    --table alone)."""
    from defense_gan_tf.workflows import reproduce

    overrides = {}
    if table == FLAGS.table:
        overrides["magnet"] = FLAGS.magnet
        if FLAGS.generator is not None:
            overrides["generator"] = FLAGS.generator
    return reproduce.settings_for(
        table, num_tests=FLAGS.num_tests, defense_gan_tests=FLAGS.defense_gan_tests,
        projection=FLAGS.projection, classifier_epochs=FLAGS.nb_epochs,
        rec_train=FLAGS.rec_train, seed=FLAGS.seed, **overrides)


def _chosen_cells(settings, results_dir: str) -> list:
    """The cells of --table that --models / --defenses / --attacks select, estimated.

    Estimates leave out classifiers already trained into --classifier_dir, and the
    Defense-GAN-Rec reconstructions and black-box substitutes (whole or in part) cached
    there; costs cells share are charged to the first cell that will run (selected, not
    done). Both caches are looked up only for cells that will run, so a dry run or a
    refusal of white-box cells needs no TensorFlow."""
    from defense_gan_tf.workflows import reproduce

    chosen_by = dict(models=FLAGS.models, defenses=FLAGS.defenses, attacks=FLAGS.attacks)
    try:
        pending = reproduce.pending_cells(results_dir, **chosen_by)
    except ValueError as e:  # names the list: defenses or attacks
        raise app.UsageError(f"--{e}") from None
    with shared.usage_errors():
        table_cells = reproduce.cells(
            FLAGS.table, settings, classifier_dir=FLAGS.classifier_dir,
            rec_cached=_rec_cache_lookup(), substitute_status=_substitute_status,
            pending=pending)
    chosen = reproduce.select(table_cells, **chosen_by)
    if not chosen:
        keys = [reproduce.cell_keys(c) for c in table_cells]
        have = [sorted({k[i] for k in keys}) for i in range(3)]
        raise app.UsageError(f"no cell of --table={FLAGS.table} matches --models / "
                             f"--defenses / --attacks (its models: {have[0]}, defenses: "
                             f"{have[1]}, attacks: {have[2]})")
    return chosen


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _redirect_custom_runs()
    if FLAGS.headline:
        from defense_gan_tf.records import headline

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        changed = headline.rewrite_readme(root)
        print("README.md headline table " + ("rewritten" if changed else "unchanged"))
        import glob

        from defense_gan_tf.generators.package_readme import write_package_readme

        for manifest in sorted(glob.glob(os.path.join(root, "pretrained", "*",
                                                      "manifest.json"))):
            package = os.path.dirname(manifest)
            changed = write_package_readme(package)
            print(f"{os.path.relpath(package, root)}/README.md "
                  + ("rewritten" if changed else "unchanged"))
        return
    if FLAGS.table is None and not FLAGS.summary_only:
        raise app.UsageError("--table is required (or --summary_only to rebuild --summary)")
    if FLAGS.summary_only and not FLAGS.summary:
        raise app.UsageError("--summary_only needs a --summary path")
    budget = shared.time_budget_seconds()
    shard, claim_timeout = shared.shard_settings()
    shared.check_paths(files=("generator",), folders=("data_dir", "magnet"),
                       outputs=("results_root", "classifier_dir"))
    from defense_gan_tf.console import command_line
    from defense_gan_tf.workflows import reproduce

    if FLAGS.summary_only:
        with shared.usage_errors():
            reproduce.rebuild_folder_tables(FLAGS.results_root)
            print("wrote", reproduce.write_summary(FLAGS.summary, FLAGS.results_root,
                                                   _settings_of))
        return
    with shared.usage_errors():
        settings = _settings_of(FLAGS.table)
        results_dir = reproduce.table_results_dir(FLAGS.results_root, FLAGS.table)
    chosen = _chosen_cells(settings, results_dir)
    with shared.resumable("finished cells, and a Defense-GAN-Rec classifier's "
                          "reconstructions and a substitute's oracle labels so far, are"), \
            shared.usage_errors(), shared.projection_execution():
        ran = reproduce.run_table(FLAGS.table, settings, results_dir=results_dir,
                                  classifier_dir=FLAGS.classifier_dir,
                                  data_dir=FLAGS.data_dir, command=command_line(sys.argv),
                                  dry_run=FLAGS.dry_run, cell_list=chosen,
                                  time_budget_seconds=budget, shard=shard,
                                  claim_timeout=claim_timeout)
        if FLAGS.table == "detection_mnist" and not FLAGS.dry_run:
            reproduce.detection_figure(results_dir, os.path.join(results_dir, "roc.png"))
        if FLAGS.summary and not FLAGS.dry_run:
            reproduce.write_summary(FLAGS.summary, FLAGS.results_root, _settings_of)
    if len(ran) < len(chosen):  # stopped by the time budget
        shared.exit_unfinished(f"{len(chosen) - len(ran)} cell(s) left")
    held = [o for o in ran if o.done_before is None]
    if held:
        print(f"{len(held)} cell(s) being run by other workers; when all workers are "
              f"done, `python bin/reproduce.py --summary_only` rebuilds the tables from "
              "every worker's records")


if __name__ == "__main__":
    shared.run(main)
