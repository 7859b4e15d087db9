#!/usr/bin/env bash
# Several Docker hosts on this one machine, for the multi-host tests (issue 11): each "host" is a
# network namespace with its own dockerd (own data root, exec root, pidfile, socket and
# containerd namespaces), joined to the others by a bridge on a test-only subnet. Traffic goes
# only to those namespaces' addresses. Verified recipe: ../shared/notes/day2-research.md.
#
# Usage:
#   scripts/hosts.sh up N [IMAGE...]  start hosts h1..hN and load each IMAGE (from the main engine)
#                                     into every one; prints one line per host: NAME ADDRESS SOCKET
#   scripts/hosts.sh down             stop every host and remove all it made (also after a failure)
#   scripts/hosts.sh list             the running hosts, as `up` prints them
# Needs root, iproute2, iptables, nsenter (util-linux) and Debian's docker.io (provision-docker.sh).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# A subnet no Docker default and no test uses; the bridge takes .1, host n takes .(10 + n).
SUBNET_PREFIX="${PG_CLUSTER_HOSTS_PREFIX:-10.213.77}"
BRIDGE=pgc-hosts0
STATE="/run/pg-cluster-hosts"
DATA="/var/lib/pg-cluster-hosts"

host_address() { echo "$SUBNET_PREFIX.$((10 + $1))"; }
host_socket() { echo "$STATE/h$1.sock"; }

# engine N ARGS... — the docker CLI against host N's engine.
engine() {
  local n="$1"
  shift
  docker -H "unix://$(host_socket "$n")" "$@"
}

list() {
  local f n
  for f in "$STATE"/h*.pid; do
    [ -e "$f" ] || continue
    n="${f##*/h}"
    n="${n%.pid}"
    echo "h$n $(host_address "$n") unix://$(host_socket "$n")"
  done
}

start_host() {
  local n="$1" ns="pgc-h$1" addr
  addr="$(host_address "$n")"
  ip netns add "$ns"
  ip link add "pgc-h$n-o" type veth peer name "pgc-h$n-i"
  ip link set "pgc-h$n-i" netns "$ns"
  ip link set "pgc-h$n-o" master "$BRIDGE" up
  ip -n "$ns" link set lo up
  ip -n "$ns" link set "pgc-h$n-i" name eth0
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$SUBNET_PREFIX.1"
  mkdir -p "$DATA/h$n" "$STATE/h$n-exec"
  # nsenter --net, not `ip netns exec`: that remounts /sys in a new mount namespace, and dockerd
  # then fails with "Devices cgroup isn't mounted".
  nsenter --net="/var/run/netns/$ns" dockerd \
    --data-root "$DATA/h$n" --exec-root "$STATE/h$n-exec" --pidfile "$STATE/h$n.pid" \
    -H "unix://$(host_socket "$n")" --containerd-namespace "pgc-h$n" \
    --containerd-plugins-namespace "pgc-h${n}p" >"$STATE/h$n.log" 2>&1 &
}

up() {
  local count="$1" n i
  shift
  [[ "$count" =~ ^[1-9]$ ]] || die "usage: scripts/hosts.sh up N [IMAGE...] (N from 1 to 9, got '$count')"
  need_root "starting Docker engines in network namespaces"
  local tool
  for tool in nsenter ip iptables; do
    command -v "$tool" >/dev/null || die "$tool is needed: apt-get install util-linux iproute2 iptables"
  done
  command -v dockerd >/dev/null || die "dockerd is missing: run scripts/provision-docker.sh first."
  [ -z "$(list)" ] || die "hosts are already running (scripts/hosts.sh list); run scripts/hosts.sh down first."
  mkdir -p "$STATE"
  ip link add "$BRIDGE" type bridge
  ip addr add "$SUBNET_PREFIX.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # The main engine set FORWARD's policy to DROP: allow host-to-host traffic on the bridge only.
  iptables -I DOCKER-USER -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null ||
    iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  for n in $(seq 1 "$count"); do start_host "$n"; done
  for n in $(seq 1 "$count"); do
    for i in $(seq 1 300); do
      engine "$n" info >/dev/null 2>&1 && break
      [ "$i" -lt 300 ] || die "the engine of host h$n did not answer within 30 s; its log: $STATE/h$n.log"
      sleep 0.1
    done
  done
  # No registry: every image is copied from the main engine, saved once (`docker save`, a CPU-bound
  # tar of every layer) and loaded into each engine from that file.
  local image pids=() archive="$STATE/images.tar"
  for image in "$@"; do
    docker image inspect "$image" >/dev/null 2>&1 || die "image $image is not in the main engine: build it first (scripts/provision-image.sh --local)."
  done
  if [ $# -gt 0 ]; then
    docker save -o "$archive" "$@" || die "docker save $* failed"
    for n in $(seq 1 "$count"); do
      engine "$n" load -q -i "$archive" >/dev/null &
      pids+=("$!")
    done
    for i in "${pids[@]}"; do wait "$i" || die "loading the images into a host failed"; done
    rm -f "$archive"
  fi
  list
}

down() {
  local f pid n
  for f in "$STATE"/h*.pid; do
    [ -e "$f" ] || continue
    n="${f##*/h}"
    n="${n%.pid}"
    # Containers first (their volumes and networks go with the data root).
    engine "$n" ps -aq 2>/dev/null | xargs -r timeout 60 docker -H "unix://$(host_socket "$n")" rm -f >/dev/null 2>&1 || true
    pid="$(cat "$f")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    # Its containerd, should it have outlived dockerd (its state is under the exec root).
    pkill -9 -f -- "$STATE/h$n-exec" 2>/dev/null || true
    rm -f "$f"
  done
  for ns in $(ip netns list 2>/dev/null | awk '/^pgc-h[0-9]/ {print $1}'); do ip netns del "$ns"; done
  ip link del "$BRIDGE" 2>/dev/null || true
  while iptables -D DOCKER-USER -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null; do :; done
  while iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null; do :; done
  # Leftover mounts of the engines (overlay, shm) keep the data roots busy until unmounted.
  grep -o " $DATA/[^ ]*\| $STATE/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$DATA" "$STATE"
}

case "${1:-}" in
  up) shift; [ $# -ge 1 ] || die "usage: scripts/hosts.sh up N [IMAGE...]"; up "$@" ;;
  down) down ;;
  list) list ;;
  *) die "usage: scripts/hosts.sh up N [IMAGE...] | down | list" ;;
esac
