#!/usr/bin/env bash
# A throw-away PostgreSQL server for the tests, on a loopback port, owned by the postgres user.
# Idempotent: a second run finds the cluster (and the server) already there. Prints the DSN to use.
#   usage: .ci/postgres.sh [DATA_DIR] [PORT]
set -euo pipefail

DATA_DIR="${1:-/var/tmp/gateway-test-postgres}"
PORT="${2:-54329}"
DB=gateway_test USER_NAME=gateway PASSWORD=gateway-test-password

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(pg_bin)" ]; then
    echo "installing PostgreSQL from Debian's packages" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
BIN="$(pg_bin)"
as_postgres() { runuser -u postgres -- "$@"; }

mkdir -p "$DATA_DIR"
chown postgres:postgres "$DATA_DIR"
chmod 700 "$DATA_DIR"
if [ ! -f "$DATA_DIR/PG_VERSION" ]; then
    as_postgres "$BIN/initdb" -D "$DATA_DIR" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 >/dev/null
fi
if ! as_postgres "$BIN/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1; then
    as_postgres "$BIN/pg_ctl" -D "$DATA_DIR" -l "$DATA_DIR/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DATA_DIR" >&2
fi
psql_admin() { as_postgres psql -h "$DATA_DIR" -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ -z "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$USER_NAME'")" ]; then
    psql_admin -c "CREATE ROLE $USER_NAME LOGIN PASSWORD '$PASSWORD'"
fi
if [ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
    psql_admin -c "CREATE DATABASE $DB OWNER $USER_NAME"
fi
echo "postgresql://$USER_NAME:$PASSWORD@127.0.0.1:$PORT/$DB"
