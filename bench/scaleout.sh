#!/usr/bin/env bash
# Issue 30, item 4: one mixed scenario, driven by Locust, against one node and
# then against three nodes of one trust, in the same run: searches, open and
# governed downloads, SQL queries, uploads, consent changes and log reads
# (bench/scaleout_locust.py says what each is, and its weight). Reports per
# kind the requests, failures, req/s, p50 and p99; totals; errors; the log's
# integration delay (a read answered → a signed checkpoint covers its entry);
# where the CPU went; and 3 nodes ÷ 1 node. Errors must be zero: the script
# exits 1 unless every request succeeded and was answered right, the log
# verifies (`citytrust verify`) after each run, and no node logged an error
# or panicked.
#
#   bench/scaleout.sh [SECONDS [USERS]]        default 60 s, 24 users (at most 39)
#
#   CITYTRUST_BIN=target/debug/citytrust bench/scaleout.sh 20 6   # no build; any binary
#   THINK_MS=100 ...        wait between a user's requests (default 0: closed loop, no pause)
#   SPAWN_RATE=N ...        users started per second (default: all at once)
#   KEEP=1 ...              keep the work directory (node logs, Locust's CSV files)
#
# The shape is production's: one PostgreSQL cluster (private, on a free port,
# default durability settings) and one S3-compatible store (moto's server, on
# a free port), both started here under a mktemp directory and removed on
# exit. Each run gets a FRESH database and its own bucket prefix: node 1 is
# `citytrust demo` (loads the demo city, then serves); nodes 2 and 3 are
# `citytrust serve` on the same database and bucket, with node 1's
# ledger-key, witness-key and pseudonym-keys copied into their own data
# directories (docs/OPERATING.md, "Several nodes"). The 1-node run goes
# first, then its node is stopped and the 3-node run starts: same scenario,
# same duration, same number of users, the users spread evenly over the nodes.
#
# This machine has 2 cores. The nodes, PostgreSQL, moto, Locust and the probe
# all share them, so 3 nodes ÷ 1 node shows what coordination costs (three
# sequencers taking turns, three catalogue indexes, three caches), not how a
# trust scales on three machines. The CPU line of each run says who used them.
set -euo pipefail
if [ -n "${CITYTRUST_BIN:-}" ]; then CITYTRUST_BIN=$(realpath "$CITYTRUST_BIN"); fi
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${1:-${DURATION:-60}}
USERS=${2:-${USERS:-24}}
if [ "$USERS" -gt 39 ]; then
  echo "at most 39 users: each consents for a household of its own (the demo has 40, one is resident's)" >&2
  exit 2
fi
SPAWN_RATE=${SPAWN_RATE:-$USERS}
export THINK_MS=${THINK_MS:-0}
LOCUST_VERSION=2.47.0
MOTO_VERSION=5.2.5

if [ -z "${CITYTRUST_BIN:-}" ]; then
  cargo build --release --locked --quiet --bin citytrust
  BIN=$ROOT/target/release/citytrust
else
  BIN=$CITYTRUST_BIN
fi
[ -x "$BIN" ] || { echo "no citytrust binary at $BIN" >&2; exit 1; }

# Locust and moto's server in the repository's venv (as scripts/test makes it).
[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/pip show locust 2>/dev/null | grep -q "^Version: $LOCUST_VERSION\$"; then
  .venv/bin/pip install -q --disable-pip-version-check "locust==$LOCUST_VERSION"
fi
if ! .venv/bin/pip show moto 2>/dev/null | grep -q "^Version: $MOTO_VERSION\$"; then
  .venv/bin/pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
PY=$ROOT/.venv/bin/python
HELPERS=$ROOT/bench/scaleout_locust.py
PGBIN=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")

WORK=$(mktemp -d /tmp/citytrust-scaleout.XXXXXX)
# Every node of both runs runs this copy, whatever a build does to $BIN meanwhile.
cp "$BIN" "$WORK/citytrust"
BIN=$WORK/citytrust
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  if [ -f "$WORK/pg/data/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast stop >/dev/null 2>&1 || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_healthy() { # URL PID LOG
  local i
  for i in $(seq 1 600); do
    curl -fsS "$1/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { echo "the node at $1 exited:" >&2; tail -20 "$3" >&2; exit 1; }
    sleep 0.5
  done
  echo "the node at $1 did not answer /healthz in 300 s" >&2; tail -20 "$3" >&2; exit 1
}

echo "==> PostgreSQL ($PGBIN) and moto's S3 server, private, under $WORK"
mkdir -p "$WORK/pg"
if [ "$(id -u)" -eq 0 ]; then chown postgres "$WORK" "$WORK/pg" && chmod 755 "$WORK"; fi
PGPORT=$(free_port)
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres -A trust -E UTF8 >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w -o \
  "-c listen_addresses=127.0.0.1 -p $PGPORT -k $WORK/pg -c max_connections=200" start >/dev/null
S3PORT=$(free_port)
.venv/bin/moto_server -H 127.0.0.1 -p "$S3PORT" >"$WORK/s3.log" 2>&1 &
MOTO=$!
PIDS+=("$MOTO")
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$S3PORT/" >/dev/null 2>&1 && break
  sleep 0.5
done
BUCKET=citytrust-scaleout
curl -fsS -X PUT "http://127.0.0.1:$S3PORT/$BUCKET" >/dev/null
export AWS_ACCESS_KEY_ID=citytrust-bench AWS_SECRET_ACCESS_KEY=citytrust-bench-secret \
  AWS_REGION=us-east-1 AWS_ENDPOINT_URL="http://127.0.0.1:$S3PORT" AWS_ALLOW_HTTP=true
export CITYTRUST_LOG=warn
export PYTHONDONTWRITEBYTECODE=1 # no bench/__pycache__ from loading the locustfile

# One run: N nodes on a fresh database; writes $WORK/result-N.json.
run() {
  local n=$1 label db url store i port dir pid nodes=() node_pids=()
  label="$n node"
  if [ "$n" -gt 1 ]; then label="${label}s"; fi
  db="ct_scaleout_${n}"
  echo
  echo "==> $label: fresh database $db, bucket prefix $db, $USERS users for $DURATION s"
  as_pg "$PGBIN/psql" -q -h 127.0.0.1 -p "$PGPORT" -U postgres -c "CREATE DATABASE $db" >/dev/null
  url="postgres://postgres@127.0.0.1:$PGPORT/$db"
  store="s3://$BUCKET/$db"
  for i in $(seq 1 "$n"); do
    port=$(free_port)
    dir="$WORK/$db/node$i"
    mkdir -p "$dir"
    if [ "$i" -eq 1 ]; then
      "$BIN" demo --data "$dir" --database-url "$url" --object-store "$store" \
        --listen "127.0.0.1:$port" >"$dir.out" 2>"$dir.log" &
    else
      for key in ledger-key witness-key pseudonym-keys; do
        if [ -e "$WORK/$db/node1/$key" ]; then cp "$WORK/$db/node1/$key" "$dir/$key"; fi
      done
      "$BIN" serve --data "$dir" --database-url "$url" --object-store "$store" \
        --listen "127.0.0.1:$port" >"$dir.out" 2>"$dir.log" &
    fi
    pid=$!
    PIDS+=("$pid")
    node_pids+=("$pid")
    nodes+=("http://127.0.0.1:$port")
    # Node 1 must have loaded the demo (and made the keys) before the others start.
    wait_healthy "http://127.0.0.1:$port" "$pid" "$dir.log"
  done
  local node_list
  node_list=$(IFS=,; echo "${nodes[*]}")
  "$PY" "$HELPERS" setup --nodes "$node_list" --users "$USERS" --state "$WORK/state-$n.json"

  local probe_pid status=0 cpu_args
  cpu_args=(--nodes "$(IFS=,; echo "${node_pids[*]}")" --moto "$MOTO" --postmaster "$(head -1 "$WORK/pg/data/postmaster.pid")")
  "$PY" "$HELPERS" cpu "${cpu_args[@]}" --out "$WORK/cpu-$n-before.json"
  "$PY" "$HELPERS" probe --nodes "$node_list" --seconds "$DURATION" --out "$WORK/probe-$n.json" &
  probe_pid=$!
  SCALEOUT_STATE="$WORK/state-$n.json" /usr/bin/time -f '%U %S' -o "$WORK/locust-$n.time" \
    .venv/bin/locust -f "$HELPERS" --headless -u "$USERS" -r "$SPAWN_RATE" -t "${DURATION}s" \
    --stop-timeout 30 --host "${nodes[0]}" --csv "$WORK/locust-$n" --only-summary \
    >"$WORK/locust-$n.out" 2>&1 || status=$?
  wait "$probe_pid" || true
  "$PY" "$HELPERS" cpu "${cpu_args[@]}" --out "$WORK/cpu-$n-after.json"
  if [ ! -s "$WORK/locust-${n}_final_stats.csv" ]; then
    echo "Locust did not finish (exit $status):" >&2; tail -30 "$WORK/locust-$n.out" >&2; exit 1
  fi
  "$PY" "$HELPERS" report --label "$label (${USERS} users, ${DURATION} s)" --csv "$WORK/locust-$n" \
    --probe "$WORK/probe-$n.json" \
    --cpu "$WORK/cpu-$n-before.json" "$WORK/cpu-$n-after.json" "$WORK/locust-$n.time" --out "$WORK/result-$n.json" \
    || PROBLEMS+=("$label: requests failed")
  if [ -s "$WORK/locust-${n}_final_failures.csv" ] && [ "$(wc -l <"$WORK/locust-${n}_final_failures.csv")" -gt 1 ]; then
    echo "  failures (Locust's list, first 10):"
    head -11 "$WORK/locust-${n}_final_failures.csv" | tail -n +2 | cut -c1-400 | sed 's/^/    /'
  fi
  # The log after the load: one history, every entry once, through the last node.
  if "$BIN" verify --url "${nodes[$((n - 1))]}" >"$WORK/verify-$n.out" 2>&1; then
    echo "  citytrust verify: $(head -1 "$WORK/verify-$n.out")"
  else
    echo "  citytrust verify FAILED:"; head -5 "$WORK/verify-$n.out" | sed 's/^/    /'
    PROBLEMS+=("$label: the log did not verify")
  fi
  # The nodes log warnings and errors only (CITYTRUST_LOG=warn); an error or
  # a panic is a problem.
  for i in $(seq 1 "$n"); do
    dir="$WORK/$db/node$i"
    local warnings errors
    warnings=$(grep -c " WARN " "$dir.log" || true)
    errors=$(grep -c -E " ERROR |panicked" "$dir.log" || true)
    if [ "$warnings" -gt 0 ] || [ "$errors" -gt 0 ]; then
      echo "  node $i logged $errors error(s) and $warnings warning(s); the first lines:"
      grep -m 5 -E " (ERROR|WARN) |panicked" "$dir.log" | cut -c1-400 | sed 's/^/    /'
    fi
    if [ "$errors" -gt 0 ]; then PROBLEMS+=("$label: node $i logged $errors error(s)"); fi
  done
  for pid in "${node_pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  PIDS=("$MOTO")
}

PROBLEMS=()
run 1
run 3
"$PY" "$HELPERS" compare "$WORK/result-1.json" "$WORK/result-3.json" || true
if [ ${#PROBLEMS[@]} -gt 0 ]; then
  echo
  printf 'NOT CLEAN: %s\n' "${PROBLEMS[@]}"
  exit 1
fi
