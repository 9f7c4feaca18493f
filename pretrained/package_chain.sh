#!/usr/bin/env bash
# Packages the run that train_chain.sh trains, between its legs (pretrained/README.md,
# "Training the packages further"). From the repository root:
#
#   bash pretrained/package_chain.sh DATASET
#
# 1. bin/package_generator.py replaces pretrained/DATASET with runs/DATASET: the trained
#    and the averaged generator, the critic (so that a lost run folder continues from the
#    package), sample grids, quality figures on 10,000 samples, the run's quality curve,
#    and a manifest whose train_commands are the run's own record (progress.json);
# 2. the projection's encoder fitted again to the new generator, and the README's
#    headline table rewritten.
# About 4 minutes on two AVX-512 cores (measured at 63,986); run it between legs, never
# beside one. The package's Defense-GAN figures are then the run's last in-run evaluation
# (100 images); measure_chain.sh measures a final package on 500 and 2,000.
# One { } block: bash reads it whole before running it, so editing this file while
# it runs cannot change or break the running script.
{
set -uo pipefail
cd "$(dirname "$0")/.."
DATASET="${1:?usage: bash pretrained/package_chain.sh DATASET}"
PYTHON="${PYTHON:-.venv/bin/python}"
DATA="${DEFENSE_GAN_DATA_DIR:-../shared/data}"
PACKAGE="pretrained/$DATASET" RUN="runs/$DATASET"
source pretrained/chain_lib.sh
encoder_dataset "$DATASET"
if [ ! -f "$RUN/progress.json" ]; then
  echo "package_chain.sh: $RUN has no progress.json (train it with train_chain.sh first)" >&2
  exit 2
fi
if [ -f "$RUN/.lock" ] && ! flock -n "$RUN/.lock" true; then
  echo "package_chain.sh: a leg is training into $RUN; package it after the leg stops" >&2
  exit 2
fi
echo "== packaging $RUN into $PACKAGE"
"$PYTHON" bin/package_generator.py --run_dir="$RUN" --dest_dir="$PACKAGE" \
  --classifier="$PACKAGE/classifier_A.keras" --data_dir="$DATA" --overwrite || exit $?
refit_encoder_and_headline
echo "$PACKAGE now holds $RUN at iteration $(field iterations); commit it"
exit 0
}
