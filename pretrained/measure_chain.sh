#!/usr/bin/env bash
# The measurements that finish a package trained by train_chain.sh, in parts of a few hours
# (pretrained/README.md, "Measuring a package and choosing its generator"). From the
# repository root:
#
#   bash pretrained/measure_chain.sh DATASET MINUTES
#
# 1. the trained and 2. the averaged generator on the first 500 test images (clean, FGSM
#    transferred from the undefended classifier, random-sign noise), at the package's L, R;
# 3. bin/choose_generator.py ships the better of the two as generator.keras (once: a
#    package whose manifest has a shipped_choice keeps it);
# 4. the shipped generator on the first 2,000 test images, with paper-style FGSM and FGSM
#    through BPDA on the first 500;
# 5. the projection's encoder fitted again if it was fitted to another generator, and the
#    README's headline table rewritten.
# Each measurement keeps its finished batches in runs/measure_cache and a measurement
# already in the manifest is skipped, so after MINUTES (exit status 3) or a crash the same
# command continues where it stopped. Run it alone: it uses both cores for hours.
# One { } block: bash reads it whole before running it, so editing this file while
# it runs cannot change or break the running script.
{
set -uo pipefail
cd "$(dirname "$0")/.."
USAGE="usage: bash pretrained/measure_chain.sh DATASET MINUTES"
DATASET="${1:?$USAGE}"
MINUTES="${2:?$USAGE}"
PYTHON="${PYTHON:-.venv/bin/python}"
DATA="${DEFENSE_GAN_DATA_DIR:-../shared/data}"
PACKAGE="pretrained/$DATASET"
source pretrained/chain_lib.sh
encoder_dataset "$DATASET"
if ! [[ "$MINUTES" =~ ^[0-9]+$ ]] || [ "$MINUTES" -lt 1 ]; then
  echo "measure_chain.sh: MINUTES must be a whole number >= 1, not '$MINUTES'" >&2; exit 2
fi
if [ ! -f "$PACKAGE/manifest.json" ]; then
  echo "measure_chain.sh: $PACKAGE has no manifest.json (package a run first)" >&2; exit 2
fi
END=$(( $(date +%s) + MINUTES * 60 ))

measure() {  # FILE FLAGS...: one measurement, in the minutes left
  local left=$(( END - $(date +%s) ))
  if [ "$left" -le 0 ]; then
    echo "not finished: out of time before measuring $1; run the same command again to continue"
    exit 3
  fi
  local file="$1"; shift
  echo "== $PACKAGE/$file $*"
  "$PYTHON" bin/measure_generator.py --package_dir="$PACKAGE" \
    --classifier="$PACKAGE/classifier_A.keras" --data_dir="$DATA" --generator_file="$file" \
    --skip_measured --time_budget_minutes="$(awk "BEGIN {print $left / 60}")" "$@"
  local status=$?
  [ "$status" -eq 0 ] || exit "$status"
}

if [ -z "$(field shipped_choice)" ] && [ -n "$(field average_file)" ]; then
  RAW="$(field raw_file)"
  measure "${RAW:-$(field file)}" --num_images=500 --paper_fgsm_images=0
  measure "$(field average_file)" --num_images=500 --paper_fgsm_images=0
  echo "== choosing the generator to ship"
  "$PYTHON" bin/choose_generator.py --package_dir="$PACKAGE" || exit $?
fi
measure generator.keras --num_images=2000 --paper_fgsm_images=500 --bpda_fgsm_images=500

# The manifest's sha256 is generator.keras's: the measurement above checked it.
refit_encoder_and_headline
echo "$PACKAGE is measured; its figures are in $PACKAGE/README.md and manifest.json"
exit 0
}
