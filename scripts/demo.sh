#!/usr/bin/env bash
# The README's main job, end to end on the real data under RADIOLENS_DATA_DIR (`make demo` runs this):
#   1. de-identify real DICOM (pydicom-data CR/CT files -> $OUT/deid; the SIIM chest CR, a Secondary Capture
#      refused by default, after review with --allow-burned-in -> $OUT/deid-reviewed)
#   2. render PNG previews of what the reader produced                       -> $OUT/previews
#   3. build the PneumoniaMNIST manifest (offline copy in $RADIOLENS_DATA_DIR/medmnist, else downloaded)
#   4. train small_cnn with configs/pneumoniamnist.yaml (fewer epochs, see below)  -> $OUT/pneumoniamnist
#   5. evaluate the saved model on the patient-disjoint test split            -> HTML + JSON report
#   6. register its monitoring baseline: input gate learned from the val split -> model-monitored.pt
#   7. batch-score the test split through that gate                           -> predictions.csv
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
rm -rf "$OUT/deid" "$OUT/deid-reviewed" "$OUT/previews"  # a rerun starts from empty output folders
start=$SECONDS
step() { echo; echo "== $1  (t=$((SECONDS - start)) s)"; }

step "1/7 de-identify real DICOM (PS3.15 Annex E basic profile, retain patient characteristics)"
if corpus="$("$PY" -c 'import data_store, pathlib; print(pathlib.Path(data_store.__file__).parent / "data")' 2>/dev/null)"; then
  dicoms=()
  for f in RG1_UNCR.dcm RG1_J2KR.dcm RG3_UNCR.dcm 693_UNCR.dcm; do dicoms+=("$corpus/$f"); done
  "$RL" deid "${dicoms[@]}" "$OUT/deid"
else
  echo "demo: the pydicom-data package is not installed; de-identifying the SIIM chest DICOM only"
fi
# The SIIM chest DICOM is a Secondary Capture without BurnedInAnnotation: refused by default, since text may be
# burned into its pixels. This image has none (it was looked at), so it is passed on explicitly.
siim="$RADIOLENS_DATA_DIR/siim_acr_pneumothorax/dicom"
if "$RL" deid "$siim" "$OUT/deid-reviewed"; then
  echo "demo: the SIIM DICOM was not refused, although radiolens refuses Secondary Captures by default" >&2
  exit 1
fi
echo "SIIM Secondary Capture refused by default (possible burned-in text); reviewed, passed with --allow-burned-in:"
"$RL" deid "$siim" "$OUT/deid-reviewed" --allow-burned-in

step "2/7 previews of the de-identified DICOM and the NIH full-resolution PNGs"
previews=("$OUT/deid-reviewed")
[ -d "$OUT/deid" ] && previews+=("$OUT/deid")
"$RL" preview "${previews[@]}" "$RADIOLENS_DATA_DIR/nih_chestxray14/images_fullres" --out "$OUT/previews"

step "3/7 PneumoniaMNIST manifest"
if [ -f "$RADIOLENS_DATA_DIR/medmnist/pneumoniamnist.npz" ]; then
  root="$RADIOLENS_DATA_DIR/medmnist"
  echo "offline copy: $root/pneumoniamnist.npz"
else
  root="$HOME/.medmnist"
  echo "no offline copy under $RADIOLENS_DATA_DIR/medmnist: the medmnist package downloads it into $root"
fi
"$RL" make-manifest medmnist pneumoniamnist --root "$root" --out "$OUT/pneumoniamnist/data"

step "4/7 train (configs/pneumoniamnist.yaml, $EPOCHS epochs)"
"$RL" train --config configs/pneumoniamnist.yaml --manifest "$OUT/pneumoniamnist/data/manifest.csv" \
  --out "$OUT/pneumoniamnist" --epochs "$EPOCHS" --n-bootstrap "$BOOTSTRAP" --no-progress

step "5/7 evaluate the saved model on the test split (temperature + threshold fitted on val)"
"$RL" evaluate --model "$OUT/pneumoniamnist/model.pt" --manifest "$OUT/pneumoniamnist/manifest_used.csv" \
  --split test --val-split val --n-bootstrap "$BOOTSTRAP" --out "$OUT/pneumoniamnist/eval"

step "6/7 monitoring baseline: the input gate learns its rules and threshold from the val split's patients"
# fails (non-zero) if the gate would refuse far more of the model's own kind of images than its 2 % target
"$RL" monitor baseline --model "$OUT/pneumoniamnist/model.pt" --manifest "$OUT/pneumoniamnist/manifest_used.csv" \
  --split val --out "$OUT/pneumoniamnist/model-monitored.pt"

step "7/7 batch-score the test split through the input gate"
"$RL" predict "$OUT/pneumoniamnist/manifest_used.csv" --split test --model "$OUT/pneumoniamnist/model-monitored.pt" \
  --out "$OUT/pneumoniamnist/predictions.csv" --overwrite --no-progress

echo
echo "== done in $((SECONDS - start)) s. Outputs:"
echo "  de-identified DICOM + report : $OUT/deid/, $OUT/deid-reviewed/ (deid_report.csv, deid_report.json)"
echo "  previews                     : $OUT/previews/"
echo "  manifest                     : $OUT/pneumoniamnist/data/manifest.csv"
echo "  model                        : $OUT/pneumoniamnist/model.pt"
echo "  training report              : $OUT/pneumoniamnist/report/report.html (+ metrics.json)"
echo "  evaluation report            : $OUT/pneumoniamnist/eval/report.html (+ metrics.json)"
echo "  monitored model (input gate) : $OUT/pneumoniamnist/model-monitored.pt"
echo "  test-split predictions       : $OUT/pneumoniamnist/predictions.csv"
echo "  MLflow store                 : sqlite:///$OUT/pneumoniamnist/mlflow.db"
