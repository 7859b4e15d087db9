#!/usr/bin/env bash
# Docker health check: healthy once the server accepts connections on its TCP port (which also
# proves listen_addresses is right), not merely on the socket.
set -euo pipefail
exec pg_isready -q -h 127.0.0.1 -p "${PGC_PORT:-5432}" -t 2
