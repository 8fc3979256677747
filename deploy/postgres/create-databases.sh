#!/bin/bash
# Creates a database and a user per ShopLens service (the official image runs this once, when
# it initialises an empty data directory). Each service owns its database and can reach no
# other: the user of one service has no right on another's database.
set -euo pipefail
for service in customer product order payment shipping; do
    var="SHOPLENS_${service^^}_DB_PASSWORD"
    password="${!var:?set $var}"
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v user="$service" -v password="$password" <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'password';
CREATE DATABASE :"user" OWNER :"user";
REVOKE ALL ON DATABASE :"user" FROM PUBLIC;
SQL
done
