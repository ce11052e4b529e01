#!/usr/bin/env bash
# Rebuilds the web viewer (web/ -> src/radiolens/serve/http/static/app/) from the lockfile. The built files are
# committed, so installing radiolens needs no Node; run this after changing web/ and commit the output.
set -euo pipefail
cd "$(dirname "$0")/../web"
npm ci --no-audit --no-fund
npm run build
