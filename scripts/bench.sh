#!/usr/bin/env bash
# `npm run bench`: provisions what the benchmark needs, then runs bench/bench.ts (see its header).
# `npm run bench:hosts` (scripts/bench.sh hosts): bench/hosts.ts, several Docker hosts and TLS;
# it needs root (network namespaces). `npm run bench:backup`: bench/backup.ts, backups and restore.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source scripts/lib.sh
program=bench/bench.ts
if [ "${1:-}" = hosts ]; then
  need_root "the several-hosts benchmark (network namespaces, dockerd)"
  program=bench/hosts.ts
elif [ "${1:-}" = backup ]; then
  program=bench/backup.ts
fi
bash scripts/provision-node-deps.sh
bash scripts/provision-docker.sh --compose
apt_install postgresql-15
bash scripts/provision-image.sh --local 15 >/dev/null
bash scripts/provision-image.sh --local router >/dev/null
bash scripts/provision-toolchain.sh
# shellcheck source=env.sh
source scripts/env.sh
exec node --import tsx "$program"
