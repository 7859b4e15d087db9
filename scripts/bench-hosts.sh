#!/usr/bin/env bash
# `npm run bench:hosts`: provisions what the several-hosts benchmark needs (Docker, the images, the
# toolchain, pgbench), then runs bench/hosts.ts (see its header). Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source scripts/lib.sh
need_root "the several-hosts benchmark (network namespaces, dockerd)"
bash scripts/provision-node-deps.sh
bash scripts/provision-docker.sh
apt_install postgresql-15
bash scripts/provision-image.sh --local 15 >/dev/null
bash scripts/provision-image.sh --local router >/dev/null
bash scripts/provision-toolchain.sh
# shellcheck source=env.sh
source scripts/env.sh
exec node --import tsx bench/hosts.ts
