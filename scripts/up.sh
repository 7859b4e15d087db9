#!/usr/bin/env bash
# `npm run up`: brings up the dev stack on a fresh machine. Installs and starts what is missing
# (npm deps, Docker engine, the Pulumi toolchain, a PostgreSQL image), creates the stack on a local
# file backend, generates secret passwords if the stack has none, deploys, and prints the
# replication report and how to connect.
set -euo pipefail
# shellcheck source=dev-stack.sh
source "$(dirname "$0")/dev-stack.sh"

bash scripts/provision-docker.sh

# Passwords: generated once per stack, stored as secrets, passed on stdin (never argv).
for key in superuserPassword replicationPassword; do
  if ! pulumi_stack config get "$key" >/dev/null 2>&1; then
    log "generating $key for stack $STACK (secret config)"
    node -e 'process.stdout.write(require("crypto").randomBytes(24).toString("base64url"))' |
      pulumi_stack config set --secret "$key" >/dev/null
  fi
done

# Image: the configured one if Docker has it or can pull it; otherwise our local build.
image="$(pulumi_stack config get image 2>/dev/null || echo postgres:16)"
status=0
bash scripts/provision-image.sh "$image" >/dev/null || status=$?
if [ "$status" = 3 ]; then
  log "image $image is not present and cannot be pulled (no registry reachable): building and using pg-cluster-postgres:15 (PostgreSQL 15 from Debian packages) for stack $STACK"
  image="$(bash scripts/provision-image.sh --local 15)"
  pulumi_stack config set image "$image"
elif [ "$status" != 0 ]; then
  die "cannot provide image $image (above)."
fi

# Preflight the host ports: Docker's own error for a taken port does not say what to do.
command -v ss >/dev/null || apt_install iproute2
cfg() { pulumi_stack config get "$1" 2>/dev/null || echo "$2"; }
replicas="$(cfg replicas 1)" primary_port="$(cfg primaryPort 5432)" base_port="$(cfg replicaBasePort 5433)"
ports=("$primary_port")
for ((n = 0; n < replicas; n++)); do ports+=($((base_port + n))); done
for port in "${ports[@]}"; do
  owner="$(docker ps --filter "publish=$port" --format '{{.Names}}' | head -n 1)"
  case "$owner" in pg-cluster-"$STACK"-*) continue ;; esac
  if [ -n "$owner" ] || ss -ltnH "sport = :$port" | grep -q .; then
    die "host port $port is already in use${owner:+ by container $owner}. Fix: stop what uses it, or move the cluster: pulumi config set primaryPort (or replicaBasePort) <port> --stack $STACK --config-file .state/Pulumi.$STACK.yaml"
  fi
done

# --refresh: a container stopped by hand is noticed and started again, data untouched.
pulumi_stack up --yes --skip-preview --non-interactive --refresh
report="$(pulumi stack output replicationReport --json --stack "$STACK")"
primary="$(pulumi stack output primaryEndpoint --stack "$STACK")"

cluster="pg-cluster-$STACK"
cat <<EOT

Replication report (stack $STACK):
$report

Connect:
  docker exec -it $cluster-primary psql -U postgres -d mydb          # primary, read-write
  docker exec -it $cluster-replica-1 psql -U postgres -d mydb        # a replica, read-only
  psql "host=${primary%:*} port=${primary##*:} user=postgres dbname=mydb"   # password: pulumi config get superuserPassword --config-file .state/Pulumi.dev.yaml
Tear down: npm run down
EOT
