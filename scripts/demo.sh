#!/usr/bin/env bash
# The README's main job, end to end on the real data under RADIOLENS_DATA_DIR (`make demo` runs this):
#   1. de-identify real DICOM (the SIIM chest CR + pydicom-data CR/CT files)   -> $OUT/deid
#   2. render PNG previews of what the reader produced                       -> $OUT/previews
#   3. build the PneumoniaMNIST manifest (offline copy in $RADIOLENS_DATA_DIR/medmnist, else downloaded)
#   4. train small_cnn with configs/pneumoniamnist.yaml (fewer epochs, see below)  -> $OUT/pneumoniamnist
#   5. evaluate the saved model on the patient-disjoint test split            -> HTML + JSON report
#
# Environment (all optional):
#   RADIOLENS_DATA_DIR      real data folder (default: ../shared/data next to the repository)
#   RADIOLENS_DEMO_OUT      output folder (default: out/demo)
#   RADIOLENS_DEMO_EPOCHS   training epochs (default 5: ~2-3 min on 2 CPU cores; the config's 15 epochs,
#                           the benchmark target setting, take ~7.5 min; see docs/training.md)
#   RADIOLENS_DEMO_BOOTSTRAP  bootstrap resamples for the CIs (default 1000)
#   RADIOLENS_DEID_SECRET_FILE  file holding the de-identification secret, mode 0600 (or RADIOLENS_DEID_SECRET;
#                           default: a random secret generated once into $OUT/deid-secret, mode 0600)
#   RADIOLENS_CMD           the radiolens command (default: .venv/bin/radiolens, else radiolens on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"

if [ -z "${RADIOLENS_DATA_DIR:-}" ]; then
  RADIOLENS_DATA_DIR="$(cd .. && pwd)/shared/data"
fi
export RADIOLENS_DATA_DIR
if [ ! -d "$RADIOLENS_DATA_DIR" ]; then
  echo "demo: RADIOLENS_DATA_DIR=$RADIOLENS_DATA_DIR is not a folder; point it at the real data (../shared/data)" >&2
  exit 2
fi
OUT="${RADIOLENS_DEMO_OUT:-out/demo}"
EPOCHS="${RADIOLENS_DEMO_EPOCHS:-5}"
BOOTSTRAP="${RADIOLENS_DEMO_BOOTSTRAP:-1000}"
if [ -n "${RADIOLENS_CMD:-}" ]; then
  RL="$RADIOLENS_CMD"
elif [ -x "$REPO/.venv/bin/radiolens" ]; then
  RL="$REPO/.venv/bin/radiolens"
else
  RL="radiolens"
fi
if ! command -v "$RL" >/dev/null 2>&1; then
  echo "demo: the radiolens command ($RL) is not installed; 'make demo' installs it into .venv first" >&2
  exit 2
fi
PY="$(dirname "$(command -v "$RL")")/python"
[ -x "$PY" ] || PY="python3"

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if [ -z "${RADIOLENS_DEID_SECRET:-}" ] && [ -z "${RADIOLENS_DEID_SECRET_FILE:-}" ]; then
  # A random secret of this output folder, kept for reruns (same remapped UIDs), readable by you only: a
  # published demo value would let anyone recompute the remapped UIDs and pseudonyms.
  RADIOLENS_DEID_SECRET_FILE="$OUT/deid-secret"
  if [ ! -s "$RADIOLENS_DEID_SECRET_FILE" ]; then
    (umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(32))' > "$RADIOLENS_DEID_SECRET_FILE")
  fi
  chmod 600 "$RADIOLENS_DEID_SECRET_FILE"
  export RADIOLENS_DEID_SECRET_FILE
fi
rm -rf "$OUT/deid" "$OUT/previews"  # a rerun starts from empty output folders
start=$SECONDS
step() { echo; echo "== $1  (t=$((SECONDS - start)) s)"; }

step "1/5 de-identify real DICOM (PS3.15 Annex E basic profile, retain patient characteristics)"
dicoms=("$RADIOLENS_DATA_DIR/siim_acr_pneumothorax/dicom")
if corpus="$("$PY" -c 'import data_store, pathlib; print(pathlib.Path(data_store.__file__).parent / "data")' 2>/dev/null)"; then
  for f in RG1_UNCR.dcm RG1_J2KR.dcm RG3_UNCR.dcm 693_UNCR.dcm; do dicoms+=("$corpus/$f"); done
else
  echo "demo: the pydicom-data package is not installed; de-identifying the SIIM chest DICOM only"
fi
"$RL" deid "${dicoms[@]}" "$OUT/deid"

step "2/5 previews of the de-identified DICOM and the NIH full-resolution PNGs"
"$RL" preview "$OUT/deid" "$RADIOLENS_DATA_DIR/nih_chestxray14/images_fullres" --out "$OUT/previews"

step "3/5 PneumoniaMNIST manifest"
if [ -f "$RADIOLENS_DATA_DIR/medmnist/pneumoniamnist.npz" ]; then
  root="$RADIOLENS_DATA_DIR/medmnist"
  echo "offline copy: $root/pneumoniamnist.npz"
else
  root="$HOME/.medmnist"
  echo "no offline copy under $RADIOLENS_DATA_DIR/medmnist: the medmnist package downloads it into $root"
fi
"$RL" make-manifest medmnist pneumoniamnist --root "$root" --out "$OUT/pneumoniamnist/data"

step "4/5 train (configs/pneumoniamnist.yaml, $EPOCHS epochs)"
"$RL" train --config configs/pneumoniamnist.yaml --manifest "$OUT/pneumoniamnist/data/manifest.csv" \
  --out "$OUT/pneumoniamnist" --epochs "$EPOCHS" --n-bootstrap "$BOOTSTRAP" --no-progress

step "5/5 evaluate the saved model on the test split (temperature + threshold fitted on val)"
"$RL" evaluate --model "$OUT/pneumoniamnist/model.pt" --manifest "$OUT/pneumoniamnist/manifest_used.csv" \
  --split test --val-split val --n-bootstrap "$BOOTSTRAP" --out "$OUT/pneumoniamnist/eval"

echo
echo "== done in $((SECONDS - start)) s. Outputs:"
echo "  de-identified DICOM + report : $OUT/deid/ (deid_report.csv, deid_report.json)"
echo "  previews                     : $OUT/previews/"
echo "  manifest                     : $OUT/pneumoniamnist/data/manifest.csv"
echo "  model                        : $OUT/pneumoniamnist/model.pt"
echo "  training report              : $OUT/pneumoniamnist/report/report.html (+ metrics.json)"
echo "  evaluation report            : $OUT/pneumoniamnist/eval/report.html (+ metrics.json)"
echo "  MLflow store                 : sqlite:///$OUT/pneumoniamnist/mlflow.db"
