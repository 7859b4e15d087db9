# shellcheck shell=sh
# Source this file (`. scripts/env.sh`) to use the Pulumi toolchain that
# scripts/provision-toolchain.sh builds: its bin directory first on PATH, a private
# PULUMI_HOME with the provider plugins, and no network access from the CLI.
# POSIX sh, so any shell can source it; safe to source more than once.

# Same default as scripts/lib.sh, so both agree without sourcing each other.
PG_CLUSTER_CACHE="${PG_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pg-cluster}"
export PG_CLUSTER_CACHE

# Pinned versions. The provider versions must equal the npm packages' versions
# (@pulumi/docker, @pulumi/command): the SDK asks the engine for a plugin of exactly its
# own version, and the plugin cache matches versions exactly.
# The CLI may be newer than the npm SDK @pulumi/pulumi (a newer CLI runs an older SDK): the proxy
# serves only some pkg/v3 versions (v3.274.1 yes, v3.270.0 no).
export PULUMI_VERSION=3.274.1
export DOCKER_PROVIDER_VERSION=5.2.0
export COMMAND_PROVIDER_VERSION=1.2.1

export PG_CLUSTER_TOOLCHAIN="$PG_CLUSTER_CACHE/toolchain"
export PULUMI_HOME="$PG_CLUSTER_CACHE/pulumi-home"
# The update check would call Pulumi Cloud; a missing plugin must be an error, not a download.
export PULUMI_SKIP_UPDATE_CHECK=true
# Run the TypeScript program without type-checking it on every up: `npm test` type-checks it
# (tsc --noEmit) and this saves seconds per up.
export PULUMI_NODEJS_TRANSPILE_ONLY=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true

case "$PATH" in
  "$PG_CLUSTER_TOOLCHAIN/bin:"*) ;;
  *) PATH="$PG_CLUSTER_TOOLCHAIN/bin:$PATH" ;;
esac
export PATH
