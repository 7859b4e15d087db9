#!/usr/bin/env bash
# `npm run backup [full|diff|incr]`: a backup of the dev stack's cluster now. Sets the stack's
# backupTrigger to the current time (any new value takes a backup, of backupType, at the next up)
# and runs `npm run up`, which takes it (from a standby where it can: backupTarget) and prints
# the report; the `backup` output then names it and where it was read. Backups must be on (`npm
# run pulumi -- config set backup true`: turning them on rolls the nodes once, so it is a choice
# of its own, not made here).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source scripts/lib.sh
type="${1:-}"
case "$type" in "" | full | diff | incr) ;; *) die "usage: npm run backup [full|diff|incr] (got '$type')" ;; esac
pulumi_dev() { bash scripts/pulumi.sh "$@"; }
[ "$(pulumi_dev config get backup 2>/dev/null || true)" = true ] ||
  die "backups are off for the dev stack: npm run pulumi -- config set backup true, then npm run up (the nodes roll once; the first full backup is taken then)."
[ -z "$type" ] || pulumi_dev config set backupType "$type" >/dev/null
trigger="$(date -u +%Y%m%dT%H%M%SZ)"
pulumi_dev config set backupTrigger "$trigger" >/dev/null
log "backupTrigger = $trigger: npm run up takes the backup"
bash scripts/up.sh
bash scripts/pulumi.sh stack output backup
