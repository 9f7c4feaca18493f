# Shell functions shared by package_chain.sh and measure_chain.sh (sourced, not run).
# They expect PYTHON, DATA, PACKAGE and ENCODER_DATASET to be set.

json_field() {  # FILE KEY: a top-level field of a JSON file ("" when absent or null)
  "$PYTHON" -c 'import json, sys; v = json.load(open(sys.argv[1])).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"
}
field() { json_field "$PACKAGE/manifest.json" "$1"; }

encoder_dataset() {  # DATASET: the --dataset name bin/train_encoder.py takes, or exit 2
  case "$1" in
    mnist) ENCODER_DATASET=mnist ;;
    fashion_mnist) ENCODER_DATASET=f-mnist ;;
    *) echo "$(basename "$0"): DATASET must be mnist or fashion_mnist, not '$1'" >&2; exit 2 ;;
  esac
}

refit_encoder_and_headline() {
  # The projection's encoder fitted again when it was fitted to another generator than
  # the package's generator.keras (the manifest's sha256), then the README's headline
  # table rewritten from the manifests.
  if [ -f "$PACKAGE/encoder.json" ] && \
      [ "$(json_field "$PACKAGE/encoder.json" generator_sha256)" != "$(field sha256)" ]; then
    echo "== fitting the encoder to the shipped generator"
    "$PYTHON" bin/train_encoder.py --generator="$PACKAGE/generator.keras" \
      --dataset="$ENCODER_DATASET" --data_dir="$DATA" --steps=3000 --overwrite || exit $?
  fi
  "$PYTHON" bin/reproduce.py --headline || exit $?
}
