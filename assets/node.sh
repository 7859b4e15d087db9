#!/usr/bin/env bash
# The one file uploaded into a node's container. components/assets.ts fills in the node's asset
# files where the FILES line is (quoted here-documents, verbatim); on every start this writes them
# to $PGC_HOME (default /opt/pg-cluster) and runs the entrypoint, the same for every role (or,
# given `repository`, the backup repository's: repository.sh).
# One upload instead of six: Docker copies each upload into the created container with its own API
# call before the container can start. With PGC_UNPACK_ONLY set it only writes the files.
set -euo pipefail
dir="${PGC_HOME:-/opt/pg-cluster}"
mkdir -p "$dir"
# @FILES@
# The entrypoints re-execute themselves as the postgres user, so they must be executable.
chmod 755 "$dir"/*.sh
[ -z "${PGC_UNPACK_ONLY:-}" ] || exit 0
# The repository container of a cluster across hosts runs the same files as the nodes do.
if [ "${1:-}" = repository ]; then
  shift
  exec bash "$dir/repository.sh" serve "$@"
fi
exec bash "$dir/entrypoint.sh" "$@"
