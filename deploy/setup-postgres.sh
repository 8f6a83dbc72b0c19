#!/bin/sh
# Temporal's two databases on PostgreSQL, made and brought to the schema of this
# temporalio/admin-tools version, which must be the server's (docker-compose.yml pins both).
#
# It runs on every `docker compose up`, so each step is harmless the second time:
# - create: an existing database is reported and left as it is;
# - setup-schema -v 0.0: adds the version tables when missing, and leaves the version of a
#   database already past 0.0 alone;
# - update-schema: applies only the versions newer than the database's, none when current.
#
# temporal-sql-tool reads its connection from SQL_PLUGIN, SQL_HOST, SQL_PORT, SQL_USER and
# SQL_PASSWORD (the password stays off the command line); DBNAME and VISIBILITY_DBNAME are
# the server's own variables for the two databases.
set -eu

: "${SQL_PLUGIN:?}" "${SQL_HOST:?}" "${SQL_USER:?}" "${SQL_PASSWORD:?}"
schemas="/etc/temporal/schema/postgresql/v12"

create_database() {
    if output=$(temporal-sql-tool --db "$1" create 2>&1); then
        echo "database $1: ready"
    elif printf '%s\n' "$output" | grep -q "already exists"; then
        # Versions of the tool differ: some succeed on an existing database, some fail.
        echo "database $1: exists"
    else
        printf '%s\n' "$output" >&2
        echo "database $1: cannot be created on $SQL_HOST" >&2
        exit 1
    fi
}

prepare() {
    create_database "$1"
    temporal-sql-tool --db "$1" setup-schema -v 0.0
    temporal-sql-tool --db "$1" update-schema -d "$schemas/$2/versioned"
    echo "database $1: schema current"
}

prepare "${DBNAME:?}" temporal
prepare "${VISIBILITY_DBNAME:?}" visibility
