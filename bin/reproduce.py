#!/usr/bin/env python3
r"""Regenerates one of the paper's tables, resumably: python bin/reproduce.py --table=...

Runs every cell of --table through the white- and black-box workflows, skipping cells
whose record already exists in <results_root>/<table>/ with the same settings (so it
resumes after an interruption and across days), prints progress with an estimate of
the time left, and rebuilds the table there. --dry_run lists the cells, their cost
estimate and which are done.

--models, --defenses and --attacks restrict a run to some cells (the cheap or the most
informative ones first); the table is rebuilt from every record in the folder.

Example:
  python bin/reproduce.py --table=whitebox_mnist --dry_run --data_dir=../shared/data
  python bin/reproduce.py --table=whitebox_mnist --models=A --defenses=none,adv_tr \
      --data_dir=../shared/data
"""

import os
import sys

from absl import app
from absl import flags as absl_flags

import flags as shared  # bin/flags.py
from defense_gan_tf.config import PROJECTION_PRESETS

FLAGS = absl_flags.FLAGS
absl_flags.DEFINE_enum("table", None, ["whitebox_mnist", "blackbox_mnist",
                                       "blackbox_eps_mnist", "detection_mnist",
                                       "whitebox_fmnist", "blackbox_fmnist"], "Which table.")
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
                         "<results_root>/<table>/.")
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
absl_flags.mark_flag_as_required("table")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    shared.check_paths(files=("generator",), folders=("data_dir", "magnet"),
                       outputs=("results_root", "classifier_dir"))
    from defense_gan_tf.console import command_line
    from defense_gan_tf.evaluation import reproduce

    folder = "fashion_mnist" if FLAGS.table.endswith("fmnist") else "mnist"
    generator = FLAGS.generator or f"pretrained/{folder}/generator.keras"
    magnet = FLAGS.magnet
    if magnet is None and os.path.isdir(f"pretrained/{folder}/magnet"):
        magnet = f"pretrained/{folder}/magnet"
    with shared.usage_errors():
        settings = reproduce.TableSettings(
            num_tests=FLAGS.num_tests, defense_gan_tests=FLAGS.defense_gan_tests,
            projection=FLAGS.projection, generator=generator, magnet=magnet,
            classifier_epochs=FLAGS.nb_epochs, rec_train=FLAGS.rec_train, seed=FLAGS.seed)
        results_dir = reproduce.table_results_dir(FLAGS.results_root, FLAGS.table)
        table_cells = reproduce.cells(FLAGS.table, settings)
    try:
        chosen = reproduce.select(table_cells, models=FLAGS.models, defenses=FLAGS.defenses,
                                  attacks=FLAGS.attacks)
    except ValueError as e:  # names the list: defenses or attacks
        raise app.UsageError(f"--{e}") from None
    if not chosen:
        have = sorted({reproduce.cell_keys(c)[0] for c in table_cells})
        raise app.UsageError(f"no cell of --table={FLAGS.table} matches --models / "
                             f"--defenses / --attacks (its models: {have})")
    with shared.usage_errors():
        reproduce.run_table(FLAGS.table, settings, results_dir=results_dir,
                            classifier_dir=FLAGS.classifier_dir, data_dir=FLAGS.data_dir,
                            command=command_line(sys.argv), dry_run=FLAGS.dry_run,
                            cell_list=chosen)
        if FLAGS.table == "detection_mnist" and not FLAGS.dry_run:
            reproduce.detection_figure(results_dir, os.path.join(results_dir, "roc.png"))


if __name__ == "__main__":
    app.run(main)
