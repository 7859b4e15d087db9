#!/usr/bin/env bash
# Ensure a working Docker engine: install Debian's docker.io and start dockerd in the background
# when `docker info` does not answer (these machines have no systemd and a client-only `docker`).
# Usage: scripts/provision-docker.sh [--compose]
#   --compose  also install Debian's docker-compose (1.29, used by the benchmark).
# Idempotent: a second run with the engine up is one `docker info` (plus a dpkg check with --compose).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

compose=""
for arg in "$@"; do
  case "$arg" in
    --compose) compose=1 ;;
    -h|--help) sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument '$arg'; usage: scripts/provision-docker.sh [--compose]" ;;
  esac
done

# docker_up — true when a daemon answers; bounded so a wedged socket cannot hang the caller.
docker_up() { command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; }

ensure_compose() {
  [ -n "$compose" ] || return 0
  if command -v docker-compose >/dev/null; then return 0; fi
  if [ "$(uname -s)" != Linux ] || ! command -v apt-get >/dev/null; then
    die "docker-compose is missing: install docker-compose (1.29+) by hand."
  fi
  need_root "installing docker-compose"
  apt_install docker-compose
  command -v docker-compose >/dev/null || die "docker-compose still not on PATH after apt-get install docker-compose."
  log "docker-compose $(docker-compose version --short 2>/dev/null || echo '?') installed"
}

if docker_up; then
  ensure_compose
  exit 0
fi

# No engine answers: only a Debian-like Linux as root can be fixed from here.
[ "$(uname -s)" = Linux ] \
  || die "no Docker engine answers and this is not Linux: install and start Docker Desktop (or colima), then re-run."
command -v apt-get >/dev/null \
  || die "no Docker engine answers and there is no apt-get: install Docker (dockerd, containerd, runc) with your package manager, start it, then re-run."
need_root "installing and starting the Docker engine (apt-get install docker.io; dockerd)"

apt_install docker.io
command -v dockerd >/dev/null || die "dockerd not found after installing docker.io: check 'dpkg -L docker.io'."

mkdir -p "$PG_CLUSTER_CACHE"
dockerd_log="$PG_CLUSTER_CACHE/dockerd.log"

# live NAME — a process of that name that is alive (a killed one can linger as a zombie).
live() {
  local pid
  for pid in $(pgrep -x "$1"); do
    case "$(ps -o stat= -p "$pid" 2>/dev/null)" in Z* | "") ;; *) return 0 ;; esac
  done
  return 1
}

started=""
start_dockerd() {
  # Only called with no live dockerd: a pid file left by a killed one would stop the new one
  # ("pid file found"), and so would its containerd's if that died with it.
  rm -f /var/run/docker.pid
  live containerd || rm -f /var/run/docker/containerd/containerd.pid /var/run/docker/containerd/containerd.sock
  log "starting dockerd in the background (log: $dockerd_log)"
  # setsid: own session, so the daemon outlives the caller's process group and terminal.
  setsid nohup dockerd >>"$dockerd_log" 2>&1 </dev/null &
  started=1
}

if live dockerd; then
  # Someone (perhaps a concurrent run of this script) started it already: just wait for it.
  log "dockerd is already running; waiting for it to answer"
else
  start_dockerd
fi

# Poll every 0.2 s for up to 30 s; dockerd is normally ready in about 3 s.
for _ in $(seq 150); do
  if timeout 5 docker info >/dev/null 2>&1; then
    log "Docker engine ready (server $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    ensure_compose
    exit 0
  fi
  if ! live dockerd; then
    # The one we waited for was shutting down (or was killed): start our own, once.
    if [ -z "$started" ]; then start_dockerd; continue; fi
    tail -n 20 "$dockerd_log" >&2 2>/dev/null || true
    die "dockerd exited during start-up (log above, full log: $dockerd_log); fix the cause and re-run."
  fi
  sleep 0.2
done
tail -n 20 "$dockerd_log" >&2 2>/dev/null || true
die "dockerd did not answer 'docker info' within 30 s (log above, full log: $dockerd_log); fix the cause and re-run."
