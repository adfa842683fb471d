#!/bin/sh
# First start: initdb in $PGDATA with the superuser $POSTGRES_USER (default postgres),
# its password from $POSTGRES_PASSWORD or the file $POSTGRES_PASSWORD_FILE, and the
# database $POSTGRES_DB (default: the user's name). Then postgres, listening on every
# address of the container with password authentication (local socket: trust).
set -eu
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
fi
if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres-entrypoint: set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE)" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -A scram-sha-256 --auth-local=trust \
        -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -s start
        echo 'CREATE DATABASE :"db" OWNER :"user";' |
            psql -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$user" -d postgres -v db="$db" -v user="$user"
        pg_ctl -D "$PGDATA" -m fast -w -s stop
    fi
    echo "postgres-entrypoint: made the cluster in $PGDATA (user $user, database $db)" >&2
fi
exec "$@"
