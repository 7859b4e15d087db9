#!/usr/bin/env bash
# `npm run up`: brings up the dev stack on a fresh machine. Installs and starts what is missing
# (npm deps, Docker engine, the Pulumi toolchain, a PostgreSQL image), creates the stack on a local
# file backend, generates secret passwords if the stack has none, deploys, and prints the
# replication report and how to connect.
#
# A repeated run is cheap: when the stack is current (scripts/dev-stack.mjs: nothing changed in
# config, program or toolchain since the last successful up, and Docker matches the state) it only
# prints the report; when Docker differs from the state it runs `pulumi up --refresh`, otherwise a
# plain `pulumi up`. The rule is in README, "The two commands".
set -euo pipefail
# shellcheck source=dev-stack.sh
source "$(dirname "$0")/dev-stack.sh"

bash scripts/provision-docker.sh
# provision-image.sh need not ask again.
export PG_CLUSTER_DOCKER_READY=1

# report — the replication report and how to connect, from `stack_state outputs` on stdin.
report() {
  local rw ro pgadmin ca json tls=""
  read -r rw ro pgadmin ca
  json="$(cat)"
  # With TLS (tls config): clients verify the nodes against the cluster's CA, written here.
  # (Quoted for libpq: a checkout path may hold spaces.)
  [ "$ca" = - ] || tls=" sslmode=verify-full sslrootcert='$ca'"
  [ "$pgadmin" = - ] || cat <<EOT

pgAdmin: $pgadmin   (every node is registered; connecting asks for the superuser's password)
  login: the pgadminEmail config (default admin@example.com); its password:
  npm run --silent pulumi -- config get pgadminPassword
EOT
  cat <<EOT

Replication report (stack $STACK):
$json

Connect (password: npm run --silent pulumi -- config get superuserPassword):
  psql "host=${rw%:*} port=${rw##*:} user=postgres dbname=mydb$tls"   # read-write: always the primary
  psql "host=${ro%:*} port=${ro##*:} user=postgres dbname=mydb$tls"   # read-only: the replicas
  docker exec -it pg-cluster-$STACK-primary psql -U postgres -d mydb   # one node, in its container
Tear down: npm run down
EOT
}

check="$(stack_state check)"
read -r verdict sources <<<"$check"
case "$verdict" in
  current)
    log "stack $STACK is up to date (Docker matches its state; config, program and toolchain are unchanged since the last up): nothing to deploy"
    outputs="$(stack_state outputs)"
    report <<<"$outputs"
    exit 0
    ;;
  new) pulumi stack select --create "$STACK" --non-interactive >/dev/null ;;
  changed | drift) ;;
  *) die "scripts/dev-stack.mjs check printed '$check' (output above); fix the cause and re-run." ;;
esac

# config_lines — the stack's config as "key value" lines, secrets masked. Each pulumi run costs a
# CLI start (~0.25 s), so the lines are kept with the hash of the files they are read from
# (Pulumi.yaml's declarations and the stack's config file) and reused while both are unchanged.
config_lines() {
  local cache="$REPO/.state/config.$STACK.txt" key lines
  key="$(cat "$REPO/Pulumi.yaml" "$CONFIG_FILE" | sha256sum)"
  if [ -f "$cache" ] && [ "$(head -n 1 "$cache")" = "$key" ]; then
    tail -n +2 "$cache"
    return
  fi
  lines="$(pulumi_stack config --json | stack_state config)"
  printf '%s\n%s\n' "$key" "$lines" >"$cache.tmp"
  mv "$cache.tmp" "$cache"
  printf '%s\n' "$lines"
}
config="$(config_lines)"
declare -A cfg=()
while read -r key value; do [ -z "$key" ] || cfg[$key]="$value"; done <<<"$config"

config_changed=""
# Passwords: generated once per stack, stored as secrets, passed on stdin (never argv).
for key in superuserPassword replicationPassword; do
  if [ -z "${cfg[$key]:-}" ]; then
    log "generating $key for stack $STACK (secret config)"
    node -e 'process.stdout.write(require("crypto").randomBytes(24).toString("base64url"))' |
      pulumi_stack config set --secret "$key" >/dev/null
    config_changed=1
  fi
done

# pgAdmin (optional): its login password is generated the same way.
pgadmin_on=""
[ "${cfg[pgadmin]:-false}" != true ] || pgadmin_on=1
if [ -n "$pgadmin_on" ] && [ -z "${cfg[pgadminPassword]:-}" ]; then
  log "generating pgadminPassword for stack $STACK (secret config)"
  node -e 'process.stdout.write(require("crypto").randomBytes(18).toString("base64url"))' |
    pulumi_stack config set --secret pgadminPassword >/dev/null
  config_changed=1
fi

# Images (the nodes', the router's): the configured one if Docker has it or can pull it;
# otherwise our local build of the same kind, which becomes the stack's config.
# ensure_image KEY DEFAULT LOCAL WHAT
ensure_image() {
  local key="$1" image="${cfg[$1]:-$2}" status=0 errors
  errors="$(mktemp)"
  bash scripts/provision-image.sh "$image" >/dev/null 2>"$errors" || status=$?
  if [ "$status" = 3 ]; then
    rm -f "$errors"
    log "image $image is not present and cannot be pulled (no registry reachable): building and using the local $4 image for stack $STACK"
    image="$(bash scripts/provision-image.sh --local "$3")"
    pulumi_stack config set "$key" "$image"
    config_changed=1
  elif [ "$status" != 0 ]; then
    cat "$errors" >&2
    rm -f "$errors"
    die "cannot provide image $image (above)."
  fi
  rm -f "$errors"
}
ensure_image image postgres:16 15 "PostgreSQL 15 (pg-cluster-postgres:15, from Debian packages)"
ensure_image routerImage haproxy:2.6 router "HAProxy 2.6 (pg-cluster-haproxy:2.6, from Debian packages)"
[ -z "$pgadmin_on" ] ||
  ensure_image pgadminImage dpage/pgadmin4:9 pgadmin "pgAdmin 9.18 (pg-cluster-pgadmin:9.18, from Debian and PyPI)"

# Preflight the host ports: Docker's own error for a taken port does not say what to do.
command -v ss >/dev/null || apt_install iproute2
replicas="${cfg[replicas]:-1}" primary_port="${cfg[primaryPort]:-5432}" base_port="${cfg[replicaBasePort]:-5433}"
rw_port="${cfg[readWritePort]:-$((primary_port - 2))}"
ports=("$primary_port" "$rw_port" "${cfg[readOnlyPort]:-$((rw_port + 1))}")
for ((n = 0; n < replicas; n++)); do ports+=($((base_port + n))); done
[ -z "$pgadmin_on" ] || ports+=("${cfg[pgadminPort]:-$((primary_port - 3))}")
published="$(docker ps --format '{{.Names}} {{.Ports}}')"
listening="$(ss -ltnH | awk '{ print $4 }')"
for port in "${ports[@]}"; do
  owner="$(printf '%s\n' "$published" | awk -v p=":$port->" 'index($0, p) { print $1; exit }')"
  case "$owner" in pg-cluster-"$STACK"-*) continue ;; esac
  if [ -n "$owner" ] || printf '%s\n' "$listening" | grep -q ":$port\$"; then
    die "host port $port is already in use${owner:+ by container $owner}. Fix: stop what uses it, or move the cluster: npm run pulumi -- config set primaryPort (or replicaBasePort, readWritePort, readOnlyPort, pgadminPort) <port>"
  fi
done

# From here until the up succeeds, the stack is not known to be current.
rm -f "$STAMP"
# The stamp records what this up deploys: the config as changed above.
[ -z "$config_changed" ] || sources="$(stack_state sources)"
up=(up --yes --skip-preview --non-interactive)
if [ "$verdict" = drift ]; then
  # --refresh: a container stopped or removed by hand is noticed and started again, data untouched.
  log "pulumi up --refresh: Docker differs from the state (above)"
  up+=(--refresh)
fi
t0="$EPOCHREALTIME"
pulumi_stack "${up[@]}"
# The rest of this script's time is its overhead (the benchmark reads this line).
log "pulumi up took $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s"
outputs="$(stack_state record "$sources")"
report <<<"$outputs"
