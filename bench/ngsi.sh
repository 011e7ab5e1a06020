#!/usr/bin/env bash
# Issue 26: the NGSI-LD broker's five performance targets (bench/ngsi_bench.py),
# with the plain-PostgreSQL INSERT baseline side by side in the same run.
#
#   bench/ngsi.sh              CityTrust on SQLite (the default store)
#   STORE=postgres bench/ngsi.sh   CityTrust on the same PostgreSQL as the baseline
#   ENTITIES=100000 PHASES=notify bench/ngsi.sh   the RSS target's shape
#
# A throwaway PostgreSQL 15 cluster is started for the baseline with its
# default durability (fsync and synchronous_commit on): an acknowledged
# INSERT is committed, as an acknowledged upsert is in CityTrust (SQLite in
# WAL mode with synchronous=FULL; PostgreSQL as configured here).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin citytrust
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
WORK=$(mktemp -d /tmp/ct-ngsi-pg.XXXXXX)
chown postgres "$WORK" 2>/dev/null || true
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PGBIN/initdb" -D "$WORK/data" -U postgres -A trust >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $WORK -c max_connections=200 -c shared_buffers=512MB" start >/dev/null
trap 'as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -c "CREATE DATABASE baseline" -c "CREATE DATABASE citytrust" postgres
export BENCH_PG_URL="postgres://postgres@127.0.0.1:$PGPORT/baseline"
if [ "${STORE:-sqlite}" = postgres ]; then
  export CITYTRUST_DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/citytrust"
fi
python3 bench/ngsi_bench.py
