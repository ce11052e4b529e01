#!/bin/sh
# PostgreSQL entrypoint of localhost/radiolens-postgres (scripts/build-compose-images.sh), with the interface of
# the registries' postgres image: on an empty PGDATA, a cluster whose superuser POSTGRES_USER has the password
# in the file POSTGRES_PASSWORD_FILE (never in the environment), the database POSTGRES_DB, and password
# (SCRAM) authentication for every network client. Then the command (postgres) replaces this shell.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
user="${POSTGRES_USER:-postgres}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile="${POSTGRES_PASSWORD_FILE:?set POSTGRES_PASSWORD_FILE to a file holding the password}"
  initdb --pgdata="$PGDATA" --username="$user" --pwfile="$pwfile" --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  # The local socket in /tmp: /run is empty in the image and only root may create folders there.
  printf "listen_addresses = '*'\nunix_socket_directories = '/tmp'\n" >> "$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  db="${POSTGRES_DB:-$user}"
  if [ "$db" != postgres ]; then
    echo "CREATE DATABASE \"$db\" OWNER \"$user\";" | postgres --single -D "$PGDATA" -j postgres >/dev/null
  fi
  echo "initialised $PGDATA (database $db)"
fi
exec "$@"
