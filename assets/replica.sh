#!/usr/bin/env bash
# Entrypoint of a replica node. Waits for the primary (no crash loop), clones it with
# pg_basebackup through the replica's own physical slot on first start, starts as a hot standby,
# and supervises the server: if the primary reports the slot lost (the replica fell further behind
# than max_slot_wal_keep_size), it re-clones itself instead of failing forever on removed WAL.
# A populated volume is never re-cloned for any other reason.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
pgc_become_postgres "$0" "$@"
pgc_require PGC_PRIMARY_HOST PGC_PRIMARY_PORT PGC_REPLICATION_USER PGC_REPLICATION_PASSWORD PGC_SLOT_NAME

PGC_PRIMARY_WAIT_SECONDS="${PGC_PRIMARY_WAIT_SECONDS:-600}"
PGC_SLOT_CHECK_SECONDS="${PGC_SLOT_CHECK_SECONDS:-5}"
# Cap on the clone's transfer rate (pg_basebackup --max-rate, e.g. 8M). Not a component setting:
# the integration tests set it to make a clone slower than the post-step's patience.
PGC_CLONE_MAX_RATE="${PGC_CLONE_MAX_RATE:-}"
NODE_STATE="$PGDATA/pg-cluster-node.json"

# The password reaches libpq through a passfile (0600), never a command line or the conninfo.
passfile="$PGC_CONF_DIR/replication.pgpass"
pgpass_field() { local v="${1//\\/\\\\}"; printf '%s' "${v//:/\\:}"; }
(
  umask 077
  printf '%s:%s:*:%s:%s\n' "$(pgpass_field "$PGC_PRIMARY_HOST")" "$PGC_PRIMARY_PORT" \
    "$(pgpass_field "$PGC_REPLICATION_USER")" "$(pgpass_field "$PGC_REPLICATION_PASSWORD")" >"$passfile"
)
unset PGC_REPLICATION_PASSWORD PGC_SUPERUSER_PASSWORD
export PGPASSFILE="$passfile"
replication_conn="host=$PGC_PRIMARY_HOST port=$PGC_PRIMARY_PORT user=$PGC_REPLICATION_USER dbname=replication replication=true connect_timeout=5 application_name=$PGC_NODE_NAME-control"

# wait_for_primary — polls every 0.1 s (a refused connection costs about a millisecond), so the
# clone starts as soon as the primary accepts connections; bounded by PGC_PRIMARY_WAIT_SECONDS.
wait_for_primary() {
  local started=$SECONDS logged=-1
  until pg_isready -q -h "$PGC_PRIMARY_HOST" -p "$PGC_PRIMARY_PORT" -t 1; do
    if [ $(((SECONDS - started) / 5)) != "$logged" ]; then
      logged=$(((SECONDS - started) / 5))
      pgc_log "waiting for the primary at $PGC_PRIMARY_HOST:$PGC_PRIMARY_PORT"
    fi
    [ $((SECONDS - started)) -lt "$PGC_PRIMARY_WAIT_SECONDS" ] ||
      pgc_die "the primary at $PGC_PRIMARY_HOST:$PGC_PRIMARY_PORT did not accept connections within ${PGC_PRIMARY_WAIT_SECONDS}s; check its logs (docker logs)."
    sleep 0.1
  done
}

# slot_state — prints ok, lost, missing or unknown. READ_REPLICATION_SLOT (PostgreSQL 15+) shows an
# invalidated slot with an empty restart_lsn; our slots always reserve WAL when created.
slot_state() {
  local row
  row="$(psql "$replication_conn" -XAtq -c "READ_REPLICATION_SLOT $PGC_SLOT_NAME" 2>/dev/null)" || {
    echo unknown
    return 0
  }
  case "$row" in
    "||" | "") echo missing ;;
    physical\|\|*) echo lost ;;
    physical\|*) echo ok ;;
    *) echo unknown ;;
  esac
}

replication_command() {
  psql "$replication_conn" -XAtq -v ON_ERROR_STOP=1 -c "$1" >/dev/null
}

# ensure_slot — the slot must exist and reserve WAL *before* the clone starts: a slot created by
# pg_basebackup -C reserves WAL only after the backup's checkpoint, and a clone running in
# parallel can recycle the segment in between (docs/pitfalls: "requested WAL segment … removed").
ensure_slot() {
  case "$(slot_state)" in
    ok) return 0 ;;
    lost)
      pgc_log "dropping lost slot $PGC_SLOT_NAME"
      replication_command "DROP_REPLICATION_SLOT $PGC_SLOT_NAME WAIT"
      ;;
  esac
  pgc_log "creating physical slot $PGC_SLOT_NAME on the primary (reserving WAL now)"
  replication_command "CREATE_REPLICATION_SLOT $PGC_SLOT_NAME PHYSICAL RESERVE_WAL" ||
    [ "$(slot_state)" = ok ] || pgc_die "cannot create slot $PGC_SLOT_NAME on the primary."
}

# clone REASON — a fresh copy of the primary into a scratch directory, swapped in only when
# complete, so a failed clone never destroys the data we had.
clone() {
  local reason="$1" clones=0 started
  [ -s "$NODE_STATE" ] && clones="$(sed -n 's/.*"clones": *\([0-9]*\).*/\1/p' "$NODE_STATE")"
  ensure_slot
  started="$(date +%s%N)"
  pgc_log "cloning the primary with pg_basebackup through slot $PGC_SLOT_NAME ($reason)"
  rm -rf "$PGDATA.new"
  # The application name lets the post-step see this clone's progress on the primary
  # (pg_stat_progress_basebackup), so it waits as long as the clone advances. Named after the
  # slot, not the node: PostgreSQL cuts application_name at 63 bytes, and node names can be long.
  PGAPPNAME="pgc-clone-$PGC_SLOT_NAME" pg_basebackup -h "$PGC_PRIMARY_HOST" -p "$PGC_PRIMARY_PORT" -U "$PGC_REPLICATION_USER" -w \
    -D "$PGDATA.new" -X stream -S "$PGC_SLOT_NAME" --checkpoint=fast --no-manifest --no-sync \
    ${PGC_CLONE_MAX_RATE:+"--max-rate=$PGC_CLONE_MAX_RATE"}
  printf '{"node": "%s", "clones": %d, "lastCloneReason": "%s", "lastClonedAt": "%s", "lastCloneMs": %d}\n' \
    "$PGC_NODE_NAME" "$((${clones:-0} + 1))" "$reason" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$((($(date +%s%N) - started) / 1000000))" >"$PGDATA.new/pg-cluster-node.json"
  # --no-sync above, then one syncfs before the rename and one after: as durable as
  # pg_basebackup's file-by-file fsync, and cheaper.
  pgc_log "flushing the clone to disk"
  pgc_syncfs "$PGDATA.new"
  rm -rf "$PGDATA"
  mv "$PGDATA.new" "$PGDATA"
  pgc_syncfs "$PGDATA"
  pgc_log "clone complete"
}

prepare() {
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -e "$PGDATA" ] && [ -n "$(ls -A "$PGDATA")" ]; then
      pgc_die "$PGDATA is not empty but holds no PostgreSQL cluster; move its contents away, pg-cluster will not overwrite them."
    fi
    wait_for_primary
    clone "initial clone"
    return 0
  fi
  pgc_clear_stale_pid
  # A populated replica serves reads even while the primary is away: it does not wait for it.
  # The slot check runs now if the primary answers, and every few seconds once running.
  case "$(slot_state)" in
    lost) pgc_log "the primary invalidated slot $PGC_SLOT_NAME (this replica fell behind max_slot_wal_keep_size)"
      clone "slot lost" ;;
    missing) ensure_slot
      pgc_log "data directory already initialised; starting it as-is" ;;
    *) pgc_log "data directory already initialised; starting it as-is" ;;
  esac
}

pg_pid=""
stop_server() { [ -z "$pg_pid" ] || kill -INT "$pg_pid" 2>/dev/null || true; }
trap 'stopping=1; stop_server' INT TERM
stopping=0

while :; do
  prepare
  [ "$stopping" = 0 ] || exit 0
  pgc_render_config replica
  touch "$PGDATA/standby.signal"
  mapfile -t args < <(pgc_start_args)
  pgc_log "starting PostgreSQL (hot standby of $PGC_PRIMARY_HOST:$PGC_PRIMARY_PORT, slot $PGC_SLOT_NAME)"
  postgres "${args[@]}" &
  pg_pid=$!
  reclone=0
  while kill -0 "$pg_pid" 2>/dev/null; do
    sleep "$PGC_SLOT_CHECK_SECONDS" &
    sleeper=$!
    wait "$sleeper" || true
    kill "$sleeper" 2>/dev/null || true
    # Once the server has been told to stop, wait for it, not for the next tick: looping on the
    # timer made every `docker stop` of a replica take PGC_SLOT_CHECK_SECONDS.
    [ "$stopping" = 0 ] || break
    if [ "$(slot_state)" = lost ]; then
      pgc_log "the primary invalidated slot $PGC_SLOT_NAME while running; stopping to re-clone"
      reclone=1
      stop_server
      break
    fi
  done
  status=0
  wait "$pg_pid" || status=$?
  pg_pid=""
  if [ "$reclone" = 1 ] && [ "$stopping" = 0 ]; then continue; fi
  exit "$status"
done
