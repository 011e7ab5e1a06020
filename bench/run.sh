#!/usr/bin/env bash
# Catalogue benchmarks on a 10,000-dataset data dir, with the release binary:
#   - time from `citytrust serve` start to the first answered /healthz
#   - idle RSS
#   - HTTP search latency (bench/search_latency.py) and throughput (wrk)
# Usage: bench/run.sh   (builds the release binary if needed; needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
BIN=target/release/citytrust
[ -x "$BIN" ] || cargo build --release --locked --bin citytrust
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }
WORK=$(mktemp -d /tmp/citytrust-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 2000); do curl -fsS "$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.005; done; return 1; }

P=$(port)
CITYTRUST_LOG=warn $BIN demo --data "$WORK/data" --listen 127.0.0.1:$P >/dev/null &
DEMO=$!
wait_up http://127.0.0.1:$P
echo "generating $N datasets…"
python3 bench/gen_catalogue.py http://127.0.0.1:$P "$N"
kill $DEMO; wait $DEMO 2>/dev/null || true

P=$(port)
URL=http://127.0.0.1:$P
start=$(date +%s%N)
CITYTRUST_LOG=info $BIN serve --data "$WORK/data" --listen 127.0.0.1:$P >/dev/null 2>"$WORK/serve.log" &
SERVE=$!
wait_up "$URL"
ready_ms=$(( ($(date +%s%N) - start) / 1000000 ))
total=$(curl -fsS "$URL/api/v1/datasets?per_page=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
sleep 5
rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$SERVE/status)
echo "catalogue: $total datasets"
echo "serve ready (process start to first /healthz answer): ${ready_ms} ms"
echo "idle RSS after start: $((rss_kb / 1024)) MB"
python3 bench/search_latency.py "$URL" 5000
wrk -t2 -c32 -d20s -s bench/wrk_search.lua "$URL" | sed -n '1,12p'
rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$SERVE/status)
echo "RSS after load: $((rss_kb / 1024)) MB"
echo "--- baseline on the same catalogue, same run ---"
python3 bench/fts5_baseline.py "$WORK/data/citytrust.sqlite" 2000
