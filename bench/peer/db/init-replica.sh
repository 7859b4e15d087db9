#!/bin/bash
# The tutorial's ./db/init-replica.sh, verbatim.
set -e

PGDATA="/var/lib/postgresql/data"

if [ -z "$(ls -A $PGDATA)" ]; then
echo "Initializing replica via pg_basebackup..."

mkdir -p /tmp/pgdata
chown postgres:postgres /tmp/pgdata

su - postgres -c "pg_basebackup -h primary -D /tmp/pgdata -U postgres -Fp -Xs -P -R"

echo "Copying to PGDATA volume and fixing permissions..."
cp -a /tmp/pgdata/. "$PGDATA/"
chown -R postgres:postgres "$PGDATA"
fi

echo "Starting replica PostgreSQL..."
exec docker-entrypoint.sh postgres -c config_file=/etc/postgresql/postgresql.conf
