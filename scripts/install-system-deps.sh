#!/usr/bin/env bash
# System packages the tests use for real: PostgreSQL (storage tests), Chromium (viewer tests), dicom3tools
# (dciodvfy validates every DICOM radiolens writes) and Orthanc (the PACS peer of the DICOM networking tests,
# tests/pacs/; it brings dcmtk) with its DICOMweb plugin (orthanc-dicomweb: STOW-RS of results), and kubectl
# (`kubectl kustomize` renders deploy/kubernetes/ offline for tests/deploy/test_kubernetes.py), Tesseract's
# English model (burned-in text in pixel data: radiolens.io.deid_ocr through the tesserocr wheel, which carries
# the engine itself; the service's default refuse policy)
# and the DejaVu/Noto fonts the de-identification benchmark renders synthetic burned-in text with.
# Idempotent; installs only what is missing. The container tools of the slow deployment tests (podman, runc,
# catatonit, mmdebstrap, podman-compose, the CNI dnsname plugin) are installed by scripts/build-image.sh and
# scripts/build-compose-images.sh when those run, not here.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
[ -x /usr/sbin/Orthanc ] || need+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v kubectl >/dev/null 2>&1 || need+=(kubectl)
ls /usr/share/tesseract-ocr/*/tessdata/eng.traineddata >/dev/null 2>&1 || need+=(tesseract-ocr-eng)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
[ -f /usr/share/fonts/truetype/noto/NotoSansMono-Regular.ttf ] || need+=(fonts-noto-mono)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing system packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
