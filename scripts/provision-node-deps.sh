#!/usr/bin/env bash
# Installs the npm dependencies from the lockfile when node_modules is missing or stale.
# --ignore-scripts: @pulumi/* install scripts try to download plugins, which cannot work offline
# (the toolchain script installs them from source instead).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source scripts/lib.sh
command -v node >/dev/null || die "Node.js 20+ is required: install it (Debian: apt-get install nodejs npm)."
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci --ignore-scripts"
  npm ci --ignore-scripts --no-audit --no-fund >/dev/null
fi
