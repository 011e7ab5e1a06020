#!/usr/bin/env bash
# Interoperability benchmarks on a 10,000-dataset catalogue, release binary:
#   - CKAN package_search latency over HTTP (bench/ckan_latency.py)
#   - /catalog.ttl and /catalog.jsonld: time to stream the whole catalogue,
#     size, and the server's peak memory before and after (VmHWM)
#   - the peer, same run: rdflib building and serialising the same graph
#     (ckanext-dcat's way), bench/rdflib_catalogue.py
# Usage: bench/interop.sh   (needs the venv scripts/test makes: pyshacl brings rdflib)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
BIN=target/release/citytrust
[ -x "$BIN" ] || cargo build --release --locked --bin citytrust
WORK=$(mktemp -d /tmp/citytrust-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 2000); do curl -fsS "$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.005; done; return 1; }
kb() { awk -v k="$2" '$1 == k":" {print $2}' /proc/$1/status; }

P=$(port)
CITYTRUST_LOG=warn $BIN demo --data "$WORK/data" --listen 127.0.0.1:$P >/dev/null &
DEMO=$!
wait_up http://127.0.0.1:$P
echo "generating $N datasets…"
python3 bench/gen_catalogue.py http://127.0.0.1:$P "$N"
kill $DEMO; wait $DEMO 2>/dev/null || true

P=$(port)
URL=http://127.0.0.1:$P
CITYTRUST_LOG=warn $BIN serve --data "$WORK/data" --listen 127.0.0.1:$P >/dev/null 2>"$WORK/serve.log" &
SERVE=$!
wait_up "$URL"
total=$(curl -fsS "$URL/api/3/action/package_search?rows=0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["count"])')
echo "catalogue: $total datasets"
sleep 3
python3 bench/ckan_latency.py "$URL" 3000
for doc in catalog.ttl catalog.jsonld; do
  curl -fsS -o /dev/null "$URL/$doc"   # warm
  hwm0=$(kb $SERVE VmHWM); rss0=$(kb $SERVE VmRSS)
  best=""
  for _ in 1 2 3; do
    t=$(curl -fsS -o "$WORK/$doc" -w '%{time_total}' "$URL/$doc")
    best=$(python3 -c "print(min(float('$t'), float('${best:-1e9}')))")
  done
  hwm1=$(kb $SERVE VmHWM); rss1=$(kb $SERVE VmRSS)
  size=$(stat -c %s "$WORK/$doc")
  echo "/$doc: best of 3 ${best}s, $((size / 1024 / 1024)) MB; server RSS $((rss0 / 1024)) -> $((rss1 / 1024)) MB, peak $((hwm0 / 1024)) -> $((hwm1 / 1024)) MB"
done
echo "--- the peer, same run, same triples ---"
if [ -x .venv/bin/python ] && .venv/bin/python -c 'import rdflib' 2>/dev/null; then
  .venv/bin/python bench/rdflib_catalogue.py "$URL"
else
  echo "(no .venv with rdflib: run scripts/test once, or pip install pyshacl)"
fi
