#!/usr/bin/env bash
# Shared helpers for the shell entry points. Source it; do not run it.
# Slow results (toolchain, image rootfs) are cached outside the repo so a fresh clone reuses them.

PG_CLUSTER_CACHE="${PG_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pg-cluster}"
export PG_CLUSTER_CACHE

# log MESSAGE... — one line per step, prefixed so it is easy to grep in CI output.
log() { printf '[pg-cluster] %s\n' "$*" >&2; }

# die MESSAGE... — stop with a message that says what to do.
die() { printf '[pg-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# need_root WHAT — installing packages or starting dockerd needs root.
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root; re-run as root or do it by hand."; }

# apt_install PKG... — install Debian packages once; runs `apt-get update` at most once per process.
apt_install() {
  local missing=() p
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get: install them by hand."
  need_root "installing ${missing[*]}"
  if [ -z "${PG_CLUSTER_APT_UPDATED:-}" ]; then
    log "apt-get update"
    apt-get update -q >/dev/null
    export PG_CLUSTER_APT_UPDATED=1
  fi
  log "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
