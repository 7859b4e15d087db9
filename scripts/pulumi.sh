#!/usr/bin/env bash
# `npm run pulumi -- ARGS...` runs `pulumi ARGS...` on the dev stack (PG_CLUSTER_STACK, default
# dev) with what `npm run up` uses: the toolchain's CLI, the local file backend, the passphrase
# and the working config in .state/. A plain `pulumi` in a new shell has none of these (it asks
# for a Pulumi Cloud login). Examples:
#   npm run pulumi -- config set pgadmin true
#   npm run --silent pulumi -- config get superuserPassword
#   psql "$(npm run --silent pulumi -- stack output connectionString --show-secrets)"
set -euo pipefail
# Provisioning's messages to stderr: stdout is the command's (a password, an output).
# shellcheck source=dev-stack.sh
source "$(dirname "${BASH_SOURCE[0]}")/dev-stack.sh" >&2
[ $# -gt 0 ] || die "usage: npm run pulumi -- COMMAND [ARGS...] (e.g. config set pgadmin true; stack output)"
# The stack exists after the first `npm run up`; before it, `config set` must work too.
pulumi stack select --create "$STACK" --non-interactive >/dev/null
case "$1" in
  # Commands that read the stack's config take its working copy.
  config | up | preview | refresh | destroy) exec pulumi "$@" --stack "$STACK" --config-file "$CONFIG_FILE" ;;
  *) exec pulumi "$@" --stack "$STACK" ;;
esac
