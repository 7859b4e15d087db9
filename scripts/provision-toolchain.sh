#!/usr/bin/env bash
# Builds the Pulumi CLI and the plugins the stack needs from the Go module proxy (the only
# place this project's machines can get them), caches them under
# $PG_CLUSTER_CACHE/toolchain, and installs the provider plugins into $PULUMI_HOME.
# Idempotent: a stamp makes a repeated run a no-op. Use the result with `. scripts/env.sh`.
# Every component is required (`npm run up`, the end-to-end and fault layers and the benchmark run
# the real engine, and nothing stands in for it): if one is missing the script exits non-zero,
# naming it, why it is missing and its log.
#
#   scripts/provision-toolchain.sh               build what is missing
#   PG_CLUSTER_TOOLCHAIN_FORCE=1 scripts/...     ignore the stamp and check every step again
#                                                (e.g. after putting a plugin into ~/.pulumi/plugins)
set -euo pipefail

SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
. "$SCRIPTS/lib.sh"
# shellcheck source=scripts/env.sh
. "$SCRIPTS/env.sh"

TC="$PG_CLUSTER_TOOLCHAIN"
BIN="$TC/bin"
STAMP="$TC/stamp"
STATUS="$TC/status"
# The stamp is valid while these scripts (which hold every pin) are unchanged.
# (NUL-separated: the checkout's path may contain spaces.)
STAMP_KEY="$( (cat "$SCRIPTS/provision-toolchain.sh" "$SCRIPTS/env.sh"; find "$SCRIPTS/toolchain" -type f -print0 | LC_ALL=C sort -z | xargs -0 cat) | sha256sum | cut -c1-16)"

# --- Pins: the Go module and version behind each binary ---------------------------------
# An existing CLI at least this new runs the npm SDK (package.json pins @pulumi/pulumi 3.248.0).
MIN_PULUMI_VERSION=3.270.0
CLI_MODULE=github.com/pulumi/pulumi/pkg/v3
SDK_MODULE=github.com/pulumi/pulumi/sdk/v3
VERSION_X=github.com/pulumi/pulumi/sdk/v3/go/common/version.Version
# The Node.js language host has been its own module (sdk/nodejs/cmd/pulumi-language-nodejs/v3)
# since v3.69.0, without tags: only pseudo-versions of release commits reach it, the proxy
# refuses them, and it gives no commit hash for sdk/v3@v3.274.1 to build one from. v3.68.0 is
# the last release that had it inside sdk/v3; the CLI falls back to the older RPCs it speaks
# (GetRequiredPlugins), and it runs SDK 3.270 programs, TypeScript and dynamic providers
# included. Automation API inline programs (the e2e tests) need no language host at all.
LANGHOST_MODULE=$SDK_MODULE@v3.68.0
LANGHOST_PACKAGE=$SDK_MODULE/nodejs/cmd/pulumi-language-nodejs
# The official providers below are asked for first, so a machine whose proxy serves them builds
# them. Here the proxy refuses both, and scripts/toolchain/build-providers.sh (called below)
# builds our own stand-ins from served modules instead: see scripts/toolchain and README.
# pulumi-command v1.2.1 = commit 7f3eb6f3; the module sat in provider/ and has no tags.
COMMAND_MODULE=github.com/pulumi/pulumi-command/provider@v0.0.0-20260303235922-7f3eb6f3b77c
COMMAND_PACKAGE=github.com/pulumi/pulumi-command/provider/cmd/pulumi-resource-command
COMMAND_VERSION_X=github.com/pulumi/pulumi-command/provider/pkg/version.Version
# pulumi-docker v5.1.0 = commit e944612c (npm has 5.0.0 and 5.2.0, no 5.1.0) and the
# Terraform provider it wraps, kreuzwerker 5074970c (a git submodule, not in the module zip).
# Building it also takes a patched copy of the upstream module and a generated
# schema-embed.json, which this script has no recipe for: the proxy refuses both modules,
# so the script only asks for them and reports the answer (the stand-in is built instead).
DOCKER_MODULES="github.com/pulumi/pulumi-docker/provider/v5@v5.0.0-20260626165050-e944612c4c97 github.com/kreuzwerker/terraform-provider-docker@v0.0.0-20260618190003-5074970c71ce"

# --- Helpers ----------------------------------------------------------------------------
# version_ge A B: true when version A >= B (both without a leading v).
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]; }
now() { date +%s; }

# STATE[component] = "ok: ..." or "missing: ...", for the summary and the warm run.
declare -A STATE=()

# A refusal by the module proxy (403/404/410) is final for that version, not a transient error.
REFUSED='403 Forbidden|404 Not Found|410 Gone|not available|unknown revision|invalid version'
# refusal LOG: the first refusal line of a go command log.
refusal() { grep -m1 -E "$REFUSED" "$1" | sed -e 's/^[[:space:]]*//' -e 's/^"Error": "//' -e 's/\\n\\t/ /g' -e 's/",*$//'; }

# copy_replaces GOMOD: repeat a module's non-local `replace` lines in the current wrapper
# module. `go install mod@ver` refuses a module with replaces, and a dependency's replaces
# do not apply to the main module. Local ones (=> ../sdk) point into the same repository and
# are dropped: the wrapper requires those modules at the matching version instead.
copy_replaces() {
  local line old new
  while IFS= read -r line; do
    old="$(printf '%s' "${line%%=>*}" | awk '{ print (NF == 2 ? $1 "@" $2 : $1) }')"
    new="$(printf '%s' "${line#*=>}" | awk '{ print (NF == 2 ? $1 "@" $2 : $1) }')"
    case "$new" in .* | /*) continue ;; esac
    go mod edit -replace "$old=$new" || return
  done < <(sed -n -e 's/^replace[[:space:]]*//' -e '/=>/p' "$1")
}

# go_main NAME MODULE@VERSION PACKAGE OUTPUT TAGS LDFLAGS [MODULE@VERSION...]
# Builds one main package through a throwaway wrapper module in $TC/src/NAME, with the extra
# modules pinned too. Returns 2 when the proxy refuses a module version; dies on other errors.
go_main() {
  local name="$1" modver="$2" pkg="$3" out="$4" tags="$5" ldflags="$6"
  shift 6
  local dir="$TC/src/$name" logf="$TC/logs/$name.log"
  rm -rf "$dir" && mkdir -p "$dir" && : >"$logf"
  # `set -e` does not apply inside an `if` condition, hence the explicit `|| exit`.
  if (
    cd "$dir" || exit
    go mod init "example.invalid/pg-cluster-toolchain/$name" >>"$logf" 2>&1 || exit
    # -json reports a refusal on stdout, so keep all of it in the log.
    go mod download -json "$modver" >>"$logf" 2>&1 || exit
    gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p' "$logf" | tail -n1)"
    copy_replaces "$gomod" || exit
    go get "$pkg@${modver#*@}" "$@" >>"$logf" 2>&1 || exit
    go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$out.tmp" "$pkg" >>"$logf" 2>&1 || exit
    mv -f "$out.tmp" "$out"
  ); then return 0; fi
  grep -qE "$REFUSED" "$logf" && return 2
  tail -n 20 "$logf" >&2
  die "building $name from $modver failed; full log: $logf"
}

# existing_pulumi: a working `pulumi` outside our cache, new enough for the SDK.
existing_pulumi() {
  local p v path
  path="$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$BIN" | paste -sd: -)"
  p="$(PATH="$path" command -v pulumi)" || return 1
  v="$(timeout 30 "$p" version 2>/dev/null)" || return 1
  v="${v#v}"
  if ! version_ge "$v" "$MIN_PULUMI_VERSION"; then
    log "not using $p: version $v is older than $MIN_PULUMI_VERSION"
    return 1
  fi
  printf '%s\n' "$p"
}

# provider_source NAME VERSION: path of a plugin binary of exactly that version that is
# already here: our earlier build, or an existing Pulumi install's plugin cache (~/.pulumi).
provider_source() {
  local f
  for f in "$TC/plugins/pulumi-resource-$1-v$2" "$HOME/.pulumi/plugins/resource-$1-v$2/pulumi-resource-$1"; do
    [ -x "$f" ] && { printf '%s\n' "$f"; return 0; }
  done
  return 1
}

# install_plugin NAME VERSION BINARY: put a provider into $PULUMI_HOME's plugin cache, where
# the CLI looks it up by exact version; a no-op when the same binary is already there.
install_plugin() {
  local dst="$PULUMI_HOME/plugins/resource-$1-v$2/pulumi-resource-$1"
  if [ -f "$dst" ] && cmp -s "$3" "$dst"; then return 0; fi
  log "installing plugin resource $1 v$2 into $PULUMI_HOME"
  "$BIN/pulumi" plugin install resource "$1" "$2" --file "$3" --reinstall >"$TC/logs/plugin-$1.log" 2>&1 \
    || { cat "$TC/logs/plugin-$1.log" >&2; die "installing the $1 plugin from $3 failed (output above)."; }
}

# logs_of NAME: the logs that say why a component is missing.
logs_of() {
  case "$1" in
    command | docker) printf '%s' "$TC/logs/$1.log, $TC/logs/$1-provider.log" ;;
    *) printf '%s' "$TC/logs/$1.log" ;;
  esac
}

# require_all [verbose]: stop, naming each missing component, why and its log; with verbose (a
# cold run) also list what is there. The language host runs `npm run up`'s TypeScript program
# and the tests' local-program stacks, so it is required like the CLI and the two plugins.
require_all() {
  local name what missing=()
  for name in pulumi language-nodejs command docker; do
    case "${STATE[$name]:-missing}" in
      ok:*) [ -z "${1:-}" ] || log "toolchain: $name ${STATE[$name]#ok: }" ;;
      *)
        missing+=("$name")
        case "$name" in
          pulumi) what="Pulumi CLI" ;;
          language-nodejs) what="Node.js language host" ;;
          *) what="$name provider plugin" ;;
        esac
        log "toolchain: the $what is not installed: ${STATE[$name]#missing: } (log: $(logs_of "$name"))"
        ;;
    esac
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  die "the Pulumi toolchain in $TC lacks ${missing[*]} (reasons and logs above); npm run up, the e2e and fault layers and the benchmark all need it. Fix the cause named in the log, or put a plugin of exactly that version into ~/.pulumi/plugins, then run: PG_CLUSTER_TOOLCHAIN_FORCE=1 bash scripts/provision-toolchain.sh"
}

# stamp_valid: the stamp has this script's key and every path it lists still exists
# (a cache can be pruned by hand).
stamp_valid() {
  local f
  [ -z "${PG_CLUSTER_TOOLCHAIN_FORCE:-}" ] && [ -f "$STAMP" ] && [ -f "$STATUS" ] || return 1
  [ "$(head -n1 "$STAMP")" = "$STAMP_KEY" ] || return 1
  while IFS= read -r f; do [ -e "$f" ] || return 1; done < <(tail -n +2 "$STAMP")
}

load_status() { local k v; while IFS='=' read -r k v; do STATE[$k]="$v"; done <"$STATUS"; }

# --- Warm run ---------------------------------------------------------------------------
if stamp_valid; then
  load_status
  require_all
  log "toolchain up to date in $TC"
  exit 0
fi

# --- Cold run ---------------------------------------------------------------------------
mkdir -p "$BIN" "$TC/logs" "$TC/plugins" "$PULUMI_HOME"
exec 9>"$TC/.lock"
flock 9 # one provisioning at a time; whoever waited finds the work done
if stamp_valid; then load_status; require_all; log "toolchain up to date in $TC"; exit 0; fi
rm -f "$STAMP"
command -v go >/dev/null || die "Go is not installed: install Go >= 1.26 (Debian 12's golang is too old)."
export CGO_ENABLED=0
log "toolchain: $(go version | cut -d' ' -f3-), module cache $(go env GOMODCACHE), build cache $(go env GOCACHE)"
cli_ldflags="-s -w -X $VERSION_X=v$PULUMI_VERSION"

# 1. The CLI.
if [ -x "$BIN/pulumi" ] && [ ! -L "$BIN/pulumi" ] && [ "$("$BIN/pulumi" version 2>/dev/null)" = "v$PULUMI_VERSION" ]; then
  STATE[pulumi]="ok: v$PULUMI_VERSION (cached $BIN/pulumi)"
elif p="$(existing_pulumi)"; then
  # A symlink: the CLI resolves it and finds its own bundled plugins beside the real file.
  ln -sfn "$p" "$BIN/pulumi"
  rm -f "$BIN/pulumi-language-nodejs" "$BIN/pulumi-resource-pulumi-nodejs"
  STATE[pulumi]="ok: $("$p" version) (existing $p)"
  log "using the existing pulumi at $p"
else
  rm -f "$BIN/pulumi"
  log "building pulumi v$PULUMI_VERSION from $CLI_MODULE@v$PULUMI_VERSION (about 5 min on 2 cores, plus downloads)"
  t=$(now) rc=0
  go_main pulumi "$CLI_MODULE@v$PULUMI_VERSION" "$CLI_MODULE/cmd/pulumi" "$BIN/pulumi" osusergo,grpcnotrace \
    "$cli_ldflags" "$SDK_MODULE@v$PULUMI_VERSION" || rc=$?
  [ "$rc" = 0 ] || die "the module proxy refused the CLI: $(refusal "$TC/logs/pulumi.log")"
  STATE[pulumi]="ok: v$PULUMI_VERSION (built in $(($(now) - t)) s)"
  log "built pulumi v$PULUMI_VERSION in $(($(now) - t)) s"
fi
"$BIN/pulumi" version >/dev/null || die "$BIN/pulumi does not run: delete $TC and run this script again."

# 2. What the CLI bundles beside itself, for our own build: the Node.js language host and the
# dynamic-provider plugin (a shell script from the sdk module zip) that runs
# pulumi.dynamic.Resource providers.
if [ -L "$BIN/pulumi" ]; then
  STATE[language-nodejs]="ok: whatever the existing CLI bundles"
else
  sdkdir="$(go mod download -json "$SDK_MODULE@v$PULUMI_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
  install -m 0755 "$sdkdir/nodejs/dist/pulumi-resource-pulumi-nodejs" "$BIN/pulumi-resource-pulumi-nodejs"
  if [ -x "$BIN/pulumi-language-nodejs" ]; then
    STATE[language-nodejs]="ok: cached $BIN/pulumi-language-nodejs (from $LANGHOST_MODULE)"
  else
    log "building pulumi-language-nodejs from $LANGHOST_MODULE"
    t=$(now) rc=0
    go_main language-nodejs "$LANGHOST_MODULE" "$LANGHOST_PACKAGE" "$BIN/pulumi-language-nodejs" \
      osusergo,grpcnotrace "-s -w -X $VERSION_X=${LANGHOST_MODULE#*@}" || rc=$?
    if [ "$rc" = 0 ]; then
      STATE[language-nodejs]="ok: from $LANGHOST_MODULE (built in $(($(now) - t)) s)"
    else
      STATE[language-nodejs]="missing: the module proxy refused it ($(refusal "$TC/logs/language-nodejs.log")); Automation API inline programs do not need it"
    fi
  fi
fi

# --- BEGIN scripts/toolchain section (pg-cluster's own provider builds) -------------------
# The proxy refuses the pulumi-docker and pulumi-command provider modules, so
# scripts/toolchain/build-providers.sh builds both plugins from served modules plus glue code
# of ours, into $TC/plugins/pulumi-resource-<name>-v<version>, which provider_source (steps
# 3 and 4) finds first. Idempotent (under a second when up to date); on failure steps 3 and 4
# report the plugin missing as before.
"$SCRIPTS/toolchain/build-providers.sh" \
  || log "WARNING: scripts/toolchain/build-providers.sh failed; logs: $TC/logs/docker-provider.log, $TC/logs/command-provider.log"
# --- END scripts/toolchain section --------------------------------------------------------

# 3. The command provider: an existing binary of the pinned version, else a build.
if src="$(provider_source command "$COMMAND_PROVIDER_VERSION")"; then
  STATE[command]="ok: v$COMMAND_PROVIDER_VERSION ($src)"
else
  src="$TC/plugins/pulumi-resource-command-v$COMMAND_PROVIDER_VERSION" t=$(now) rc=0
  log "building pulumi-resource-command v$COMMAND_PROVIDER_VERSION from $COMMAND_MODULE"
  go_main command "$COMMAND_MODULE" "$COMMAND_PACKAGE" "$src" "" \
    "-s -w -X $COMMAND_VERSION_X=$COMMAND_PROVIDER_VERSION" || rc=$?
  if [ "$rc" = 0 ]; then
    STATE[command]="ok: v$COMMAND_PROVIDER_VERSION (built in $(($(now) - t)) s)"
  else
    STATE[command]="missing: v$COMMAND_PROVIDER_VERSION cannot be built: $(refusal "$TC/logs/command.log")"
  fi
fi

# 4. The docker provider: an existing binary of the pinned version; otherwise ask the proxy
# for the modules a build needs and report its answer.
if src="$(provider_source docker "$DOCKER_PROVIDER_VERSION")"; then
  STATE[docker]="ok: v$DOCKER_PROVIDER_VERSION ($src)"
else
  STATE[docker]="missing: v$DOCKER_PROVIDER_VERSION has no build recipe here although the proxy serves $DOCKER_MODULES; write one (see shared/notes/toolchain-research.md)"
  for m in $DOCKER_MODULES; do
    if ! go mod download -json "$m" >"$TC/logs/docker.log" 2>&1; then
      STATE[docker]="missing: v$DOCKER_PROVIDER_VERSION cannot be built: $(refusal "$TC/logs/docker.log")"
      break
    fi
  done
fi

# Install the providers we have into the plugin cache and list them for the stamp.
stamp_paths=("$BIN/pulumi")
[ -L "$BIN/pulumi" ] || stamp_paths+=("$BIN/pulumi-resource-pulumi-nodejs")
[ -x "$BIN/pulumi-language-nodejs" ] && [ ! -L "$BIN/pulumi" ] && stamp_paths+=("$BIN/pulumi-language-nodejs")
for name in command docker; do
  case "${STATE[$name]}" in
    ok:*)
      ver=COMMAND_PROVIDER_VERSION
      [ "$name" = docker ] && ver=DOCKER_PROVIDER_VERSION
      src="$(provider_source "$name" "${!ver}")"
      install_plugin "$name" "${!ver}" "$src"
      stamp_paths+=("$PULUMI_HOME/plugins/resource-$name-v${!ver}/pulumi-resource-$name")
      ;;
  esac
done

# --- Stamp: the key, then every path the warm run expects to find -----------------------
for k in "${!STATE[@]}"; do printf '%s=%s\n' "$k" "${STATE[$k]}"; done >"$STATUS"
printf '%s\n' "$STAMP_KEY" "${stamp_paths[@]}" >"$STAMP"
require_all verbose
