#!/usr/bin/env bash
# The one entrypoint of every node, whatever its role (docs/design/primary-as-role.md, section B).
# PID 1 supervises PostgreSQL as a child instead of exec'ing it, so a switchover can stop the
# server (ctl.sh demote) without the container going away. The role lives in the data directory:
# a standby iff PGDATA/standby.signal exists, its upstream in PGDATA/postgresql.auto.conf. This
# script never creates or removes standby.signal, never runs initdb or a clone on an empty volume
# (the topology step does, through ctl.sh), and does not start a server while conf/hold exists.
# Only while the server runs in recovery does it watch its slot on its current upstream, and
# re-clone from that upstream if the slot was invalidated.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The state the signal trap reads, set before the trap exists: a signal that arrived between the
# trap and these lines would otherwise be forgotten.
stopping=0
pg_pid=""

# on_signal — docker stop: a fast shutdown of the server, then exit 0.
on_signal() {
  stopping=1
  stop_server
}

stop_server() {
  [ -z "$pg_pid" ] || kill -INT "$pg_pid" 2>/dev/null || true
}

# Passwords, kept out of the environment that postgres inherits and dropped after first use.
superuser_password=""
replication_password=""
converged=0

# take_secrets — reads both passwords from the passwords file into unexported variables (no
# server process carries them), then writes the replication passfile.
take_secrets() {
  pgc_read_secrets
  pgc_write_passfile "$replication_password"
  export PGPASSFILE="$PGC_PASSFILE"
  pgc_log "replication password file written ($PGC_PASSFILE, any host)"
}

# converge — on a start without standby.signal (a writable server): the configured passwords and
# the pg_rewind grants, in single-user mode before the server listens. Once per container start:
# the environment cannot change without replacing the container. A standby gets them by
# replication (and single-user mode refuses standby mode).
converge() {
  [ "$converged" = 0 ] || return 0
  pgc_log "setting the passwords of $PGC_SUPERUSER and $PGC_REPLICATION_USER and the pg_rewind grants (single-user mode)"
  pgc_single_user "$PGDATA" "$(pgc_setup_sql "$superuser_password" "$replication_password")"
  converged=1
  superuser_password=""
  replication_password=""
}

# wait_until_startable — returns once the volume holds a cluster and no hold is set; polls every
# 0.1 s (a stat costs microseconds), logging each new reason once. Returns 1 when told to stop.
wait_until_startable() {
  local why said=""
  while [ "$stopping" = 0 ]; do
    if [ -e "$PGC_CONF_DIR/hold" ]; then
      why="held: waiting for ctl.sh release"
    elif ! pgc_populated; then
      why="empty volume: waiting for the topology step (ctl.sh bootstrap-initdb or bootstrap-clone)"
    elif [ "$PGC_TLS" = on ] && ! pgc_tls_installed; then
      why="TLS is on but no certificate is installed: waiting for the topology step (ctl.sh tls)"
    else
      return 0
    fi
    if [ "$why" != "$said" ]; then
      pgc_log "$why"
      said="$why"
    fi
    sleep 0.1
  done
  return 1
}

# tls_as_configured — with TLS off for this node (PGC_TLS), a certificate left on the volume (a
# node turned back before its roll finished) is removed: the container's environment decides.
tls_as_configured() {
  if [ "$PGC_TLS" != on ] && [ -e "$PGC_TLS_DIR" ]; then
    pgc_log "TLS is off for this node: removing the certificate installed in $PGC_TLS_DIR"
    rm -rf "$PGC_TLS_DIR"
  fi
  pgc_tls_env
}

# start_server — postgres in the background, as a standby iff standby.signal exists, with the
# configuration rendered again (ctl.sh tls may have installed or removed TLS since the last start).
start_server() {
  local args
  tls_as_configured
  pgc_render_config
  mapfile -t args < <(pgc_start_args)
  if [ -e "$PGDATA/standby.signal" ]; then
    pgc_log "starting PostgreSQL (standby: standby.signal is present)"
  else
    pgc_log "starting PostgreSQL (primary: no standby.signal)"
  fi
  postgres "${args[@]}" &
  pg_pid=$!
  # A signal that came before pg_pid was set found no server to stop.
  [ "$stopping" = 0 ] || stop_server
}

# upstream_slot — one slot check of the running server: prints "promoted" once it left recovery,
# "lost HOST PORT SLOT CONNINFO" when its upstream invalidated its slot, and nothing otherwise
# (slot fine, no upstream set, upstream or server not answering). The upstream is read from the
# running server over the socket: ALTER SYSTEM + reload may have changed it since the start.
upstream_slot() {
  local row recovery conninfo slot host port
  row="$(pgc_local_psql -F $'\x1f' -c "SELECT pg_is_in_recovery(), current_setting('primary_conninfo'), current_setting('primary_slot_name')" 2>/dev/null)" ||
    return 0
  IFS=$'\x1f' read -r recovery conninfo slot <<<"$row"
  if [ "$recovery" != t ]; then
    echo promoted
    return 0
  fi
  host="$(pgc_conninfo_value host "$conninfo")"
  port="$(pgc_conninfo_value port "$conninfo")"
  port="${port:-5432}"
  if [ -n "$host" ] && [ -n "$slot" ] && [ "$(pgc_slot_state "$host" "$port" "$slot")" = lost ]; then
    printf 'lost %s %s %s %s\n' "$host" "$port" "$slot" "$conninfo"
  fi
}

# supervise STANDBY — waits until the server exits, setting server_status. While it runs in
# recovery (STANDBY=1 until it is seen promoted) it checks its slot every PGC_SLOT_CHECK_SECONDS;
# on a lost slot it stops the server and sets reclone to (HOST PORT SLOT CONNINFO).
supervise() {
  local watch="$1" sleeper verdict host port slot conninfo
  reclone=()
  while kill -0 "$pg_pid" 2>/dev/null; do
    if [ "$watch" = 0 ] || [ "$stopping" = 1 ] || [ "${#reclone[@]}" -gt 0 ]; then
      # Returns early on a trapped signal; the loop then waits again.
      wait "$pg_pid" || true
      continue
    fi
    # wait -n on both (bash 5.1+): a server that exits, or a signal, ends the tick at once, so a
    # stop or a demotion is not noticed only at the next tick.
    sleep "$PGC_SLOT_CHECK_SECONDS" &
    sleeper=$!
    wait -n "$pg_pid" "$sleeper" 2>/dev/null || true
    kill "$sleeper" 2>/dev/null || true
    wait "$sleeper" 2>/dev/null || true
    if [ "$stopping" = 1 ] || ! kill -0 "$pg_pid" 2>/dev/null; then continue; fi
    verdict="$(upstream_slot)"
    case "$verdict" in
      promoted)
        pgc_log "the server left recovery (promoted): slot watch off"
        watch=0
        ;;
      lost\ *)
        read -r _ host port slot conninfo <<<"$verdict"
        pgc_log "upstream $host:$port invalidated slot $slot (this standby fell behind max_slot_wal_keep_size); stopping to re-clone"
        reclone=("$host" "$port" "$slot" "$conninfo")
        stop_server
        ;;
    esac
  done
  server_status=0
  wait "$pg_pid" || server_status=$?
  pg_pid=""
}

# reclone HOST PORT SLOT CONNINFO — a new copy from the upstream that invalidated our slot, made a
# standby of the same upstream and slot again. Under ctl.sh's lock, so no verb interleaves.
reclone() {
  exec 9>>"$PGC_CONF_DIR/ctl.lock"
  flock -w 600 9 ||
    pgc_die "the node's control lock ($PGC_CONF_DIR/ctl.lock) stayed taken for 600 s; is a ctl.sh still running (docker exec)?"
  pgc_clone "$1" "$2" "$3" "$4" "slot lost"
  exec 9>&-
}

main() {
  pgc_become_postgres "$0" "$@"
  trap on_signal INT TERM
  pgc_require PGC_NODE_NAME PGC_SLOT_NAME PGC_SUPERUSER PGC_REPLICATION_USER PGC_DATABASE \
    PGC_MAX_WAL_SENDERS PGC_MAX_REPLICATION_SLOTS
  PGC_SLOT_CHECK_SECONDS="${PGC_SLOT_CHECK_SECONDS:-5}"
  take_secrets
  tls_as_configured
  pgc_render_config
  local standby
  while wait_until_startable; do
    pgc_clear_stale_pid
    standby=0
    if [ -e "$PGDATA/standby.signal" ]; then standby=1; else converge; fi
    [ "$stopping" = 0 ] || break
    start_server
    supervise "$standby"
    if [ "$stopping" = 1 ]; then
      break
    elif [ "${#reclone[@]}" -gt 0 ]; then
      reclone "${reclone[@]}"
    elif [ -e "$PGC_CONF_DIR/hold" ]; then
      pgc_log "PostgreSQL stopped (status $server_status) and the node is held"
    else
      pgc_log "PostgreSQL exited with status $server_status; exiting so the container's restart policy restarts the node"
      exit "$server_status"
    fi
  done
  pgc_log "stopped"
  exit 0
}

# Sourced (by a test, or ctl.sh), only the functions are defined; run, it supervises the node.
_is_sourced() {
  [ "${#FUNCNAME[@]}" -ge 2 ] && [ "${FUNCNAME[0]}" = _is_sourced ] && [ "${FUNCNAME[1]}" = source ]
}
if ! _is_sourced; then
  main "$@"
fi
