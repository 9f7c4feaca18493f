# Sourced by .ci/test and .ci/demo: creates the virtual environment (default
# .venv beside setup.py, or $DEFENSE_GAN_VENV) and installs the package into
# it. Reinstalls only when setup.py changed, so reruns work offline.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DEFENSE_GAN_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.defense_gan_tf-installed"
WANT="$(cat "$ROOT/setup.py" | sha256sum | cut -d' ' -f1) $ROOT"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ] || \
   ! "$VENV/bin/python" -c "import defense_gan_tf, tensorflow, pytest, xdist" 2>/dev/null; then
  echo "installing defense_gan_tf and its requirements into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import defense_gan_tf, tensorflow, pytest, xdist" || {
    echo "installation failed" >&2; exit 1; }
  echo "$WANT" > "$STAMP"
fi
# The offline copy of MNIST / Fashion-MNIST, when it sits beside the repository.
if [ -z "${DEFENSE_GAN_DATA_DIR:-}" ] && [ -d "$ROOT/../shared/data/mnist" ]; then
  export DEFENSE_GAN_DATA_DIR="$(cd "$ROOT/../shared/data" && pwd)"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# oneDNN kernels (TensorFlow enables them by default only on AVX-512 CPUs): about 2x
# faster WGAN-GP training on an AVX2-only CPU (measured); an explicit setting is kept.
export TF_ENABLE_ONEDNN_OPTS="${TF_ENABLE_ONEDNN_OPTS:-1}"
cd "$ROOT"
