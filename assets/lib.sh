#!/usr/bin/env bash
# Shared by primary.sh, replica.sh and healthcheck.sh. Runs inside the node's container (or, in the
# integration tests, on the host with PGC_* overrides). Source it; do not run it.
#
# Image contract (official postgres image and our Debian-built image both satisfy it): PostgreSQL
# server binaries on PATH, a `postgres` user, bash, and gosu or setpriv to drop root.

PGC_HOME="${PGC_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
PGC_VOLUME="${PGC_VOLUME:-/var/lib/postgresql/data}"
# PGDATA is a subdirectory of the volume: a fresh volume may hold lost+found, which initdb refuses.
PGDATA="$PGC_VOLUME/pgdata"
PGC_CONF_DIR="$PGC_VOLUME/conf"
PGC_PORT="${PGC_PORT:-5432}"
PGC_LISTEN="${PGC_LISTEN:-*}"
PGC_SOCKET_DIR="${PGC_SOCKET_DIR:-/var/run/postgresql}"
PGC_NODE_NAME="${PGC_NODE_NAME:-$(hostname)}"
PGC_OS_USER="${PGC_OS_USER:-postgres}"
export PGDATA PGC_HOME PGC_VOLUME PGC_CONF_DIR PGC_PORT PGC_LISTEN PGC_SOCKET_DIR PGC_NODE_NAME

pgc_log() { printf '%s pg-cluster[%s]: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$PGC_NODE_NAME" "$*" >&2; }
pgc_die() { pgc_log "FATAL: $*"; exit 1; }

# pgc_require NAME... — every named variable must be set and non-empty.
pgc_require() {
  local name
  for name in "$@"; do
    [ -n "${!name:-}" ] || pgc_die "environment variable $name is not set; the PostgresCluster component sets it."
  done
}

# pgc_become_postgres "$0" "$@" — as root: create the volume's directories, give them to the
# postgres user, and re-execute the calling script as that user. As postgres: return.
pgc_become_postgres() {
  [ "$(id -u)" = 0 ] || return 0
  id "$PGC_OS_USER" >/dev/null 2>&1 || pgc_die "the image has no '$PGC_OS_USER' user; see the image contract in README.md."
  mkdir -p "$PGC_VOLUME" "$PGC_CONF_DIR" "$PGC_SOCKET_DIR"
  chown "$PGC_OS_USER:" "$PGC_VOLUME" "$PGC_CONF_DIR" "$PGC_SOCKET_DIR"
  chmod 700 "$PGC_VOLUME" "$PGC_CONF_DIR"
  chmod 3775 "$PGC_SOCKET_DIR"
  if command -v gosu >/dev/null 2>&1; then
    exec gosu "$PGC_OS_USER" "$@"
  elif command -v setpriv >/dev/null 2>&1; then
    exec setpriv --reuid="$PGC_OS_USER" --regid="$PGC_OS_USER" --init-groups -- "$@"
  fi
  pgc_die "neither gosu nor setpriv is in the image; PostgreSQL refuses to run as root."
}

# pgc_clear_stale_pid — after a crash (SIGKILL, power loss) postmaster.pid stays behind. PostgreSQL
# treats it as stale only if its PID is dead or its own; in a restarted container that PID is
# usually 1, which is now this entrypoint, so the server would refuse to start forever. Remove it
# when the PID it names is not a PostgreSQL server.
pgc_clear_stale_pid() {
  local f="$PGDATA/postmaster.pid" pid
  [ -f "$f" ] || return 0
  pid="$(head -n 1 "$f")"
  if [ -n "$pid" ] && [ "$pid" != "$$" ] && [ -r "/proc/$pid/cmdline" ] &&
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE '(^|/)(postgres|postmaster)( |$)'; then
    pgc_die "a PostgreSQL server (pid $pid) is already running on $PGDATA."
  fi
  pgc_log "removing stale postmaster.pid left by a server that did not shut down (pid $pid)"
  rm -f "$f"
}

# pgc_syncfs DIR — flushes the file system holding DIR to disk (syncfs(2)). A data directory
# written with --no-sync must be on disk before the rename that makes it the real one (or a crash
# could leave a PG_VERSION over truncated files), and the rename before the server starts.
pgc_syncfs() {
  sync -f "$1" ||
    pgc_die "could not flush $1 to disk (sync -f): check the volume's disk; the image needs GNU coreutils' sync (8.24+)."
}

# pgc_hex_ip HEX — an IPv4 address as /proc/net/route prints it (little-endian hex) in dotted form.
pgc_hex_ip() {
  local h="$1"
  printf '%d.%d.%d.%d' "0x${h:6:2}" "0x${h:4:2}" "0x${h:2:2}" "0x${h:0:2}"
}

# pgc_network — sets PGC_NET_CIDR (the container network's subnet) and PGC_NET_GATEWAY (its
# gateway, which is also where connections through published host ports come from). Read from
# the kernel's routing table so it needs no tool in the image and no input from the host.
pgc_network() {
  PGC_NET_CIDR="" PGC_NET_GATEWAY=""
  local iface dest gw mask bits
  while read -r iface dest gw _ _ _ _ mask _; do
    [ "$iface" = Iface ] || [ "$iface" = lo ] && continue
    if [ "$dest" = 00000000 ]; then
      PGC_NET_GATEWAY="$(pgc_hex_ip "$gw")"
    elif [ -z "$PGC_NET_CIDR" ] && [ "$gw" = 00000000 ]; then
      bits=0
      mask=$((16#$mask))
      while [ "$mask" -gt 0 ]; do bits=$((bits + (mask & 1))); mask=$((mask >> 1)); done
      PGC_NET_CIDR="$(pgc_hex_ip "$dest")/$bits"
    fi
  done </proc/net/route
}

# pgc_render_config ROLE — writes postgresql.conf, pg_hba.conf, pg_ident.conf and node.conf into
# the volume's conf/ directory on every boot, from the assets and the environment. Every node reads
# the same shared settings from there (a replica must not inherit them from the primary's copy).
pgc_render_config() {
  local role="$1" cidr gateway reject=""
  pgc_require PGC_SUPERUSER PGC_REPLICATION_USER PGC_MAX_WAL_SENDERS PGC_MAX_REPLICATION_SLOTS PGC_MAX_SLOT_WAL_KEEP_SIZE
  cidr="${PGC_REPLICATION_CIDR:-}"
  gateway="${PGC_REJECT_ADDRESS-__auto__}"
  if [ -z "$cidr" ] || [ "$gateway" = __auto__ ]; then
    pgc_network
    [ -n "$cidr" ] || cidr="$PGC_NET_CIDR"
    [ "$gateway" != __auto__ ] || gateway="$PGC_NET_GATEWAY"
  fi
  [ -n "$cidr" ] || pgc_die "cannot determine the cluster network's subnet from /proc/net/route; set PGC_REPLICATION_CIDR."
  # The gateway is inside the subnet, and connections through published ports arrive from it:
  # refuse replication from there so only the cluster's own containers can replicate.
  [ -z "$gateway" ] || reject="host    replication  all  ${gateway}/32  reject"
  sed -e "s|@REPLICATION_USER@|$PGC_REPLICATION_USER|g" -e "s|@REPLICATION_CIDR@|$cidr|g" \
    -e "s|@REJECT_GATEWAY@|$reject|" "$PGC_HOME/pg_hba.conf" >"$PGC_CONF_DIR/pg_hba.conf"
  sed -e "s|@SUPERUSER@|$PGC_SUPERUSER|g" -e "s|@OS_USER@|$PGC_OS_USER|g" \
    "$PGC_HOME/pg_ident.conf" >"$PGC_CONF_DIR/pg_ident.conf"
  cp "$PGC_HOME/postgresql.conf" "$PGC_CONF_DIR/postgresql.conf"
  {
    echo "# Written by pg-cluster at every start from the container's environment; edits are lost."
    echo "listen_addresses = '$PGC_LISTEN'"
    echo "port = $PGC_PORT"
    echo "unix_socket_directories = '$PGC_SOCKET_DIR'"
    echo "hba_file = '$PGC_CONF_DIR/pg_hba.conf'"
    echo "ident_file = '$PGC_CONF_DIR/pg_ident.conf'"
    echo "cluster_name = '$PGC_NODE_NAME'"
    # A standby must have at least the primary's values for these, so every node gets the same.
    echo "max_wal_senders = $PGC_MAX_WAL_SENDERS"
    echo "max_replication_slots = $PGC_MAX_REPLICATION_SLOTS"
    echo "max_slot_wal_keep_size = '$PGC_MAX_SLOT_WAL_KEEP_SIZE'"
    echo "max_wal_size = '${PGC_MAX_WAL_SIZE:-1GB}'"
    echo "min_wal_size = '${PGC_MIN_WAL_SIZE:-32MB}'"
    if [ "$role" = replica ]; then
      echo "primary_conninfo = '$(pgc_primary_conninfo)'"
      echo "primary_slot_name = '$PGC_SLOT_NAME'"
    fi
  } >"$PGC_CONF_DIR/node.conf"
  chmod 600 "$PGC_CONF_DIR"/*.conf
  pgc_log "configuration written to $PGC_CONF_DIR (replication allowed from $cidr${gateway:+, refused from $gateway})"
}

# pgc_primary_conninfo — the replica's connection to the primary. The password lives in a
# passfile, never in the conninfo (which pg_stat_wal_receiver shows).
pgc_primary_conninfo() {
  printf 'host=%s port=%s user=%s passfile=%s application_name=%s connect_timeout=5 keepalives_idle=5 keepalives_interval=2 keepalives_count=3' \
    "$PGC_PRIMARY_HOST" "$PGC_PRIMARY_PORT" "$PGC_REPLICATION_USER" "$PGC_CONF_DIR/replication.pgpass" "$PGC_NODE_NAME"
}

# pgc_start_args — arguments for `postgres` so it reads the rendered configuration.
pgc_start_args() {
  printf '%s\n' -D "$PGDATA" -c "config_file=$PGC_CONF_DIR/postgresql.conf"
}
