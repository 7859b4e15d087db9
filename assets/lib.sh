#!/usr/bin/env bash
# Shared by entrypoint.sh and ctl.sh. Runs inside the node's container (or, in the integration
# tests, on the host with PGC_* overrides). Source it; do not run it.
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
# The replication role's password, for libpq (PGPASSFILE), on any host: a standby can then be
# re-pointed at any node by ALTER SYSTEM alone.
PGC_PASSFILE="$PGC_CONF_DIR/replication.pgpass"
# The node's passwords: the superuser's, then the replication role's, one per line (an upload,
# never the environment: `docker inspect` and `docker exec` would show them).
PGC_SECRETS_FILE="${PGC_SECRETS_FILE:-/run/secrets/pg-cluster}"
# Clone count and reason of a data directory made by pg_basebackup (read by verify.mjs).
PGC_NODE_STATE_FILE="pg-cluster-node.json"
# TLS (PGC_TLS=on): the node's certificate and key and the cluster's CA live on the volume, in
# PGC_TLS_DIR, installed by `ctl.sh tls` (the topology step's; a new certificate is a reload, no
# new container). While they are there the server takes TLS connections only (but for the
# router's checks), and every libpq client here (psql, pg_basebackup, pg_rewind) verifies its
# server against the CA.
PGC_TLS="${PGC_TLS:-off}"
PGC_TLS_DIR="${PGC_TLS_DIR:-$PGC_CONF_DIR/tls}"

# pgc_tls_installed — true while PGC_TLS_DIR holds the CA, the certificate and the key.
pgc_tls_installed() {
  [ -s "$PGC_TLS_DIR/ca.crt" ] && [ -s "$PGC_TLS_DIR/server.crt" ] && [ -s "$PGC_TLS_DIR/server.key" ]
}

# pgc_tls_env — libpq's environment for this process and its children: verify-full against the
# CA while TLS is installed, libpq's defaults otherwise.
pgc_tls_env() {
  if pgc_tls_installed; then
    export PGSSLMODE=verify-full PGSSLROOTCERT="$PGC_TLS_DIR/ca.crt"
    # No client certificate: libpq would look in ~/.postgresql, and HOME stays /root after the
    # switch to postgres, where it fails on "Permission denied" (a missing file it ignores). The
    # server (its WAL receiver) inherits this too.
    export PGSSLCERT="$PGC_TLS_DIR/no-client.crt" PGSSLKEY="$PGC_TLS_DIR/no-client.key"
  else
    unset PGSSLMODE PGSSLROOTCERT PGSSLCERT PGSSLKEY
  fi
}
pgc_tls_env
# Backups (PGC_BACKUP=on, issue 12; docs/design/backups.md): pgBackRest, its repository mounted
# at PGC_BACKUP_REPO, one stanza (PGC_STANZA) per cluster. Every node archives once it is the
# primary (archive_mode = on does nothing on a standby), so a switchover needs no step.
PGC_BACKUP="${PGC_BACKUP:-off}"
PGC_BACKUP_REPO="${PGC_BACKUP_REPO:-/var/lib/pgbackrest}"
PGC_BACKUP_CONF="$PGC_CONF_DIR/pgbackrest.conf"
PGC_STANZA="${PGC_STANZA:-pg-cluster}"
# With several hosts the repository is another container's (repository.sh), reached through its
# pgBackRest TLS server at PGC_BACKUP_REPO_HOST:PGC_BACKUP_REPO_PORT with this node's certificate.
PGC_BACKUP_REPO_HOST="${PGC_BACKUP_REPO_HOST:-}"

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
  if [ "$PGC_BACKUP" = on ] && [ -z "${PGC_BACKUP_REPO_HOST:-}" ]; then
    # The repository volume: the server's user's alone (pgBackRest refuses others' files).
    mkdir -p "$PGC_BACKUP_REPO"
    chown "$PGC_OS_USER:" "$PGC_BACKUP_REPO"
    chmod 750 "$PGC_BACKUP_REPO"
  fi
  # Uploaded as root's; readable by the server's user only.
  if [ -e "$PGC_SECRETS_FILE" ]; then
    chown "$PGC_OS_USER:" "$PGC_SECRETS_FILE"
    chmod 600 "$PGC_SECRETS_FILE"
  fi
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

# pgc_render_config — writes postgresql.conf, pg_hba.conf, pg_ident.conf and node.conf into the
# volume's conf/ directory on every boot, from the assets and the environment. Every node reads the
# same shared settings from there (a standby must not inherit them from the primary's copy).
# node.conf names no upstream: a standby's upstream lives in its data directory
# (postgresql.auto.conf), where a switchover changes it without replacing the container.
pgc_render_config() {
  local cidr gateway reject=""
  pgc_require PGC_SUPERUSER PGC_REPLICATION_USER PGC_MAX_WAL_SENDERS PGC_MAX_REPLICATION_SLOTS
  cidr="${PGC_REPLICATION_CIDR:-}"
  gateway="${PGC_REJECT_ADDRESS-__auto__}"
  if [ -z "$cidr" ] || [ "$gateway" = __auto__ ]; then
    pgc_network
    [ -n "$cidr" ] || cidr="$PGC_NET_CIDR"
    [ "$gateway" != __auto__ ] || gateway="$PGC_NET_GATEWAY"
  fi
  [ -n "$cidr" ] || pgc_die "cannot determine the cluster network's subnet from /proc/net/route; set PGC_REPLICATION_CIDR."
  # The gateway is inside the subnet, and connections through published ports arrive from it:
  # refuse replication from there so only the cluster's own containers can replicate. The
  # replication role's session to database postgres (pg_rewind) is refused there too; the
  # superuser still reaches postgres through a published port.
  [ -z "$gateway" ] || reject="host    replication,postgres  $PGC_REPLICATION_USER  ${gateway}/32  reject"
  sed -e "s|@REPLICATION_USER@|$PGC_REPLICATION_USER|g" -e "s|@REPLICATION_CIDR@|$cidr|g" \
    -e "s|@REJECT_GATEWAY@|$reject|" "$PGC_HOME/pg_hba.conf" |
    pgc_peer_rules | pgc_tls_rules "$cidr" >"$PGC_CONF_DIR/pg_hba.conf"
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
    # Reloadable settings are not here: the topology step sets them with ALTER SYSTEM and a
    # reload (postgresql.auto.conf, which is read after this file), so changing one replaces and
    # restarts nothing. These lines only give a node started on its own (tests) a value.
    [ -z "${PGC_MAX_SLOT_WAL_KEEP_SIZE:-}" ] || echo "max_slot_wal_keep_size = '$PGC_MAX_SLOT_WAL_KEEP_SIZE'"
    [ -z "${PGC_MAX_WAL_SIZE:-}" ] || echo "max_wal_size = '$PGC_MAX_WAL_SIZE'"
    echo "min_wal_size = '${PGC_MIN_WAL_SIZE:-32MB}'"
    if [ "$PGC_BACKUP" = on ]; then
      # archive_mode needs a restart (a container change, so a roll); the commands are pgBackRest's.
      echo "archive_mode = on"
      echo "archive_command = $(pgc_conf_quote "$(pgc_pgbackrest_command) archive-push %p")"
      echo "restore_command = $(pgc_conf_quote "$(pgc_pgbackrest_command) archive-get %f \"%p\"")"
    fi
    if pgc_tls_installed; then
      echo "ssl = on"
      echo "ssl_cert_file = '$PGC_TLS_DIR/server.crt'"
      echo "ssl_key_file = '$PGC_TLS_DIR/server.key'"
    fi
  } >"$PGC_CONF_DIR/node.conf"
  [ "$PGC_BACKUP" != on ] || pgc_backup_conf
  chmod 600 "$PGC_CONF_DIR"/*.conf
  pgc_log "configuration written to $PGC_CONF_DIR (replication allowed from $cidr${PGC_REPLICATION_PEERS:+ and $PGC_REPLICATION_PEERS}${gateway:+, refused from $gateway})"
}

# pgc_pgbackrest_command — pgBackRest with this node's configuration and the cluster's stanza, as
# a shell command line (for archive_command and restore_command).
pgc_pgbackrest_command() {
  printf 'pgbackrest --config="%s" --stanza="%s"' "$PGC_BACKUP_CONF" "$PGC_STANZA"
}

# pgc_pgbackrest ARGS... — runs pgBackRest with this node's configuration and the cluster's stanza.
pgc_pgbackrest() {
  pgbackrest --config="$PGC_BACKUP_CONF" --stanza="$PGC_STANZA" "$@"
}

# pgc_pg_host N HOST SERVER_PORT PG_PORT PG_PATH SOCKET_DIR — appends to the array PGC_PG_HOST
# pgBackRest's options for pgN: a PostgreSQL reached through the pgBackRest TLS server at
# HOST:SERVER_PORT (ctl.sh backup-serve there), this container's certificate as the client's.
# That server runs commands with the client's pg options: its port, data and socket directories.
pgc_pg_host() {
  [[ "$2" =~ ^[A-Za-z0-9.:_-]+$ ]] || pgc_die "backup: '$2' is not a host name."
  [[ "$3" =~ ^[0-9]+$ && "$4" =~ ^[0-9]+$ ]] || pgc_die "backup: '$3' and '$4' must be port numbers."
  [[ "$5" == /* && "$6" == /* ]] ||
    pgc_die "backup: PG_PATH and SOCKET_DIR must be absolute paths (got '$5', '$6')."
  pgc_tls_installed ||
    pgc_die "refusing a backup through pgBackRest's server: TLS is off for $PGC_NODE_NAME, and the server accepts only a certificate of the cluster's CA. Nothing was changed."
  PGC_PG_HOST+=("--pg$1-host=$2" "--pg$1-host-type=tls" "--pg$1-host-port=$3"
    "--pg$1-host-ca-file=$PGC_TLS_DIR/ca.crt" "--pg$1-host-cert-file=$PGC_TLS_DIR/server.crt"
    "--pg$1-host-key-file=$PGC_TLS_DIR/server.key" "--pg$1-port=$4" "--pg$1-path=$5"
    "--pg$1-socket-path=$6" "--pg$1-user=$PGC_SUPERUSER")
}

# pgc_backup_info — prints `"info":` pgBackRest's `info --output=json` for the stanza, and
# `"standbyLabels":` the backups in it taken from a standby (recorded in backup.info, not in
# info; read where the repository is mounted, empty elsewhere).
pgc_backup_info() {
  local info labels
  [ "$PGC_BACKUP" = on ] || pgc_die "backups are off for this node (PGC_BACKUP)."
  info="$(pgc_pgbackrest info --output=json)" || pgc_die "pgbackrest info failed (above)."
  labels="$(sed -n 's/^\([0-9A-Z_-]*\)={.*"option-backup-standby":true.*/"\1"/p' \
    "$PGC_BACKUP_REPO/backup/$PGC_STANZA/backup.info" 2>/dev/null | paste -sd, -)" || true
  printf '"info":%s,"standbyLabels":[%s]' "$info" "$labels"
}

# pgc_pem_split DIR — writes the three PEM blocks on stdin (the CA's certificate, this
# container's certificate, its key) to DIR as ca.crt, server.crt and server.key (0600, DIR made
# anew); false, leaving no DIR, unless stdin is exactly that.
pgc_pem_split() {
  local dir="$1" mask
  mask="$(umask)"
  umask 077
  rm -rf "$dir"
  mkdir -p "$dir"
  awk -v dir="$dir" '/^-----BEGIN /{n++} n>0 {print > (dir "/" n ".pem")}'
  umask "$mask"
  if ! grep -q '^-----BEGIN CERTIFICATE-----' "$dir/1.pem" "$dir/2.pem" 2>/dev/null ||
    ! grep -q '^-----BEGIN PRIVATE KEY-----' "$dir/3.pem" 2>/dev/null || [ -e "$dir/4.pem" ]; then
    rm -rf "$dir"
    return 1
  fi
  mv "$dir/1.pem" "$dir/ca.crt"
  mv "$dir/2.pem" "$dir/server.crt"
  mv "$dir/3.pem" "$dir/server.key"
}

# pgc_backup_conf — pgbackrest.conf for this node: the repository (retention, compression), WAL
# archived asynchronously from a spool on the volume with a bounded queue (beyond
# PGC_BACKUP_QUEUE_MAX pgBackRest drops WAL and says so in the server's log: the primary keeps
# working, and the point-in-time range has a gap until the next full backup), and this node's
# server over its socket (peer authentication as the superuser).
pgc_backup_conf() {
  local work="$PGC_VOLUME/pgbackrest"
  mkdir -p "$work/spool" "$work/lock"
  {
    echo "# Written by pg-cluster at every start from the container's environment; edits are lost."
    echo "[global]"
    echo "repo1-path=$PGC_BACKUP_REPO"
    if [ -n "$PGC_BACKUP_REPO_HOST" ]; then
      # pgBackRest's server works with the client's repo1-path: both sides name the same one.
      echo "repo1-host=$PGC_BACKUP_REPO_HOST"
      echo "repo1-host-type=tls"
      echo "repo1-host-port=${PGC_BACKUP_REPO_PORT:-8432}"
      echo "repo1-host-ca-file=$PGC_TLS_DIR/ca.crt"
      echo "repo1-host-cert-file=$PGC_TLS_DIR/server.crt"
      echo "repo1-host-key-file=$PGC_TLS_DIR/server.key"
    fi
    echo "repo1-retention-full=${PGC_BACKUP_RETENTION_FULL:-2}"
    echo "compress-type=${PGC_BACKUP_COMPRESS:-lz4}"
    echo "archive-async=y"
    echo "archive-push-queue-max=${PGC_BACKUP_QUEUE_MAX:-1GiB}"
    echo "spool-path=$work/spool"
    echo "lock-path=$work/lock"
    echo "log-level-file=off"
    echo "log-level-console=warn"
    echo "log-level-stderr=warn"
    echo "start-fast=y"
    echo "[$PGC_STANZA]"
    echo "pg1-path=$PGDATA"
    echo "pg1-port=$PGC_PORT"
    echo "pg1-socket-path=$PGC_SOCKET_DIR"
    echo "pg1-user=$PGC_SUPERUSER"
  } >"$PGC_BACKUP_CONF"
}

# pgc_tls_rules CIDR — copies pg_hba.conf from stdin; with TLS installed every `host` rule becomes
# `hostssl` and, before them, plain connections are refused but for the router's role checks
# (from the cluster network and the other hosts: HAProxy's tcp-check cannot negotiate
# PostgreSQL's TLS, and that role can do nothing but log in).
pgc_tls_rules() {
  local line peer done=0
  if ! pgc_tls_installed; then
    cat
    return 0
  fi
  while IFS= read -r line; do
    if [ "$done" = 0 ] && [[ "$line" =~ ^host[[:space:]] ]]; then
      printf 'hostnossl  postgres     pgc_health  %s  password\n' "$1"
      while IFS= read -r peer; do
        printf 'hostnossl  postgres     pgc_health  %s  password\n' "$peer"
      done < <(pgc_peer_addresses)
      printf 'hostnossl  all          all         all  reject\n'
      done=1
    fi
    if [[ "$line" =~ ^host[[:space:]] ]]; then line="hostssl${line#host}"; fi
    printf '%s\n' "$line"
  done
}

# pgc_peer_rules — copies pg_hba.conf from stdin, the @REPLICATION_PEERS@ line replaced by rules
# for each address in PGC_REPLICATION_PEERS (space-separated: the cluster's other Docker hosts,
# whose nodes' connections arrive from those addresses): replication, pg_rewind's session and the
# router's checks, from exactly that address (an IPv4 address as /32; a DNS name, which
# PostgreSQL checks forward and reverse).
pgc_peer_rules() {
  local line address
  while IFS= read -r line; do
    if [ "$line" != "@REPLICATION_PEERS@" ]; then
      printf '%s\n' "$line"
      continue
    fi
    while IFS= read -r address; do
      printf 'host    replication  %s  %s  scram-sha-256\n' "$PGC_REPLICATION_USER" "$address"
      printf 'host    postgres     %s  %s  scram-sha-256\n' "$PGC_REPLICATION_USER" "$address"
      printf 'host    postgres     pgc_health  %s  password\n' "$address"
    done < <(pgc_peer_addresses)
  done
}

# pgc_peer_addresses — each address of PGC_REPLICATION_PEERS as pg_hba.conf takes it, one per
# line: an IPv4 address as /32 (exactly that host), a DNS name as it is.
pgc_peer_addresses() {
  local peer
  for peer in ${PGC_REPLICATION_PEERS:-}; do
    if [[ "$peer" =~ ^[0-9.]+$ ]]; then printf '%s/32\n' "$peer"; else printf '%s\n' "$peer"; fi
  done
}

# pgc_upstream_conninfo HOST PORT — a standby's primary_conninfo for the upstream at HOST:PORT. The
# password lives in a passfile, never in the conninfo (which pg_stat_wal_receiver shows).
pgc_upstream_conninfo() {
  printf 'host=%s port=%s user=%s passfile=%s application_name=%s connect_timeout=5 keepalives_idle=5 keepalives_interval=2 keepalives_count=3' \
    "$1" "$2" "$PGC_REPLICATION_USER" "$PGC_PASSFILE" "$PGC_NODE_NAME"
  ! pgc_tls_installed || printf ' %s' "$(pgc_tls_conninfo_options)"
}

# pgc_tls_conninfo_options — what a connection string of this node carries while TLS is
# installed: verify-full against the cluster's CA.
pgc_tls_conninfo_options() {
  printf 'sslmode=verify-full sslrootcert=%s' "$PGC_TLS_DIR/ca.crt"
}

# pgc_conninfo_tls CONNINFO — CONNINFO with its TLS options matching this node's (for `ctl.sh
# tls`, turning TLS on or off): verify-full against the CA while TLS is installed, else libpq's
# default, prefer, spelled out: a server started with TLS inherited PGSSLMODE=verify-full.
pgc_conninfo_tls() {
  local word words out=()
  read -ra words <<<"$1"
  for word in "${words[@]}"; do
    case "${word%%=*}" in sslmode | sslrootcert) ;; *) out+=("$word") ;; esac
  done
  if pgc_tls_installed; then
    out+=("$(pgc_tls_conninfo_options)")
  else
    out+=("sslmode=prefer")
  fi
  printf '%s' "${out[*]}"
}

# pgc_start_args — arguments for `postgres` so it reads the rendered configuration.
pgc_start_args() {
  printf '%s\n' -D "$PGDATA" -c "config_file=$PGC_CONF_DIR/postgresql.conf"
}

# --- Shared by entrypoint.sh and ctl.sh (docs/design/primary-as-role.md, sections B and D) ---

# pgc_read_secrets — sets superuser_password and replication_password (the caller's variables,
# not exported) from PGC_SECRETS_FILE.
pgc_read_secrets() {
  [ -r "$PGC_SECRETS_FILE" ] ||
    pgc_die "cannot read the passwords file $PGC_SECRETS_FILE; the PostgresCluster component uploads it (see the image contract in README.md)."
  { IFS= read -r superuser_password && IFS= read -r replication_password; } <"$PGC_SECRETS_FILE" || true
  [ -n "$superuser_password" ] && [ -n "$replication_password" ] ||
    pgc_die "$PGC_SECRETS_FILE must hold two lines: the superuser's password, then the replication role's."
}

# pgc_pgpass_field VALUE — VALUE escaped for a libpq password file (\ and : are special).
pgc_pgpass_field() {
  local v="${1//\\/\\\\}"
  printf '%s' "${v//:/\\:}"
}

# pgc_write_passfile PASSWORD — the replication role's password for every host, port and database
# (0600): replication from whichever node is primary, and pg_rewind's session to postgres.
pgc_write_passfile() {
  (
    umask 077
    printf '*:*:*:%s:%s\n' "$(pgc_pgpass_field "$PGC_REPLICATION_USER")" "$(pgc_pgpass_field "$1")" \
      >"$PGC_PASSFILE.tmp"
  )
  mv "$PGC_PASSFILE.tmp" "$PGC_PASSFILE"
}

# pgc_sql_literal VALUE / pgc_sql_ident NAME — VALUE as a SQL string literal
# (standard_conforming_strings is on), NAME as a quoted identifier.
pgc_sql_literal() { printf "'%s'" "${1//\'/\'\'}"; }
pgc_sql_ident() { printf '"%s"' "${1//\"/\"\"}"; }

# pgc_setup_sql SUPERUSER_PASSWORD REPLICATION_PASSWORD — the statements that converge the roles:
# both passwords, the replication role's attributes, and the four grants pg_rewind needs to read
# the source's files without a superuser (https://www.postgresql.org/docs/15/app-pgrewind.html).
# The grants are per database (each has its own pg_catalog): run this in database postgres, the
# one pg_rewind connects to. Every statement is idempotent.
pgc_setup_sql() {
  local su repl fn
  su="$(pgc_sql_ident "$PGC_SUPERUSER")"
  repl="$(pgc_sql_ident "$PGC_REPLICATION_USER")"
  # The superuser exists but in a cluster restored from another one's backup (ctl.sh
  # bootstrap-restore), whose superuser may have had another name.
  printf '%s\n\n' \
    "DO \$\$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = $(pgc_sql_literal "$PGC_SUPERUSER")) THEN
    CREATE ROLE $su SUPERUSER LOGIN;
  END IF;
END\$\$;" \
    "ALTER ROLE $su WITH SUPERUSER LOGIN PASSWORD $(pgc_sql_literal "$1");" \
    "DO \$\$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = $(pgc_sql_literal "$PGC_REPLICATION_USER")) THEN
    CREATE ROLE $repl;
  END IF;
END\$\$;" \
    "ALTER ROLE $repl WITH NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT REPLICATION LOGIN PASSWORD $(pgc_sql_literal "$2");"
  for fn in "pg_ls_dir(text, boolean, boolean)" "pg_stat_file(text, boolean)" \
    "pg_read_binary_file(text)" "pg_read_binary_file(text, bigint, bigint, boolean)"; do
    printf '%s\n\n' "GRANT EXECUTE ON FUNCTION pg_catalog.$fn TO $repl;"
  done
}

# pgc_single_user DIR SQL — runs statements on the cluster in DIR in single-user mode (no server,
# no network) in database postgres, failing on any error. Statements are separated by a semicolon
# and a blank line (-j). Only ERROR/FATAL lines are shown: the statements carry passwords.
pgc_single_user() {
  local dir="$1" out
  # synchronous_standby_names (from ALTER SYSTEM) would make every commit here wait for standbys
  # that cannot connect to a single-user server: switch it off for this session.
  if ! out="$(printf '%s\n' "$2" | postgres --single -j -D "$dir" -c log_min_error_statement=panic \
    -c "config_file=$dir/postgresql.conf" -c exit_on_error=on -c synchronous_standby_names= \
    postgres 2>&1)" || [[ "$out" =~ ERROR|FATAL|PANIC ]]; then
    printf '%s\n' "$out" | grep -E 'ERROR|FATAL|PANIC' >&2 || true
    pgc_die "single-user setup of roles in $dir failed (above); fix the cause and restart the node."
  fi
}

# pgc_populated — true when the volume holds a cluster (PGDATA/PG_VERSION).
pgc_populated() { [ -s "$PGDATA/PG_VERSION" ]; }

# pgc_require_empty — refuses unless the volume holds no cluster and nothing else in PGDATA.
pgc_require_empty() {
  ! pgc_populated ||
    pgc_die "refusing: the volume already holds a cluster ($PGDATA); bootstrap is only for an empty volume (ctl.sh status shows it). Nothing was changed."
  if [ -e "$PGDATA" ] && [ -n "$(ls -A "$PGDATA")" ]; then
    pgc_die "$PGDATA is not empty but holds no PostgreSQL cluster; move its contents away, pg-cluster will not overwrite them."
  fi
}

# pgc_swap_in SCRATCH — makes the complete data directory SCRATCH (written with --no-sync) the
# node's PGDATA: one syncfs before the rename and one after, as durable as the tools' file-by-file
# fsync and cheaper. Until the rename the volume shows no cluster, so an interrupted initdb or
# clone never leaves a half-made one that a restart would mistake for a real one.
pgc_swap_in() {
  pgc_log "flushing $1 to disk and making it the data directory"
  pgc_syncfs "$1"
  rm -rf "$PGDATA"
  mv "$1" "$PGDATA"
  pgc_syncfs "$PGDATA"
}

# pgc_conf_quote VALUE — VALUE as a postgresql.conf string ('…', quotes doubled).
pgc_conf_quote() { printf "'%s'" "${1//\'/\'\'}"; }

# pgc_set_upstream DIR CONNINFO SLOT — writes primary_conninfo and primary_slot_name into
# DIR/postgresql.auto.conf, replacing earlier values: where ALTER SYSTEM keeps them, for a data
# directory whose server is not running.
pgc_set_upstream() {
  pgc_rewrite_auto_conf "$1" 'primary_conninfo|primary_slot_name' \
    "primary_conninfo = $(pgc_conf_quote "$2")" "primary_slot_name = $(pgc_conf_quote "$3")"
}

# pgc_rewrite_auto_conf DIR PATTERN [LINE...] — DIR/postgresql.auto.conf without the settings
# whose names match the extended regular expression PATTERN, then LINEs, replaced in one rename
# (0600): ALTER SYSTEM's file, for a data directory whose server is not running.
pgc_rewrite_auto_conf() {
  local conf="$1/postgresql.auto.conf" pattern="$2"
  shift 2
  {
    [ ! -f "$conf" ] || grep -vE "^[[:space:]]*($pattern)[[:space:]]*=" "$conf" || true
    [ $# = 0 ] || printf '%s\n' "$@"
  } >"$conf.pgc"
  chmod 600 "$conf.pgc"
  mv "$conf.pgc" "$conf"
}

# pgc_local_psql ARGS... — psql as the superuser over the local socket (peer authentication,
# mapped in pg_ident.conf), unaligned, tuples only, stopping at the first error.
pgc_local_psql() {
  psql -h "$PGC_SOCKET_DIR" -p "$PGC_PORT" -U "$PGC_SUPERUSER" -d postgres -XAtq -v ON_ERROR_STOP=1 "$@"
}

# pgc_server_running — true while a postmaster runs on PGDATA (pg_ctl reads postmaster.pid).
pgc_server_running() { pg_ctl status -D "$PGDATA" >/dev/null 2>&1; }

# pgc_conninfo_value KEY CONNINFO — the value of KEY in a key=value connection string (unquoted
# values, as pgc_upstream_conninfo writes them).
pgc_conninfo_value() {
  local word words
  read -ra words <<<"$2"
  for word in "${words[@]}"; do
    if [ "${word%%=*}" = "$1" ]; then
      printf '%s' "${word#*=}"
      return 0
    fi
  done
}

# pgc_replication_conn HOST PORT — a replication connection string to HOST:PORT as the
# replication role (password from PGC_PASSFILE).
pgc_replication_conn() {
  printf 'host=%s port=%s user=%s passfile=%s dbname=replication replication=true connect_timeout=5 application_name=%s-control' \
    "$1" "$2" "$PGC_REPLICATION_USER" "$PGC_PASSFILE" "$PGC_NODE_NAME"
}

# pgc_slot_state HOST PORT SLOT — prints ok, lost, missing or unknown (not reachable). READ_
# REPLICATION_SLOT (PostgreSQL 15+) shows an invalidated slot with an empty restart_lsn; our
# slots always reserve WAL when created.
pgc_slot_state() {
  local row
  row="$(psql "$(pgc_replication_conn "$1" "$2")" -XAtq -c "READ_REPLICATION_SLOT $3" 2>/dev/null)" || {
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

# pgc_ensure_slot HOST PORT SLOT — the slot must exist on HOST:PORT and reserve WAL *before* a
# clone starts: a slot created by pg_basebackup -C reserves WAL only after the backup's
# checkpoint, and a clone running in parallel can recycle the segment in between. A lost slot is
# dropped and made again.
pgc_ensure_slot() {
  local conn
  conn="$(pgc_replication_conn "$1" "$2")"
  case "$(pgc_slot_state "$1" "$2" "$3")" in
    ok) return 0 ;;
    lost)
      pgc_log "dropping lost slot $3 on $1:$2"
      psql "$conn" -XAtq -v ON_ERROR_STOP=1 -c "DROP_REPLICATION_SLOT $3 WAIT" >/dev/null
      ;;
  esac
  pgc_log "creating physical slot $3 on $1:$2 (reserving WAL now)"
  psql "$conn" -XAtq -v ON_ERROR_STOP=1 -c "CREATE_REPLICATION_SLOT $3 PHYSICAL RESERVE_WAL" >/dev/null ||
    [ "$(pgc_slot_state "$1" "$2" "$3")" = ok ] ||
    pgc_die "cannot create slot $3 on $1:$2: check that it runs and accepts replication from this node (its pg_hba.conf, the replication password)."
}

# pgc_clone HOST PORT SLOT CONNINFO REASON — a fresh copy of HOST:PORT through SLOT, made a
# standby of CONNINFO/SLOT (standby.signal and postgresql.auto.conf written before the swap, so
# the supervisor can never start it as a primary), swapped in only when complete: a failed clone
# never destroys the data we had. Counts clones in pg-cluster-node.json.
pgc_clone() {
  local host="$1" port="$2" slot="$3" conninfo="$4" reason="$5" clones=0 started scratch="$PGDATA.new"
  if [ -s "$PGDATA/$PGC_NODE_STATE_FILE" ]; then
    clones="$(sed -n 's/.*"clones": *\([0-9]*\).*/\1/p' "$PGDATA/$PGC_NODE_STATE_FILE")"
  fi
  pgc_ensure_slot "$host" "$port" "$slot"
  started="$(date +%s%N)"
  pgc_log "cloning $host:$port with pg_basebackup through slot $slot ($reason)"
  rm -rf "$scratch"
  # The application name lets the post-step see this clone's progress on the upstream
  # (pg_stat_progress_basebackup). Named after the slot, not the node: PostgreSQL cuts
  # application_name at 63 bytes, and node names can be long. PGC_CLONE_MAX_RATE (e.g. 8M) is a
  # test hook that makes a clone slow.
  PGAPPNAME="pgc-clone-$slot" pg_basebackup -h "$host" -p "$port" -U "$PGC_REPLICATION_USER" -w \
    -D "$scratch" -X stream -S "$slot" --checkpoint=fast --no-manifest --no-sync \
    ${PGC_CLONE_MAX_RATE:+"--max-rate=$PGC_CLONE_MAX_RATE"} ||
    pgc_die "pg_basebackup from $host:$port failed (above); the volume is unchanged, retry once the upstream answers."
  printf '{"node": "%s", "clones": %d, "lastCloneReason": "%s", "lastClonedAt": "%s", "lastCloneMs": %d}\n' \
    "$PGC_NODE_NAME" "$((${clones:-0} + 1))" "$reason" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$((($(date +%s%N) - started) / 1000000))" >"$scratch/$PGC_NODE_STATE_FILE"
  touch "$scratch/standby.signal"
  pgc_set_upstream "$scratch" "$conninfo" "$slot"
  pgc_swap_in "$scratch"
  pgc_log "clone complete: a standby of $host:$port through slot $slot"
}
