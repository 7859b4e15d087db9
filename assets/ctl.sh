#!/usr/bin/env bash
# Node control for the topology step (docs/design/primary-as-role.md, sections B–D), run as
#   docker exec <container> bash /opt/pg-cluster/ctl.sh VERB [ARGS]
# for what SQL cannot do: bootstrap an empty volume, stop a primary for good (demote), pg_rewind,
# re-point a stopped node. Every verb prints exactly one JSON line on stdout (the node's status
# after it), logs on stderr, and exits non-zero with a message on failure. The entrypoint
# (entrypoint.sh, PID 1) starts and stops the server around these verbs: it waits on an empty
# volume and while conf/hold exists. Verbs that change the node hold conf/ctl.lock.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  pgc_die "usage: ctl.sh status | bootstrap-initdb | bootstrap-restore STANZA [TIME | LSN SET] | bootstrap-clone HOST PORT | demote | undemote | rewind CONNINFO | reclone HOST PORT | release | follow HOST PORT | set-passwords (two lines on stdin) | tls (PEM blocks on stdin) | backup-stanza | backup full|diff|incr [HOST SERVER_PORT PG_PORT PG_PATH SOCKET_DIR] | backup-info | backup-serve CLIENT | backup-serve-stop"
}

HOLD="$PGC_CONF_DIR/hold"
# The node's passwords (pgc_read_secrets), unexported.
superuser_password=""
replication_password=""
# Extra fields of a verb's result line (`"key":value`), after the status.
result_extra=""

# json_string VALUE — VALUE as a JSON string (node names and pg_controldata values are plain text).
json_string() {
  local v="${1//\\/\\\\}"
  printf '"%s"' "${v//\"/\\\"}"
}

# print_status [EXTRA] — the node's status as one JSON line on the result descriptor (3), with
# EXTRA (`"key":value`) appended. Read from pg_controldata, which needs no running server.
print_status() {
  local volume=empty sysid=null state=null lsn=null tli=null standby=false hold=false running=false tls=false
  local out
  if pgc_populated; then
    volume=populated
    out="$(LC_ALL=C pg_controldata -D "$PGDATA")" ||
      pgc_die "pg_controldata cannot read $PGDATA (above); the data directory may be damaged."
    sysid="$(json_string "$(controldata_field "$out" "Database system identifier")")"
    state="$(json_string "$(controldata_field "$out" "Database cluster state")")"
    lsn="$(json_string "$(controldata_field "$out" "Latest checkpoint location")")"
    tli="$(controldata_field "$out" "Latest checkpoint's TimeLineID")"
  fi
  [ ! -e "$PGDATA/standby.signal" ] || standby=true
  [ ! -e "$HOLD" ] || hold=true
  ! pgc_server_running || running=true
  ! pgc_tls_installed || tls=true
  printf '{"node":%s,"volume":"%s","systemIdentifier":%s,"state":%s,"checkpointLsn":%s,"timeline":%s,"standby":%s,"hold":%s,"running":%s,"tls":%s%s}\n' \
    "$(json_string "$PGC_NODE_NAME")" "$volume" "$sysid" "$state" "$lsn" "${tli:-null}" \
    "$standby" "$hold" "$running" "$tls" "${1:+,$1}" >&3
}

# controldata_field OUTPUT LABEL — the value after "LABEL:" in pg_controldata's output.
controldata_field() {
  printf '%s\n' "$1" | sed -n "s/^$2:[[:space:]]*//p"
}

# lock — serialises the verbs that change the node (and the entrypoint's re-clone): a re-run step
# must not interleave with one still running.
lock() {
  exec 9>>"$PGC_CONF_DIR/ctl.lock"
  flock -w 120 9 ||
    pgc_die "another ctl.sh (or the entrypoint's re-clone) held the node's lock for 120 s; wait for it, or see docker logs $PGC_NODE_NAME."
}

# in_recovery — t or f from the running server.
in_recovery() { pgc_local_psql -c "SELECT pg_is_in_recovery()"; }

# accepting — true once the server accepts connections: the status line of postmaster.pid, which
# pg_ctl -w also reads ("ready" for a primary, "standby" for a hot standby). No connection is made,
# so a server still starting logs no "the database system is starting up" per poll.
accepting() {
  local status
  status="$(sed -n 8p "$PGDATA/postmaster.pid" 2>/dev/null)" || return 1
  [[ "$status" =~ ^(ready|standby)[[:space:]]*$ ]] && pgc_server_running
}

# wait_ready VERB — after a verb that lets the entrypoint start the server: waits (bounded by
# PGC_CTL_WAIT_SECONDS, default 60) until it accepts connections, so the step's next SQL works.
wait_ready() {
  local deadline=$((SECONDS + ${PGC_CTL_WAIT_SECONDS:-60})) said=0
  until accepting; do
    [ ! -e "$HOLD" ] || return 0
    if [ "$said" = 0 ]; then
      pgc_log "waiting for the entrypoint to start the server"
      said=1
    fi
    [ "$SECONDS" -lt "$deadline" ] ||
      pgc_die "$1 done, but the server did not accept connections within ${PGC_CTL_WAIT_SECONDS:-60} s; see docker logs $PGC_NODE_NAME."
    sleep 0.1
  done
}

# require_held_and_stopped VERB
require_held_and_stopped() {
  pgc_populated || pgc_die "refusing $1: the volume is empty; nothing was changed."
  [ -e "$HOLD" ] || pgc_die "refusing $1: the node is not held; run ctl.sh demote first. Nothing was changed."
  ! pgc_server_running ||
    pgc_die "refusing $1: the server is running; it must be stopped (ctl.sh demote). Nothing was changed."
}

# require_port PORT
require_port() {
  [[ "$1" =~ ^[0-9]+$ ]] || pgc_die "'$1' is not a port number; usage: ctl.sh bootstrap-clone|follow HOST PORT."
}

# create_database DIR — the cluster's database, by a server on DIR that listens only on a private
# socket (no network, trust for the postgres OS user alone), not in the single-user session: there
# a database gets an OID below 16384 (FirstNormalObjectId), and tools such as pgAdmin take it for a
# system database and hide it.
create_database() {
  local dir="$1" sock exists
  sock="$(mktemp -d)"
  printf 'local all all trust\n' >"$sock/hba.conf"
  pg_ctl -D "$dir" -w -s -l "$sock/log" \
    -o "-c listen_addresses= -c unix_socket_directories=$sock -c hba_file=$sock/hba.conf -c synchronous_standby_names=" start 3>&- ||
    { cat "$sock/log" >&2; pgc_die "could not start a private server on $dir to create the database (log above)."; }
  # A restored cluster may have it already.
  exists="$(psql -h "$sock" -U "$PGC_SUPERUSER" -d postgres -XAtq -v ON_ERROR_STOP=1 \
    -c "SELECT count(*) FROM pg_database WHERE datname = $(pgc_sql_literal "$PGC_DATABASE")")"
  [ "$exists" = 1 ] || psql -h "$sock" -U "$PGC_SUPERUSER" -d postgres -XAtq -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE $(pgc_sql_ident "$PGC_DATABASE")" >/dev/null
  pg_ctl -D "$dir" -w -s -m fast stop
  rm -rf "$sock"
}

# bootstrap_initdb — a new cluster on an empty volume: initdb into
# a scratch directory (SCRAM, checksums, no standby.signal), the database and roles in one
# single-user session, then the flush-and-rename swap. The entrypoint then starts it.
bootstrap_initdb() {
  local setup
  pgc_require_empty
  pgc_log "initialising a new cluster (bootstrap-initdb)"
  rm -rf "$PGDATA.init"
  # --no-sync: pgc_swap_in flushes the file system once, as durable and about a third faster.
  initdb -D "$PGDATA.init" -U "$PGC_SUPERUSER" --pwfile=<(printf '%s\n' "$superuser_password") \
    --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 --data-checksums \
    --no-sync >/dev/null
  setup="$(pgc_setup_sql "$superuser_password" "$replication_password")"
  pgc_single_user "$PGDATA.init" "$setup"
  [ "$PGC_DATABASE" = postgres ] || create_database "$PGDATA.init"
  stanza_before_start "$PGDATA.init"
  pgc_swap_in "$PGDATA.init"
  pgc_log "cluster initialised with database $PGC_DATABASE; the entrypoint starts it as the primary"
  wait_ready bootstrap-initdb
}

# bootstrap_restore STANZA [TIME | LSN SET] — a new cluster on an empty volume from another
# cluster's pgBackRest repository (PGC_RESTORE_REPO, mounted read-only: a restore never writes
# into it). pgBackRest restores the latest backup that ended before TIME (or the backup SET, which
# ended before LSN) into a scratch directory; a server on a private socket (no network, no
# archiving) recovers it with that repository's WAL, to TIME or LSN or, without one, to the end of
# its archive, and promotes; then, stopped, the recovery settings are removed and this cluster's
# roles, passwords and database made as bootstrap-initdb makes them, and the flush-and-rename
# swap. The entrypoint then starts it as the primary.
bootstrap_restore() {
  local stanza="$1" target="${2:-}" set="${3:-}" dir="$PGDATA.restore" work="$PGC_VOLUME/pgbackrest" sock
  local args setup outcome
  pgc_require_empty
  [ -d "${PGC_RESTORE_REPO:-}" ] ||
    pgc_die "refusing bootstrap-restore: no repository at PGC_RESTORE_REPO ('${PGC_RESTORE_REPO:-}'); the component mounts the one restore.repository names. Nothing was changed."
  mkdir -p "$work/lock"
  {
    echo "[global]"
    echo "repo1-path=$PGC_RESTORE_REPO"
    echo "lock-path=$work/lock"
    echo "log-level-file=off"
    echo "log-level-console=warn"
    echo "log-level-stderr=warn"
    echo "[$stanza]"
    echo "pg1-path=$dir"
  } >"$work/restore.conf"
  rm -rf "$dir"
  mkdir -m 700 "$dir"
  args=(--config="$work/restore.conf" --stanza="$stanza")
  if [[ "$target" =~ ^[0-9A-F]+/[0-9A-F]+$ ]]; then
    [[ "$set" =~ ^[0-9A-Z_-]+$ ]] || pgc_die "bootstrap-restore STANZA LSN SET: SET is the backup's label (got '$set')."
    args+=(--type=lsn "--target=$target" "--set=$set" --target-action=promote)
  elif [ -n "$target" ]; then
    args+=(--type=time "--target=$target" --target-action=promote)
  fi
  pgc_log "restoring stanza $stanza from $PGC_RESTORE_REPO to ${target:-the end of its archive}"
  pgbackrest "${args[@]}" restore >&2 ||
    pgc_die "pgbackrest restore of stanza '$stanza' from $PGC_RESTORE_REPO failed (above); the volume holds no cluster."
  sock="$(mktemp -d)"
  printf 'local all all trust\n' >"$sock/hba.conf"
  outcome="$(recover "$dir" "$sock")"
  if [ "$outcome" = short ] && [ -n "$target" ] && archive_replayed "$sock/log" "$stanza" "$work/restore.conf"; then
    # No commit after TIME (or no record at or after LSN) in the archive, so its end is the
    # cluster as it was at the target, as far as the repository knows (PostgreSQL stops at a time
    # only on seeing a later commit; an LSN from pg_current_wal_lsn() of an idle primary is where
    # its next record will start). Recovery goes on from where it stopped, without the target.
    pgc_log "the archive holds no transaction after $target ($(grep -o 'last completed transaction was at log time .*' "$sock/log" | tail -n 1)): restoring to its end, which is the cluster at $target as far as the repository holds it"
    pgc_rewrite_auto_conf "$dir" 'recovery_target[a-z_]*'
    # A log of its own: the first run's "recovery ended before ..." must not answer for this one.
    mv "$sock/log" "$sock/log.to-target"
    outcome="$(recover "$dir" "$sock")"
  fi
  if [ "$outcome" != promoted ]; then
    tail -n 25 "$sock/log" >&2
    pg_ctl -D "$dir" -s -m immediate stop 2>/dev/null || true
    pgc_die "recovery of the restored data did not finish${target:+ at $target} (server log above; $outcome); the volume holds no cluster."
  fi
  pg_ctl -D "$dir" -w -s -m fast stop
  grep -E 'redo done|recovery stopping|last completed transaction|selected new timeline' "$sock/log" >&2 || true
  rm -rf "$sock"
  # Recovery's settings would apply again whenever this node recovers (a standby after a
  # switchover); the source's synchronous standbys and upstream are not this cluster's (its
  # commits would wait for standbys that never come): the topology step sets this cluster's.
  pgc_rewrite_auto_conf "$dir" 'restore_command|recovery_target[a-z_]*|archive_mode|synchronous_standby_names|primary_conninfo|primary_slot_name'
  setup="$(pgc_setup_sql "$superuser_password" "$replication_password")"
  pgc_single_user "$dir" "$setup"
  create_database "$dir"
  stanza_before_start "$dir"
  pgc_swap_in "$dir"
  pgc_log "cluster restored from stanza $stanza with database $PGC_DATABASE; the entrypoint starts it as the primary"
  wait_ready bootstrap-restore
}

# recover DIR SOCK — starts a server on the restored DIR listening only on the socket directory
# SOCK (log: SOCK/log) and waits, bounded by PGC_RESTORE_WAIT_SECONDS (default 3600), until it has
# recovered and promoted. Prints "promoted" (it runs), "short" (it stopped: the archive ended
# before the target), "failed" (it stopped otherwise) or "timeout" (it still runs).
recover() {
  local dir="$1" sock="$2" state waited=0 limit="${PGC_RESTORE_WAIT_SECONDS:-3600}"
  # The node's configuration (pgBackRest's restore_command and target come after it, in
  # postgresql.auto.conf), without network, archiving or TLS. Recovery refuses a max_wal_senders
  # or max_replication_slots below the source's: generous values here, the node's own at its start.
  # pg_ctl waits (bounded by the limit, not its 60 s) until the server accepts read-only sessions
  # (recovery consistent) or stops. Not on fd 3 (the verb's result): a server left running must
  # not hold the caller's output open.
  if ! pg_ctl -D "$dir" -w -t "$limit" -s -l "$sock/log" -o "-c config_file=$PGC_CONF_DIR/postgresql.conf \
-c listen_addresses= -c unix_socket_directories=$sock -c hba_file=$sock/hba.conf -c ssl=off \
-c archive_mode=off -c synchronous_standby_names= -c max_wal_senders=64 -c max_replication_slots=64" start >&2 3>&-; then
    if pg_ctl status -D "$dir" >/dev/null 2>&1; then echo timeout; else stopped_outcome "$sock"; fi
    return 0
  fi
  # Promoted once the server removed recovery.signal (pgBackRest's restore wrote it) and
  # pg_control says "in production": pg_control alone says so before the server has even started,
  # as the backup copied it from a running primary. A target it cannot reach stops the server.
  while state="$(LC_ALL=C pg_controldata -D "$dir" | sed -n 's/^Database cluster state:[[:space:]]*//p')" &&
    { [ -e "$dir/recovery.signal" ] || [ "$state" != "in production" ]; }; do
    if ! pg_ctl status -D "$dir" >/dev/null 2>&1; then
      stopped_outcome "$sock"
      return 0
    fi
    [ "$waited" -lt "$limit" ] || { echo timeout; return 0; }
    sleep 1
    waited=$((waited + 1))
  done
  echo promoted
}

# stopped_outcome SOCK — why a recovery server (log: SOCK/log) stopped: "short" when the archive
# ended before its target, "failed" otherwise.
stopped_outcome() {
  if grep -q 'recovery ended before configured recovery target was reached' "$1/log"; then
    echo short
  else
    echo failed
  fi
}

# archive_replayed LOG STANZA CONF — whether the recovery that wrote LOG replayed the repository's
# last archived WAL segment (pgBackRest's info: the newest archive's max), i.e. ran out of WAL at
# the end of the archive, not at a gap in it.
archive_replayed() {
  local last max
  last="$(sed -n 's/.*restored log file "\([0-9A-F]\{24\}\)" from archive.*/\1/p' "$1" | tail -n 1)"
  max="$(pgbackrest --config="$3" --stanza="$2" --output=json info |
    grep -o '"max":"[0-9A-F]\{24\}"' | tail -n 1 | sed 's/.*:"\(.*\)"/\1/')"
  [ -n "$last" ] && [ -n "$max" ] && [ "${last:8}" = "${max:8}" ]
}

# bootstrap_clone HOST PORT — a standby of HOST:PORT on an empty volume, through this node's slot.
bootstrap_clone() {
  pgc_require_empty
  pgc_clone "$1" "$2" "$PGC_SLOT_NAME" "$(pgc_upstream_conninfo "$1" "$2")" "initial clone"
  wait_ready bootstrap-clone
}

# demote — stops a primary for good: hold (the entrypoint will not restart it) and standby.signal
# (it can only come back as a standby), a checkpoint so the shutdown checkpoint is short, then a
# fast stop, during which every walsender sends its standby all WAL up to the shutdown
# checkpoint. The status then shows state "shut down" and that checkpoint's location.
demote() {
  pgc_populated || pgc_die "refusing demote: the volume is empty; nothing was changed."
  if pgc_server_running && [ "$(in_recovery)" = t ]; then
    pgc_die "refusing demote: $PGC_NODE_NAME is a standby (in recovery); only a primary is demoted. Nothing was changed."
  fi
  touch "$HOLD" "$PGDATA/standby.signal"
  pgc_log "hold and standby.signal written"
  pgc_server_running || return 0
  pgc_log "checkpoint, then fast stop"
  if ! pgc_local_psql -c CHECKPOINT >/dev/null || ! pg_ctl stop -D "$PGDATA" -m fast -w -t 60; then
    rm -f "$PGDATA/standby.signal" "$HOLD"
    pgc_die "demote failed: the server did not stop (above). standby.signal and hold were removed: $PGC_NODE_NAME stays the primary."
  fi
  pgc_log "demoted: the server is shut down and held"
}

# undemote — back to primary after a demotion the step could not finish: standby.signal first,
# then hold, so the entrypoint starts it writable.
undemote() {
  pgc_populated || pgc_die "refusing undemote: the volume is empty; nothing was changed."
  if [ -e "$PGDATA/standby.signal" ] && [ ! -e "$HOLD" ]; then
    pgc_die "refusing undemote: $PGC_NODE_NAME is a standby that was not demoted (no hold); it would become a second primary. Nothing was changed."
  fi
  if pgc_server_running && [ "$(in_recovery)" = t ]; then
    pgc_die "refusing undemote: $PGC_NODE_NAME runs as a standby. Nothing was changed."
  fi
  rm -f "$PGDATA/standby.signal"
  rm -f "$HOLD"
  pgc_log "standby.signal and hold removed: the entrypoint starts the node as the primary"
  wait_ready undemote
}

# rewind CONNINFO — pg_rewind of the held, stopped node from the source server (PGPASSFILE has
# the replication role's password). A rewind that
# copies files takes the source's non-relation files too, among them postgresql.auto.conf and
# pg-cluster-node.json, and removes standby.signal (absent on the source): this node's own are
# put back, so it stays a standby of the upstream it had. Adds "rewind":"done"|"not needed".
rewind() {
  local out verdict state="" upstream=""
  require_held_and_stopped rewind
  [ ! -s "$PGDATA/$PGC_NODE_STATE_FILE" ] || state="$(cat "$PGDATA/$PGC_NODE_STATE_FILE")"
  if [ -f "$PGDATA/postgresql.auto.conf" ]; then
    upstream="$(grep -E '^[[:space:]]*(primary_conninfo|primary_slot_name)[[:space:]]*=' "$PGDATA/postgresql.auto.conf" || true)"
  fi
  pgc_log "pg_rewind from the source server"
  if ! out="$(pg_rewind --target-pgdata="$PGDATA" --source-server="$1" --progress \
    --config-file="$PGC_CONF_DIR/postgresql.conf" 2>&1)"; then
    printf '%s\n' "$out" >&2
    pgc_die "pg_rewind failed (above); the node stays held. If its WAL since the fork is gone, it needs a new clone."
  fi
  printf '%s\n' "$out" >&2
  if [[ "$out" == *"no rewind required"* ]]; then
    verdict="not needed"
  else
    verdict="done"
    restore_after_rewind "$state" "$upstream"
  fi
  touch "$PGDATA/standby.signal"
  pgc_log "rewind: $verdict"
  result_extra="\"rewind\":\"$verdict\""
}

# restore_after_rewind STATE UPSTREAM_LINES — puts back what a copying rewind replaced.
restore_after_rewind() {
  local conf="$PGDATA/postgresql.auto.conf"
  rm -f "$PGDATA/$PGC_NODE_STATE_FILE"
  [ -z "$1" ] || printf '%s\n' "$1" >"$PGDATA/$PGC_NODE_STATE_FILE"
  [ -n "$2" ] || return 0
  {
    grep -vE '^[[:space:]]*(primary_conninfo|primary_slot_name)[[:space:]]*=' "$conf" || true
    printf '%s\n' "$2"
  } >"$conf.pgc"
  chmod 600 "$conf.pgc"
  mv "$conf.pgc" "$conf"
}

# reclone HOST PORT — a held, stopped node whose pg_rewind failed (its WAL since the fork is gone,
# say) gets a fresh copy of HOST:PORT, swapped in only when complete. It stays held: release
# starts it.
reclone() {
  require_held_and_stopped reclone
  pgc_clone "$1" "$2" "$PGC_SLOT_NAME" "$(pgc_upstream_conninfo "$1" "$2")" "rewind failed"
  touch "$HOLD"
}

# follow HOST PORT — the held, stopped node's upstream, written where ALTER SYSTEM keeps it, so
# that once released it starts streaming from HOST:PORT through its own slot at once.
follow() {
  require_held_and_stopped follow
  pgc_set_upstream "$PGDATA" "$(pgc_upstream_conninfo "$1" "$2")" "$PGC_SLOT_NAME"
  pgc_log "upstream set: $1:$2 through slot $PGC_SLOT_NAME"
}

# set-passwords — on a running primary, sets the superuser's and the replication role's passwords
# to the two lines on stdin (new ones from config; this container's environment still has the old
# ones), over the local socket. Standbys get them by replication. For a roll: the first container
# replaced must find the primary already using the passwords it was given.
set_passwords() {
  local su repl
  if ! { IFS= read -r su && IFS= read -r repl; }; then
    pgc_die "set-passwords reads two lines on stdin: the superuser's and the replication role's password."
  fi
  if ! pgc_server_running || [ "$(in_recovery)" != f ]; then
    pgc_die "set-passwords needs a running primary; this node is not one (ctl.sh status)."
  fi
  # Not even a failing statement may be logged: these carry passwords.
  {
    printf '%s\n' "SET log_min_error_statement = panic;" "SET log_statement = none;"
    pgc_setup_sql "$su" "$repl"
  } | pgc_local_psql -f - >/dev/null
  pgc_log "passwords of $PGC_SUPERUSER and $PGC_REPLICATION_USER set"
}

# tls — the node's TLS material from stdin: the cluster's CA certificate, this node's certificate,
# then its key (PEM blocks, in that order), installed in PGC_TLS_DIR (0600, the server's user's);
# empty stdin removes it. When that changes what the server runs: the configuration rendered
# again, a standby's upstream connection made to verify its server (or not), and a reload — a
# new certificate, or TLS turned on or off, without a restart or a new container. Adds
# "tls":"installed"|"removed"|"unchanged".
tls() {
  local input verdict=unchanged new="$PGC_TLS_DIR.new" mask f
  input="$(cat)"
  mask="$(umask)"
  umask 077
  if [ -z "$input" ]; then
    if [ -e "$PGC_TLS_DIR" ]; then
      rm -rf "$PGC_TLS_DIR"
      verdict=removed
    fi
  else
    printf '%s\n' "$input" | pgc_pem_split "$new" ||
      pgc_die "ctl.sh tls reads three PEM blocks on stdin (the CA's certificate, the node's certificate, its key), or nothing to remove TLS; nothing was changed."
    for f in ca.crt server.crt server.key; do
      cmp -s "$new/$f" "$PGC_TLS_DIR/$f" || verdict=installed
    done
    if [ "$verdict" = installed ]; then
      rm -rf "$PGC_TLS_DIR"
      mv "$new" "$PGC_TLS_DIR"
    else
      rm -rf "$new"
    fi
  fi
  umask "$mask"
  result_extra="\"tls\":\"$verdict\""
  pgc_tls_env
  if [ "$verdict" = unchanged ]; then
    # Unchanged files, but a server started before they came (or by an older release) may still
    # run without them, or with TLS after they went.
    pgc_server_running || return 0
    [ "$(pgc_local_psql -c "SHOW ssl")" != "$(pgc_tls_installed && echo on || echo off)" ] || return 0
  fi
  pgc_render_config
  tls_upstream
  if pgc_server_running; then
    pgc_local_psql -c "SELECT pg_reload_conf()" >/dev/null
    pgc_log "TLS $( pgc_tls_installed && echo on || echo off): configuration reloaded"
  fi
}

# tls_upstream — a standby's primary_conninfo with the TLS options of pgc_conninfo_tls: by ALTER
# SYSTEM on a running server (the reload that follows restarts its WAL receiver), in
# postgresql.auto.conf on a stopped one.
tls_upstream() {
  local current wanted slot
  pgc_populated && [ -e "$PGDATA/standby.signal" ] || return 0
  if pgc_server_running; then
    current="$(pgc_local_psql -c "SHOW primary_conninfo")"
    [ -n "$current" ] || return 0
    wanted="$(pgc_conninfo_tls "$current")"
    [ "$wanted" = "$current" ] ||
      pgc_local_psql -c "ALTER SYSTEM SET primary_conninfo = $(pgc_sql_literal "$wanted")" >/dev/null
  else
    current="$(sed -n "s/^primary_conninfo = '\(.*\)'\$/\1/p" "$PGDATA/postgresql.auto.conf" 2>/dev/null | tail -n 1)"
    slot="$(sed -n "s/^primary_slot_name = '\(.*\)'\$/\1/p" "$PGDATA/postgresql.auto.conf" 2>/dev/null | tail -n 1)"
    [ -n "$current" ] || return 0
    wanted="$(pgc_conninfo_tls "$current")"
    [ "$wanted" = "$current" ] || pgc_set_upstream "$PGDATA" "$wanted" "$slot"
  fi
}

# require_backup VERB [ROLE] — backups are on for this node (PGC_BACKUP=on) and it runs as ROLE:
# the primary (by default), a standby, or any (a running server either way).
require_backup() {
  local want="${2:-primary}" recovery=""
  [ "$PGC_BACKUP" = on ] ||
    pgc_die "refusing $1: backups are off for this node (PGC_BACKUP); set backup in the cluster's config. Nothing was changed."
  ! pgc_server_running || recovery="$(in_recovery)" || true
  if [ "$want" = primary ] && [ "$recovery" != f ]; then
    pgc_die "refusing $1: it runs on the primary, and $PGC_NODE_NAME is not a running primary (ctl.sh status). Nothing was changed."
  elif [ "$want" = standby ] && [ "$recovery" != t ]; then
    pgc_die "refusing $1: it runs on a standby, and $PGC_NODE_NAME is not a running standby (ctl.sh status). Nothing was changed."
  elif [ "$want" = any ] && [ -z "$recovery" ]; then
    pgc_die "refusing $1: $PGC_NODE_NAME's server is not running (ctl.sh status). Nothing was changed."
  fi
}

# stanza_before_start DIR — with backups, the cluster's stanza made from the new data directory
# DIR before its server first starts (offline: from pg_control), so its first archive_command
# finds it: archiving that failed for want of a stanza leaves pgBackRest's asynchronous pusher
# holding the archive lock and the server's archiver backing off, which a stanza-create and check
# made afterwards then wait on. A repository holding this stanza for another cluster (a kept
# volume of a destroyed cluster of the same name) is refused here, before the volume holds one.
stanza_before_start() {
  [ "$PGC_BACKUP" = on ] || return 0
  pgc_pgbackrest --pg1-path="$1" --no-online stanza-create >&2 ||
    pgc_die "pgbackrest stanza-create for $PGC_STANZA failed (above): the repository $PGC_BACKUP_REPO holds that stanza for another cluster (a kept repository volume of an earlier cluster of this name?). Restore from it into a cluster of another name (restore.repository), or remove the volume; the data volume holds no cluster."
}

# backup_stanza — the cluster's pgBackRest stanza in the repository (kept when it exists: made at
# bootstrap; a cluster that turns backups on makes it here; one of another cluster is refused by
# pgBackRest), then a check that archiving reaches it. Not in archive_command (pgbackrest #2088).
backup_stanza() {
  local tries=0
  require_backup backup-stanza
  if ! stanza_exists; then
    # The server archives already and failed for want of the stanza: pgBackRest's pusher holds
    # the archive lock at times until it exists; stanza-create retries while it does.
    until pgc_pgbackrest stanza-create >&2; do
      tries=$((tries + 1))
      [ "$tries" -lt 30 ] ||
        pgc_die "pgbackrest stanza-create failed (above); check the repository ($PGC_BACKUP_REPO)."
      sleep 1
    done
  fi
  pgc_pgbackrest check >&2 ||
    pgc_die "pgbackrest check failed (above): WAL does not reach the repository ($PGC_BACKUP_REPO)."
  result_extra="\"stanza\":$(json_string "$PGC_STANZA")"
}

# stanza_exists — the repository holds this cluster's stanza (pgBackRest's info, lock-free).
stanza_exists() {
  local info
  info="$(pgc_pgbackrest info --output=json 2>/dev/null)" || return 1
  # Status 1: "missing stanza path"; 0 (ok) and 2 (no valid backups) mean it exists.
  [[ "$info" =~ \"status\":\{\"code\":[02][,}] ]]
}

# backup TYPE [HOST SERVER_PORT PG_PORT PG_PATH SOCKET_DIR] — a pgBackRest backup (full, diff or
# incr); adds "info", pgBackRest's `info --output=json` for the stanza after it. Alone, of this
# primary. With the primary's pgBackRest server (backup-serve there: HOST:SERVER_PORT, its
# PostgreSQL's port, data directory and socket directory), from this standby: pgBackRest copies
# the standby's files and runs pg_backup_start/stop on the primary through that server (TLS, this
# node's certificate as the client's), so the primary does none of the reading.
backup() {
  local type="$1" primary=()
  case "$type" in full | diff | incr) ;; *) pgc_die "backup TYPE: full, diff or incr (got '$type')." ;; esac
  if [ $# = 1 ]; then
    require_backup backup
    pgc_log "pgbackrest backup --type=$type on this primary"
  else
    require_backup backup standby
    PGC_PG_HOST=()
    pgc_pg_host 2 "${@:2}"
    primary=(--backup-standby "${PGC_PG_HOST[@]}")
    pgc_log "pgbackrest backup --type=$type from this standby; the primary's server at $2:$3"
  fi
  pgc_pgbackrest "${primary[@]}" backup --type="$type" >&2 ||
    pgc_die "pgbackrest backup failed (above); the repository keeps its earlier backups."
  backup_info
}

# The pgBackRest server a backup from a standby reaches this primary through, while it runs.
BACKUP_SERVER_PID="$PGC_VOLUME/pgbackrest/server.pid"
PGC_BACKUP_SERVER_PORT="${PGC_BACKUP_SERVER_PORT:-8432}"

# backup_serve CLIENT — starts pgBackRest's TLS server on this primary for one backup from the
# standby named CLIENT (its certificate's CN, signed by the cluster's CA), on the cluster's network
# (PGC_BACKUP_SERVER_PORT; not published), for this stanza only, and at most
# PGC_BACKUP_SERVE_SECONDS; backup-serve-stop ends it. With the repository on another host
# (PGC_BACKUP_REPO_HOST), on any node, for the repository's container (published on this host).
# Adds "backupServer": what the client's `backup` passes on (the server's port, this PostgreSQL's
# port, data and socket directories).
backup_serve() {
  local client="$1" tries=0
  [[ "$client" =~ ^[A-Za-z0-9._-]+$ ]] || pgc_die "backup-serve: '$client' is not a node name."
  # The repository's container (several hosts) reads a standby through it too.
  require_backup backup-serve "$([ -n "$PGC_BACKUP_REPO_HOST" ] && echo any || echo primary)"
  pgc_tls_installed ||
    pgc_die "refusing backup-serve: TLS is off for $PGC_NODE_NAME; pgBackRest's server needs the node's certificate. Nothing was changed."
  backup_serve_stop
  # Detached from this verb (its own session, no inherited result descriptor), so docker exec
  # returns; timeout ends a server whose backup-serve-stop never came.
  setsid timeout "${PGC_BACKUP_SERVE_SECONDS:-21600}" pgbackrest --config="$PGC_BACKUP_CONF" server \
    --tls-server-address="${PGC_BACKUP_SERVER_ADDRESS:-*}" --tls-server-port="$PGC_BACKUP_SERVER_PORT" \
    --tls-server-ca-file="$PGC_TLS_DIR/ca.crt" --tls-server-cert-file="$PGC_TLS_DIR/server.crt" \
    --tls-server-key-file="$PGC_TLS_DIR/server.key" --tls-server-auth="$client=$PGC_STANZA" \
    </dev/null >>"$PGC_VOLUME/pgbackrest/server.log" 2>&1 3>&- &
  echo "$!" >"$BACKUP_SERVER_PID"
  until (exec 4<>"/dev/tcp/127.0.0.1/$PGC_BACKUP_SERVER_PORT") 2>/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] && kill -0 "$(cat "$BACKUP_SERVER_PID")" 2>/dev/null ||
      pgc_die "pgBackRest's server did not listen on port $PGC_BACKUP_SERVER_PORT: $(tail -n 3 "$PGC_VOLUME/pgbackrest/server.log" 2>/dev/null)"
    sleep 0.1
  done
  pgc_log "pgBackRest's server listens on port $PGC_BACKUP_SERVER_PORT for $client (stanza $PGC_STANZA)"
  result_extra="\"backupServer\":{\"port\":$PGC_BACKUP_SERVER_PORT,\"pgPort\":$PGC_PORT,\"pgPath\":$(json_string "$PGDATA"),\"socketDir\":$(json_string "$PGC_SOCKET_DIR")}"
}

# backup_serve_stop — ends the server of backup-serve, if it still runs.
backup_serve_stop() {
  local pid
  pid="$(cat "$BACKUP_SERVER_PID" 2>/dev/null)" || return 0
  rm -f "$BACKUP_SERVER_PID"
  # Only that process: a pid the kernel gave to another since is left alone.
  if grep -qa pgbackrest "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    pgc_log "pgBackRest's server stopped"
  fi
}

# backup_info — adds "info" and "standbyLabels" (lib.sh pgc_backup_info).
backup_info() {
  result_extra="$(pgc_backup_info)"
}

# release — removes hold: the entrypoint starts the server (a standby iff standby.signal exists).
release() {
  rm -f "$HOLD"
  pgc_log "hold removed"
  ! pgc_populated || wait_ready release
}

main() {
  pgc_become_postgres "$0" "$@"
  pgc_require PGC_NODE_NAME PGC_SLOT_NAME PGC_SUPERUSER PGC_REPLICATION_USER PGC_DATABASE
  # Unexported: the tools (and initdb's bootstrap server) do not inherit them.
  pgc_read_secrets
  # Everything but the result line goes to stderr, whatever the tools print.
  exec 3>&1 1>&2
  export PGPASSFILE="$PGC_PASSFILE"
  local verb="${1:-}"
  [ $# = 0 ] || shift
  case "$verb:$#" in
    status:0 | bootstrap-initdb:0 | bootstrap-restore:1 | bootstrap-restore:2 | bootstrap-restore:3 | demote:0 | undemote:0 | rewind:1 | release:0 | set-passwords:0 | tls:0 | backup-stanza:0 | backup:1 | backup:6 | backup-info:0 | backup-serve:1 | backup-serve-stop:0) ;;
    bootstrap-clone:2 | follow:2 | reclone:2) require_port "$2" ;;
    *) usage ;;
  esac
  if [ "$verb" = status ]; then
    print_status
    return 0
  elif [[ "$verb" == backup* && "$verb" != backup-stanza ]]; then
    # Without the node's lock: they change nothing of the node (pgBackRest locks its stanza), and
    # a long backup must not hold back the topology step's verbs.
    case "$verb" in
      backup) backup "$@" ;;
      backup-info) backup_info ;;
      backup-serve) backup_serve "$1" ;;
      backup-serve-stop) backup_serve_stop ;;
    esac
    print_status "$result_extra"
    return 0
  fi
  lock
  case "$verb" in
    bootstrap-initdb) bootstrap_initdb ;;
    bootstrap-restore) bootstrap_restore "$@" ;;
    bootstrap-clone) bootstrap_clone "$1" "$2" ;;
    demote) demote ;;
    undemote) undemote ;;
    rewind) rewind "$1" ;;
    reclone) reclone "$1" "$2" ;;
    release) release ;;
    follow) follow "$1" "$2" ;;
    set-passwords) set_passwords ;;
    tls) tls ;;
    backup-stanza) backup_stanza ;;
  esac
  print_status "$result_extra"
}

_is_sourced() {
  [ "${#FUNCNAME[@]}" -ge 2 ] && [ "${FUNCNAME[0]}" = _is_sourced ] && [ "${FUNCNAME[1]}" = source ]
}
if ! _is_sourced; then
  main "$@"
fi
