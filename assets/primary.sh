#!/usr/bin/env bash
# Entrypoint of the primary node. Initialises the data directory on first start only (a populated
# volume is started as-is), converges the roles and passwords to the configured ones, then runs
# PostgreSQL in the foreground as PID 1.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
pgc_become_postgres "$0" "$@"
pgc_require PGC_SUPERUSER PGC_SUPERUSER_PASSWORD PGC_REPLICATION_USER PGC_REPLICATION_PASSWORD PGC_DATABASE

# sql_literal VALUE — VALUE as a SQL string literal (standard_conforming_strings is on).
sql_literal() { printf "'%s'" "${1//\'/\'\'}"; }

# single_user SQL — runs statements in single-user mode (no server, no network), fails on any error.
# Statements are separated by a semicolon and a blank line (-j). Only ERROR/FATAL lines are shown:
# the statements themselves carry passwords.
single_user() {
  local out
  # synchronous_standby_names (from ALTER SYSTEM) would make every commit here wait for standbys
  # that cannot connect to a single-user server: switch it off for this session.
  out="$(printf '%s\n' "$1" | postgres --single -j -D "$PGDATA" -c log_min_error_statement=panic \
    -c "config_file=$PGDATA/postgresql.conf" -c exit_on_error=on -c synchronous_standby_names= \
    postgres 2>&1)" || {
    printf '%s\n' "$out" | grep -E 'ERROR|FATAL|PANIC' >&2 || true
    pgc_die "single-user setup of roles failed (above)."
  }
  if printf '%s\n' "$out" | grep -qE 'ERROR|FATAL|PANIC'; then
    printf '%s\n' "$out" | grep -E 'ERROR|FATAL|PANIC' >&2
    pgc_die "single-user setup of roles failed (above)."
  fi
}

# The role setup, run on every start so a password changed in stack config takes effect.
roles_sql="ALTER ROLE \"$PGC_SUPERUSER\" WITH PASSWORD $(sql_literal "$PGC_SUPERUSER_PASSWORD");

DO \$\$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = $(sql_literal "$PGC_REPLICATION_USER")) THEN
    CREATE ROLE \"$PGC_REPLICATION_USER\";
  END IF;
END\$\$;

ALTER ROLE \"$PGC_REPLICATION_USER\" WITH NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT REPLICATION LOGIN PASSWORD $(sql_literal "$PGC_REPLICATION_PASSWORD");
"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -e "$PGDATA" ] && [ -n "$(ls -A "$PGDATA")" ]; then
    pgc_die "$PGDATA is not empty but holds no PostgreSQL cluster; move its contents away, pg-cluster will not overwrite them."
  fi
  pgc_log "initialising a new cluster (first start of this volume)"
  # initdb into a scratch directory and rename, so an interrupted initdb never leaves a
  # half-made cluster that a restart would mistake for a real one.
  rm -rf "$PGDATA.init"
  # --no-sync, then one syncfs before the rename and one after: as durable as initdb's
  # file-by-file fsync, and about a third faster.
  initdb -D "$PGDATA.init" -U "$PGC_SUPERUSER" --pwfile=<(printf '%s\n' "$PGC_SUPERUSER_PASSWORD") \
    --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 --data-checksums \
    --no-sync >/dev/null
  # One single-user session for the database and the roles (each server start costs ~0.1 s).
  setup="$roles_sql"
  if [ "$PGC_DATABASE" != postgres ]; then
    setup="CREATE DATABASE \"$PGC_DATABASE\";

$roles_sql"
  fi
  PGDATA="$PGDATA.init" single_user "$setup"
  pgc_log "flushing the new cluster to disk"
  pgc_syncfs "$PGDATA.init"
  rm -rf "$PGDATA"
  mv "$PGDATA.init" "$PGDATA"
  pgc_syncfs "$PGDATA"
  pgc_log "cluster initialised with database $PGC_DATABASE"
else
  pgc_log "data directory already initialised; starting it as-is"
  pgc_clear_stale_pid
  single_user "$roles_sql"
fi
pgc_log "roles $PGC_SUPERUSER and $PGC_REPLICATION_USER (REPLICATION LOGIN) are set"

pgc_render_config primary
rm -f "$PGDATA/standby.signal"
unset PGC_SUPERUSER_PASSWORD PGC_REPLICATION_PASSWORD
mapfile -t args < <(pgc_start_args)
pgc_log "starting PostgreSQL (primary)"
exec postgres "${args[@]}"
