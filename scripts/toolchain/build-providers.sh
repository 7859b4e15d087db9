#!/usr/bin/env bash
# Builds the two provider plugins the stack needs from modules the Go module proxy serves, plus
# pg-cluster's own glue code beside this script (the proxy refuses pulumi-docker's and
# pulumi-command's own provider modules):
#
#   pulumi-resource-docker  5.2.0  the Terraform docker provider (kreuzwerker) served through
#                                  pulumi-terraform-bridge, mapped onto @pulumi/docker's tokens
#   pulumi-resource-command 1.2.1  command:local:Command, written with pulumi-go-provider
#
# The binaries land in $PG_CLUSTER_TOOLCHAIN/plugins/pulumi-resource-<name>-v<version> (where
# scripts/provision-toolchain.sh looks for them) and, when the toolchain's pulumi CLI exists, are
# installed into $PULUMI_HOME. Idempotent: a binary whose key file matches the sources and pins
# is not rebuilt, and an identical installed plugin is not reinstalled.
#
#   scripts/toolchain/build-providers.sh            build what is missing or stale, install
#   scripts/toolchain/build-providers.sh docker     only one of them (docker | command)
#   PG_CLUSTER_PROVIDERS_FORCE=1 ...                rebuild even when the key matches
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
. "$HERE/../env.sh"

TC="$PG_CLUSTER_TOOLCHAIN"
OUT="$TC/plugins"
LOGS="$TC/logs"

# --- Pins (the modules' versions are also fixed by the go.mod.in/go.sum.in beside this) -------
# The Terraform provider: its module path is github.com/terraform-providers/terraform-provider-docker
# (go.mod), so it is fetched by its repository path and used as a local replace target, with
# shim/shim.go added (only code inside that module may import its internal/provider).
UPSTREAM=github.com/kreuzwerker/terraform-provider-docker@v0.0.0-20260916201441-96d331c98ff4
# pulumi-terraform-bridge/v3 v3.120.0 (newest served), pulumi pkg/sdk v3.218.0 (the bridge's own
# pin; v3.224+ break it), Pulumi's fork of terraform-plugin-sdk/v2 from 2026-03 (the bridge's
# 2025-09 pin lacks GenerateResourceConfig that terraform-plugin-go v0.31 needs): see go.mod.in.
# pulumi-go-provider v1.1.0 with pulumi pkg/sdk v3.169.0: see command/go.mod.in.

log() { printf '[build-providers] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s; }

command -v go >/dev/null || die "Go is not installed (needs >= 1.25)."
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false"
mkdir -p "$OUT" "$LOGS" "$TC/src"

# key NAME: a hash of everything that decides the binary: this script, env.sh (versions), the
# provider's glue directory and the Go version.
key() {
  {
    cat "$HERE/build-providers.sh" "$HERE/../env.sh"
    # NUL-separated: a checkout path may hold spaces.
    find "$HERE/$1" -type f -print0 | LC_ALL=C sort -z | xargs -0 cat
    go version
  } | sha256sum | cut -c1-16
}

# fresh BIN KEY: the binary exists and was built from these sources.
fresh() {
  [ -z "${PG_CLUSTER_PROVIDERS_FORCE:-}" ] && [ -x "$1" ] && [ -f "$1.key" ] && [ "$(cat "$1.key")" = "$2" ]
}

# workdir NAME: a clean build module with the glue sources and the pinned go.mod/go.sum.
workdir() {
  local w="$TC/src/$1-provider"
  rm -rf "$w" && mkdir -p "$w"
  cp -r "$HERE/$1/." "$w/"
  mv "$w/go.mod.in" "$w/go.mod" && mv "$w/go.sum.in" "$w/go.sum"
  printf '%s\n' "$w"
}

build_docker() {
  local bin="$OUT/pulumi-resource-docker-v$DOCKER_PROVIDER_VERSION" k w dir t logf="$LOGS/docker-provider.log"
  k="$(key docker)"
  if fresh "$bin" "$k"; then log "docker v$DOCKER_PROVIDER_VERSION up to date ($bin)"; return 0; fi
  t=$(now)
  log "building pulumi-resource-docker v$DOCKER_PROVIDER_VERSION (log: $logf)"
  w="$(workdir docker)"
  : >"$logf"
  (
    cd "$w"
    dir="$(go mod download -json "$UPSTREAM" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
    [ -n "$dir" ] || { go mod download -json "$UPSTREAM"; exit 1; }
    cp -r "$dir" upstream && chmod -R u+w upstream
    mv shim upstream/shim
    # tfgen first (the provider embeds the schema it writes); an empty placeholder lets the
    # provider package compile in the meantime.
    echo '{}' >cmd/pulumi-resource-docker/schema.json
    go build -trimpath -tags no_compose -o bin/pulumi-tfgen-docker ./cmd/pulumi-tfgen-docker
    ./bin/pulumi-tfgen-docker schema --out gen
    cp gen/schema.json cmd/pulumi-resource-docker/schema.json
    go build -trimpath -tags no_compose \
      -ldflags "-s -w -X example.invalid/pg-cluster-toolchain/docker-provider/pkg/dockerinfo.Version=$DOCKER_PROVIDER_VERSION" \
      -o bin/pulumi-resource-docker ./cmd/pulumi-resource-docker
    [ "$(./bin/pulumi-resource-docker -version)" = "$DOCKER_PROVIDER_VERSION" ]
  ) >>"$logf" 2>&1 || { tail -n 30 "$logf" >&2; die "building the docker provider failed; full log: $logf"; }
  install -m 0755 "$w/bin/pulumi-resource-docker" "$bin.tmp" && mv -f "$bin.tmp" "$bin"
  install -m 0644 "$w/gen/schema.json" "$OUT/docker-schema-v$DOCKER_PROVIDER_VERSION.json"
  printf '%s\n' "$k" >"$bin.key"
  log "built pulumi-resource-docker v$DOCKER_PROVIDER_VERSION in $(($(now) - t)) s"
}

build_command() {
  local bin="$OUT/pulumi-resource-command-v$COMMAND_PROVIDER_VERSION" k w t logf="$LOGS/command-provider.log"
  k="$(key command)"
  if fresh "$bin" "$k"; then log "command v$COMMAND_PROVIDER_VERSION up to date ($bin)"; return 0; fi
  t=$(now)
  log "building pulumi-resource-command v$COMMAND_PROVIDER_VERSION (log: $logf)"
  w="$(workdir command)"
  : >"$logf"
  (
    cd "$w"
    go build -trimpath -ldflags "-s -w -X main.Version=$COMMAND_PROVIDER_VERSION" \
      -o bin/pulumi-resource-command ./cmd/pulumi-resource-command
  ) >>"$logf" 2>&1 || { tail -n 30 "$logf" >&2; die "building the command provider failed; full log: $logf"; }
  install -m 0755 "$w/bin/pulumi-resource-command" "$bin.tmp" && mv -f "$bin.tmp" "$bin"
  printf '%s\n' "$k" >"$bin.key"
  log "built pulumi-resource-command v$COMMAND_PROVIDER_VERSION in $(($(now) - t)) s"
}

# install NAME VERSION: into $PULUMI_HOME's plugin cache, unless the same binary is there.
install_into_home() {
  local src="$OUT/pulumi-resource-$1-v$2" dst="$PULUMI_HOME/plugins/resource-$1-v$2/pulumi-resource-$1"
  if [ ! -x "$TC/bin/pulumi" ]; then log "no $TC/bin/pulumi yet: not installing $1 into PULUMI_HOME"; return 0; fi
  if [ -f "$dst" ] && cmp -s "$src" "$dst"; then return 0; fi
  log "installing plugin resource $1 v$2 into $PULUMI_HOME"
  "$TC/bin/pulumi" plugin install resource "$1" "$2" --file "$src" --reinstall >"$LOGS/plugin-$1.log" 2>&1 \
    || { cat "$LOGS/plugin-$1.log" >&2; die "installing the $1 plugin failed"; }
}

exec 8>"$TC/.providers.lock"
flock 8 # one build at a time

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(command docker)
for t in "${targets[@]}"; do
  case "$t" in
    docker) build_docker && install_into_home docker "$DOCKER_PROVIDER_VERSION" ;;
    command) build_command && install_into_home command "$COMMAND_PROVIDER_VERSION" ;;
    *) die "unknown provider '$t' (docker | command)" ;;
  esac
done
