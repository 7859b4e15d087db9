#!/usr/bin/env bash
# `npm run down`: destroys the dev stack (containers, volumes with their data, network).
set -euo pipefail
# shellcheck source=dev-stack.sh
source "$(dirname "$0")/dev-stack.sh"
bash scripts/provision-docker.sh
# First: from here on the stack is not what the last `npm run up` left.
rm -f "$STAMP"
pulumi_stack destroy --yes --skip-preview --non-interactive
log "stack $STACK destroyed"
