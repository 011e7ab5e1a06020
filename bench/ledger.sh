#!/usr/bin/env bash
# Issue 5's transparency-log benchmark, in one run on this machine:
#  - durable appends on SQLite: plain single-row inserts vs the group committer
#    (256 concurrent callers), same entries, same database;
#  - a 1,000,000-entry log folded and signed by the sequencer, then inclusion
#    proofs at random indexes, in-process;
#  - `citytrust verify` of that log, served by `citytrust serve` on this machine.
#
#   bench/ledger.sh [ENTRIES]        (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${1:-1000000}
cargo build --release --locked --quiet --bin citytrust
cargo build --release --locked --quiet --workspace --features citytrust-service/bench --example ledger_bench
WORK=$(mktemp -d /tmp/citytrust-ledger-bench.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

target/release/examples/ledger_bench --entries "$ENTRIES" --keep "$WORK/data"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
START=$(date +%s.%N)
CITYTRUST_LOG=warn target/release/citytrust serve --data "$WORK/data" --listen "127.0.0.1:$PORT" >"$WORK/serve.log" 2>&1 &
PID=$!
for _ in $(seq 1 600); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
READY=$(date +%s.%N)
secs() { awk "BEGIN { printf \"%.2f\", $2 - $1 }"; }
printf 'serve: ready in %s s (the whole tree recomputed from its entries and checked at start)\n' "$(secs "$START" "$READY")"
for run in 1 2 3; do
  T0=$(date +%s.%N)
  target/release/citytrust verify --url "http://127.0.0.1:$PORT" >"$WORK/verify.out"
  T1=$(date +%s.%N)
  printf 'citytrust verify, run %d: %s s — %s\n' "$run" "$(secs "$T0" "$T1")" "$(head -1 "$WORK/verify.out")"
done
