#!/usr/bin/env bash
# PID 1 of the local pgAdmin image (pg-cluster-pgadmin, scripts/provision-image.sh --local pgadmin):
# the part of the official dpage/pgadmin4 image's environment contract that pg-cluster uses, so
# the component runs either image.
#   PGADMIN_DEFAULT_EMAIL          the login (required)
#   PGADMIN_DEFAULT_PASSWORD_FILE  a file holding its password (or PGADMIN_DEFAULT_PASSWORD)
#   PGADMIN_SERVER_JSON_FILE       servers to register (setup.py load-servers format), optional
#   PGADMIN_LISTEN_ADDRESS, PGADMIN_LISTEN_PORT   default [::] and 80
#   PGADMIN_CONFIG_<KEY>=<python literal>         lines of pgAdmin's config
# Server mode (a login is always required). On a new data directory: creates pgAdmin's database
# with the login, then registers the servers; then runs pgAdmin under gunicorn.
set -euo pipefail

log() { printf '%s pgadmin-entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

APP=/venv/lib/python3.11/site-packages/pgadmin4
DATA=/var/lib/pgadmin

main() {
  [ -n "${PGADMIN_DEFAULT_EMAIL:-}" ] || die "set PGADMIN_DEFAULT_EMAIL (the login)."
  local password="${PGADMIN_DEFAULT_PASSWORD:-}"
  if [ -z "$password" ]; then
    [ -r "${PGADMIN_DEFAULT_PASSWORD_FILE:-}" ] ||
      die "set PGADMIN_DEFAULT_PASSWORD_FILE to a readable file holding the login's password."
    password="$(cat "$PGADMIN_DEFAULT_PASSWORD_FILE")"
  fi
  unset PGADMIN_DEFAULT_PASSWORD

  # pgAdmin reads this file last but one (CONFIG_DISTRO_FILE_PATH); values are Python literals.
  local conf="$DATA/config_distro.py" name
  {
    printf '%s\n' "SERVER_MODE = True" "DATA_DIR = '$DATA'"
    while IFS= read -r name; do
      printf '%s = %s\n' "${name#PGADMIN_CONFIG_}" "${!name}"
    done < <(compgen -e | grep '^PGADMIN_CONFIG_' || true)
  } >"$conf"
  export CONFIG_DISTRO_FILE_PATH="$conf"

  if [ ! -f "$DATA/pgadmin4.db" ]; then
    log "creating pgAdmin's database with the login $PGADMIN_DEFAULT_EMAIL"
    PGADMIN_SETUP_EMAIL="$PGADMIN_DEFAULT_EMAIL" PGADMIN_SETUP_PASSWORD="$password" \
      /venv/bin/python "$APP/setup.py" setup-db >/dev/null
    if [ -n "${PGADMIN_SERVER_JSON_FILE:-}" ] && [ -f "$PGADMIN_SERVER_JSON_FILE" ]; then
      log "registering the servers of $PGADMIN_SERVER_JSON_FILE"
      /venv/bin/python "$APP/setup.py" load-servers "$PGADMIN_SERVER_JSON_FILE" \
        --user "$PGADMIN_DEFAULT_EMAIL" >&2
    fi
  fi
  password=""

  local address="${PGADMIN_LISTEN_ADDRESS:-[::]}" port="${PGADMIN_LISTEN_PORT:-80}"
  log "pgAdmin on $address:$port"
  # One worker: pgAdmin keeps its connections and sessions per process; threads serve requests.
  exec /venv/bin/gunicorn --chdir "$APP" --bind "$address:$port" --workers 1 --threads 25 \
    --timeout 86400 --limit-request-line 0 --no-control-socket \
    --access-logfile - --error-logfile - pgAdmin4:app
}

main "$@"
