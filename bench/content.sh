#!/usr/bin/env bash
# Issue 3's benches: ingest (CityTrust vs DuckDB vs PostgreSQL COPY) and a
# GROUP BY (API vs DataFusion direct vs DuckDB), side by side in one run.
# Needs: the release build, PostgreSQL binaries (scripts/test installs them).
#   ROWS=5000000 bench/content.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-5000000}
SMALL=${SMALL:-1000000}
WORK=${BENCH_WORK:-/tmp/ct-bench}
mkdir -p "$WORK"
chmod 755 "$WORK"

cargo build --release --locked --bin citytrust
cargo build --release --locked --features citytrust/bench --example sql_direct

[ -x "$WORK/venv/bin/python" ] || python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -c 'import duckdb' 2>/dev/null || "$WORK/venv/bin/pip" install -q duckdb==1.4.1

[ -f "$WORK/trips-$ROWS.csv" ] || python3 bench/gen_trips.py "$ROWS" "$WORK/trips-$ROWS.csv"
[ -f "$WORK/trips-$SMALL.csv" ] || python3 bench/gen_trips.py "$SMALL" "$WORK/trips-$SMALL.csv"
chmod 644 "$WORK"/trips-*.csv

# A throwaway PostgreSQL cluster with default settings, reading the CSV server-side.
PGBIN=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PGDIR=$(mktemp -d)
chmod 755 "$PGDIR"
[ "$(id -u)" -eq 0 ] && chown postgres "$PGDIR"
as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 >/dev/null
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w -o "-p $PGPORT -k $PGDIR -c listen_addresses=''" start >/dev/null
trap 'as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast stop >/dev/null 2>&1; rm -rf "$PGDIR"' EXIT

"$WORK/venv/bin/python" bench/content_bench.py --csv "$WORK/trips-$ROWS.csv" --small-csv "$WORK/trips-$SMALL.csv" \
  --psql "$PGBIN/psql -h $PGDIR -p $PGPORT -U postgres -d postgres -q" --workdir "$WORK"
