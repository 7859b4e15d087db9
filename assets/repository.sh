#!/usr/bin/env bash
# The backup repository of a cluster across several Docker hosts (issue 12; docs/design/backups.md,
# "Backups with several hosts"): the container `<cluster>-repository` on `backup.host`, with the
# repository (a volume or a host directory) at PGC_BACKUP_REPO. It runs pgBackRest's TLS server,
# which every node's archive-push, archive-get, stanza-create, check and info reach (each node's
# repo1-host, with the node's certificate: the cluster's CA, its CN authorised for this stanza
# only), and it takes the backups: pgBackRest runs `backup` on the repository's host only, reading
# the nodes through their own servers (ctl.sh backup-serve, started for one backup).
#   repository.sh serve                the container's command
#   repository.sh backup TYPE PG [PG]  PG: HOST SERVER_PORT PG_PORT PG_PATH SOCKET_DIR (from
#                                      backup-serve); with two, the second is a standby the files
#                                      are read from. Prints {"info", "standbyLabels"}.
#   repository.sh info                 prints {"info", "standbyLabels"} without a backup
# Environment: PGC_STANZA, PGC_SUPERUSER, PGC_REPOSITORY_CLIENTS (the nodes' CNs), PGC_BACKUP=on,
# PGC_BACKUP_RETENTION_FULL, PGC_BACKUP_COMPRESS; the certificate bundle (CA, certificate, key) is
# uploaded to PGC_SECRETS_FILE, never in the environment.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Where the server listens inside the container (published on the host at backup.port).
PGC_REPOSITORY_PORT="${PGC_REPOSITORY_PORT:-8432}"

usage() {
  pgc_die "usage: repository.sh serve | backup full|diff|incr HOST SERVER_PORT PG_PORT PG_PATH SOCKET_DIR [HOST SERVER_PORT PG_PORT PG_PATH SOCKET_DIR] | info"
}

# server_conf — pgbackrest.conf of the repository: where it is, the retention and compression of
# the backups taken here, and the TLS server (this container's certificate, every node's CN for
# this stanza only: pgBackRest takes no wildcard CN, so the component lists every node name the
# cluster can have).
server_conf() {
  local cn
  mkdir -p "$PGC_VOLUME/pgbackrest/lock"
  {
    echo "# Written by pg-cluster at every start from the container's environment; edits are lost."
    echo "[global]"
    echo "repo1-path=$PGC_BACKUP_REPO"
    echo "repo1-retention-full=${PGC_BACKUP_RETENTION_FULL:-2}"
    echo "compress-type=${PGC_BACKUP_COMPRESS:-lz4}"
    echo "lock-path=$PGC_VOLUME/pgbackrest/lock"
    echo "log-level-file=off"
    echo "log-level-console=warn"
    echo "log-level-stderr=warn"
    echo "start-fast=y"
    echo "tls-server-address=*"
    echo "tls-server-port=$PGC_REPOSITORY_PORT"
    echo "tls-server-ca-file=$PGC_TLS_DIR/ca.crt"
    echo "tls-server-cert-file=$PGC_TLS_DIR/server.crt"
    echo "tls-server-key-file=$PGC_TLS_DIR/server.key"
    for cn in $PGC_REPOSITORY_CLIENTS; do
      [[ "$cn" =~ ^[A-Za-z0-9._-]+$ ]] || pgc_die "PGC_REPOSITORY_CLIENTS: '$cn' is not a node name."
      echo "tls-server-auth=$cn=$PGC_STANZA"
    done
  } >"$PGC_BACKUP_CONF"
}

# serve — the certificate installed from the upload, the configuration written, then the server
# in the foreground (docker stop ends it).
serve() {
  pgc_pem_split "$PGC_TLS_DIR" <"$PGC_SECRETS_FILE" ||
    pgc_die "$PGC_SECRETS_FILE must hold three PEM blocks (the CA's certificate, this container's certificate, its key); the component uploads them."
  server_conf
  pgc_log "pgBackRest's TLS server for stanza $PGC_STANZA on port $PGC_REPOSITORY_PORT, for $PGC_REPOSITORY_CLIENTS"
  exec pgbackrest --config="$PGC_BACKUP_CONF" server
}

# backup TYPE PG [PG] — a pgBackRest backup of the nodes behind those servers (see the header);
# then the repository's info.
backup() {
  local type="$1" standby=()
  case "$type" in full | diff | incr) ;; *) pgc_die "backup TYPE: full, diff or incr (got '$type')." ;; esac
  PGC_PG_HOST=()
  pgc_pg_host 1 "${@:2:5}"
  if [ $# = 11 ]; then
    pgc_pg_host 2 "${@:7:5}"
    standby=(--backup-standby)
  fi
  pgc_log "pgbackrest backup --type=$type of $2${standby[*]:+, read from the standby $7}"
  pgc_pgbackrest "${PGC_PG_HOST[@]}" "${standby[@]}" backup --type="$type" >&2 ||
    pgc_die "pgbackrest backup failed (above); the repository keeps its earlier backups."
}

# wait_served — the configuration and certificate `serve` installs at the container's start: a
# verb may come just after the container was (re)created.
wait_served() {
  local tries=0
  until [ -s "$PGC_BACKUP_CONF" ] && pgc_tls_installed; do
    tries=$((tries + 1))
    [ "$tries" -lt 300 ] || pgc_die "the repository's server has not started in 30 s; see docker logs $PGC_NODE_NAME."
    sleep 0.1
  done
}

main() {
  pgc_become_postgres "$0" "$@"
  pgc_require PGC_STANZA PGC_SUPERUSER PGC_REPOSITORY_CLIENTS
  local verb="${1:-serve}"
  [ $# = 0 ] || shift
  case "$verb:$#" in
    serve:0) serve ;;
    backup:6 | backup:11)
      wait_served
      backup "$@"
      ;;
    info:0) wait_served ;;
    *) usage ;;
  esac
  printf '{%s}\n' "$(pgc_backup_info)"
}

_is_sourced() {
  [ "${#FUNCNAME[@]}" -ge 2 ] && [ "${FUNCNAME[0]}" = _is_sourced ] && [ "${FUNCNAME[1]}" = source ]
}
if ! _is_sourced; then
  main "$@"
fi
