#!/usr/bin/env bash
# A throw-away PostgreSQL server for the tests, on a free loopback port.
#   usage: .ci/postgres.sh [start] [DATA_DIR]   start a server (or find the one running in DATA_DIR); print its DSN
#          .ci/postgres.sh stop [DATA_DIR]      stop it and delete DATA_DIR
# Idempotent: a second start finds the cluster (and the server) already there and prints the same DSN.
# Root is needed only to install PostgreSQL from Debian's packages when it is missing (apt-get); as root the
# server runs as the postgres user (PostgreSQL refuses to run as root), otherwise as whoever runs this.
set -euo pipefail

ACTION=start
if [ "${1:-}" = start ] || [ "${1:-}" = stop ]; then
    ACTION="$1"
    shift
fi
DATA_DIR="${1:-/var/tmp/gateway-test-postgres-$(id -u)}"
DB=gateway_test USER_NAME=gateway PASSWORD=gateway-test-password

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ "$(id -u)" -eq 0 ]; then
    as_owner() { runuser -u postgres -- "$@"; }
    SUPERUSER=postgres
else
    as_owner() { "$@"; }
    SUPERUSER="$(id -un)"
fi

if [ "$ACTION" = stop ]; then
    if [ -f "$DATA_DIR/PG_VERSION" ]; then
        BIN="$(pg_bin)"
        if as_owner "$BIN/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1; then
            as_owner "$BIN/pg_ctl" -D "$DATA_DIR" -m fast -w stop >&2
        fi
        rm -rf "$DATA_DIR"
    elif [ -d "$DATA_DIR" ] && [ -z "$(ls -A "$DATA_DIR")" ]; then
        rmdir "$DATA_DIR"
    fi
    exit 0
fi

if [ -z "$(pg_bin)" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "PostgreSQL is not installed: install it (sudo apt-get install postgresql) or run this as root," \
            "which installs it; or set TEST_DATABASE_URL to a database of your own" >&2
        exit 1
    fi
    echo "installing PostgreSQL from Debian's packages" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
BIN="$(pg_bin)"

mkdir -p "$DATA_DIR"
if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$DATA_DIR"
fi
chmod 700 "$DATA_DIR"
if [ ! -f "$DATA_DIR/PG_VERSION" ]; then
    as_owner "$BIN/initdb" -D "$DATA_DIR" -U "$SUPERUSER" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 >/dev/null
fi
if as_owner "$BIN/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1; then
    PORT="$(sed -n 4p "$DATA_DIR/postmaster.pid")"  # the running server's port
else
    PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_owner "$BIN/pg_ctl" -D "$DATA_DIR" -l "$DATA_DIR/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DATA_DIR" >&2
fi
psql_admin() { as_owner "$BIN/psql" -h "$DATA_DIR" -p "$PORT" -U "$SUPERUSER" -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ -z "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$USER_NAME'")" ]; then
    psql_admin -c "CREATE ROLE $USER_NAME LOGIN PASSWORD '$PASSWORD'"
fi
if [ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
    psql_admin -c "CREATE DATABASE $DB OWNER $USER_NAME"
fi
echo "postgresql://$USER_NAME:$PASSWORD@127.0.0.1:$PORT/$DB"
