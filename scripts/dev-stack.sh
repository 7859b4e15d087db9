#!/usr/bin/env bash
# Shared by up.sh and down.sh: the toolchain, the local file backend and the dev stack.
# Source it; do not run it.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="${PG_CLUSTER_STACK:-dev}"

bash "$REPO/scripts/provision-node-deps.sh"
# Stops, naming what is missing and its log, unless the CLI and both provider plugins are there.
bash "$REPO/scripts/provision-toolchain.sh"
# shellcheck source=env.sh
source "$REPO/scripts/env.sh"

# State stays with the project, on a file:// backend: no cloud login.
mkdir -p "$REPO/.state"
export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://$REPO/.state}"
# Secrets in the dev stack's config are encrypted with this passphrase; empty is allowed for the
# dev stack and is the default. Export your own before the first `npm run up` to change it.
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-}"
cd "$REPO" || die "cannot enter $REPO"
# The stack's working config (with its generated, encrypted passwords) lives beside the state,
# not in the tracked Pulumi.<stack>.yaml, which stays the template it is copied from.
CONFIG_FILE="$REPO/.state/Pulumi.$STACK.yaml"
if [ ! -f "$CONFIG_FILE" ]; then
  if [ -f "$REPO/Pulumi.$STACK.yaml" ]; then cp "$REPO/Pulumi.$STACK.yaml" "$CONFIG_FILE"; else : >"$CONFIG_FILE"; fi
fi
# The record of the last successful `npm run up`, which lets a no-op one skip `pulumi up`
# (scripts/dev-stack.mjs; the rule is in README, "The two commands").
STAMP="$REPO/.state/up-stamp.$STACK.json"

# pulumi_stack ARGS... — pulumi on this stack with its working config.
pulumi_stack() { pulumi "$@" --stack "$STACK" --config-file "$CONFIG_FILE"; }

# stack_state check|sources|record HASH|outputs|config — scripts/dev-stack.mjs on this stack.
stack_state() {
  PG_CLUSTER_REPO="$REPO" PG_CLUSTER_STACK="$STACK" PG_CLUSTER_CONFIG_FILE="$CONFIG_FILE" \
    PG_CLUSTER_UP_STAMP="$STAMP" node "$REPO/scripts/dev-stack.mjs" "$@"
}
