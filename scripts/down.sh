#!/usr/bin/env bash
# `npm run down`: destroys the dev stack (containers, volumes with their data, network); a backup
# repository (its volume, or its directory: backupRepositoryPath) is kept (see README, "Backups
# and restore").
set -euo pipefail
# shellcheck source=dev-stack.sh
source "$(dirname "$0")/dev-stack.sh"
bash scripts/provision-docker.sh
# First: from here on the stack is not what the last `npm run up` left.
rm -f "$STAMP"
pulumi_stack destroy --yes --skip-preview --non-interactive
log "stack $STACK destroyed"
# The backup repository outlives the cluster (a restore needs it most then); a new cluster of the
# same name would find its stanza is another cluster's and stop.
path="$(pulumi_stack config get backupRepositoryPath 2>/dev/null || true)"
if [ -n "$path" ] && [ -e "$path/backup" ]; then
  log "kept the backup repository in $path: restore from it into another stack (restoreRepository $path), or empty it before the next npm run up with backups"
elif docker volume inspect "pg-cluster-$STACK-backup" >/dev/null 2>&1; then
  log "kept the backup repository volume pg-cluster-$STACK-backup: restore from it into another stack (restoreRepository), or remove it (docker volume rm pg-cluster-$STACK-backup) before the next npm run up with backups"
fi
