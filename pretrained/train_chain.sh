#!/usr/bin/env bash
# One leg of the chain of time-budgeted runs that trains a shipped generator further
# (pretrained/README.md, "Training the packages further"). From the repository root:
#
#   bash pretrained/train_chain.sh DATASET MINUTES [TRAIN_ITERS]
#
# DATASET is mnist or fashion_mnist. The leg resumes runs/DATASET exactly (weights,
# averaged generator, Adam state, data order), restored first from $CHAIN_BACKUP/DATASET
# when the work tree lost it; with neither, it warm-starts from pretrained/DATASET (with a
# new critic when the package was shipped without one). It evaluates both generators in
# full every $QUALITY_EVERY iterations (default 10,000) and stops with a checkpoint after MINUTES
# (exit status 3): run the same command again to continue. The code runs from a frozen
# copy (runs/.train_code), so that editing the work tree cannot change a running leg.
# With CHAIN_BACKUP set, the run folder is copied there after the leg.
# One { } block: bash reads it whole before running it, so editing this file while
# it runs cannot change or break the running script.
{
set -uo pipefail
BACKUP="${CHAIN_BACKUP:+$(realpath -m "$CHAIN_BACKUP")}"  # relative to the caller
cd "$(dirname "$0")/.."
DATASET="${1:?usage: bash pretrained/train_chain.sh DATASET MINUTES [TRAIN_ITERS]}"
MINUTES="${2:?usage: bash pretrained/train_chain.sh DATASET MINUTES [TRAIN_ITERS]}"
ITERS="${3:-200000}"
case "$DATASET" in
  mnist|fashion_mnist) ;;
  *) echo "train_chain.sh: DATASET must be mnist or fashion_mnist, not '$DATASET'" >&2; exit 2 ;;
esac
PACKAGE="pretrained/$DATASET" RUN="runs/$DATASET"
PYTHON="${PYTHON:-.venv/bin/python}"
mkdir -p runs
if [ ! -d "$RUN" ] && [ -n "$BACKUP" ] && [ -d "$BACKUP/$DATASET" ]; then
  echo "restoring $RUN from $BACKUP/$DATASET"
  cp -r "$BACKUP/$DATASET" "$RUN.restoring" && mv "$RUN.restoring" "$RUN" || exit 1
fi
CODE=runs/.train_code
rm -rf "$CODE" && mkdir -p "$CODE" && cp -r defense_gan_tf bin "$CODE/" || exit 1
EXTRA=()
if [ ! -f "$PACKAGE/critic.keras" ]; then EXTRA+=(--warm_start_fresh_critic); fi
# Recorded with the leg's train.py command in the run's progress.json (and so in the
# package manifest's train_commands).
LAUNCHER="bash pretrained/train_chain.sh $*"
if [ -n "${QUALITY_EVERY:-}" ]; then LAUNCHER="QUALITY_EVERY=$QUALITY_EVERY $LAUNCHER"; fi
# --precision=auto: bfloat16 only where the device computes it natively (bench/README.md).
DEFENSE_GAN_LAUNCHER="$LAUNCHER" PYTHONPATH="$CODE" "$PYTHON" "$CODE/bin/train.py" --dataset="$DATASET" --output_dir="$RUN" \
  --data_dir="${DEFENSE_GAN_DATA_DIR:-../shared/data}" --precision=auto \
  --train_iters="$ITERS" --time_budget_minutes="$MINUTES" --log_every=100 \
  --quality_every="${QUALITY_EVERY:-10000}" --quality_average_full \
  --quality_classifier="$PACKAGE/classifier_A.keras" --warm_start="$PACKAGE" "${EXTRA[@]}"
STATUS=$?
if [ -n "$BACKUP" ] && [ -d "$RUN" ]; then
  mkdir -p "$BACKUP" && rm -rf "$BACKUP/$DATASET.new" \
    && cp -r "$RUN" "$BACKUP/$DATASET.new" && rm -rf "$BACKUP/$DATASET" \
    && mv "$BACKUP/$DATASET.new" "$BACKUP/$DATASET" && echo "backed up $RUN to $BACKUP"
fi
exit $STATUS
}
