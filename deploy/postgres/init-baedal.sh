#!/usr/bin/env bash
# Runs once, when the postgres image initialises an empty data directory: the
# role and database of the contexts' stores. Each context makes its own schema
# (baedal_order, baedal_payment, ...) in it on first start.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  --set=pw="${BAEDAL_DB_PASSWORD:?BAEDAL_DB_PASSWORD is not set}" <<'SQL'
CREATE ROLE baedal LOGIN PASSWORD :'pw';
CREATE DATABASE baedal OWNER baedal;
SQL
