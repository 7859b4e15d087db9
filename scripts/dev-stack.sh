#!/usr/bin/env bash
# Shared by up.sh and down.sh: the toolchain, the local file backend and the dev stack.
# Source it; do not run it.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="${PG_CLUSTER_STACK:-dev}"

bash "$REPO/scripts/provision-node-deps.sh"
bash "$REPO/scripts/provision-toolchain.sh"
# shellcheck source=env.sh
source "$REPO/scripts/env.sh"

# State stays with the project, on a file:// backend: no cloud login.
mkdir -p "$REPO/.state"
export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://$REPO/.state}"
# Secrets in the dev stack's config are encrypted with this passphrase; empty is allowed for the
# dev stack and is the default. Export your own before the first `npm run up` to change it.
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-}"
cd "$REPO"
pulumi stack select --create "$STACK" --non-interactive >/dev/null
# The stack's working config (with its generated, encrypted passwords) lives beside the state,
# not in the tracked Pulumi.<stack>.yaml, which stays the template it is copied from.
CONFIG_FILE="$REPO/.state/Pulumi.$STACK.yaml"
if [ ! -f "$CONFIG_FILE" ]; then
  if [ -f "$REPO/Pulumi.$STACK.yaml" ]; then cp "$REPO/Pulumi.$STACK.yaml" "$CONFIG_FILE"; else : >"$CONFIG_FILE"; fi
fi
# pulumi_stack ARGS... — pulumi on this stack with its working config.
pulumi_stack() { pulumi "$@" --stack "$STACK" --config-file "$CONFIG_FILE"; }

# has_plugins — true when the CLI has the docker and command provider plugins this program needs.
has_plugins() {
  [ -x "$PULUMI_HOME/plugins/resource-docker-v$DOCKER_PROVIDER_VERSION/pulumi-resource-docker" ] &&
    [ -x "$PULUMI_HOME/plugins/resource-command-v$COMMAND_PROVIDER_VERSION/pulumi-resource-command" ]
}

# apply_direct ACTION — the docker-direct driver (see README) with the stack's config on stdin.
apply_direct() {
  log "NOTE: the docker and command provider plugins are not installed (they cannot be built from the Go module proxy here); applying the program's resources with the docker-direct driver instead of the Pulumi engine. See README, 'What runs where'."
  pulumi_stack config --show-secrets --json |
    node --import tsx "$REPO/scripts/driver/apply.ts" "$1" "$STACK"
}
