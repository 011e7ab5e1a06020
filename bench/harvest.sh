#!/usr/bin/env bash
# Harvest benchmark (issue 29): node A harvests node B's DCAT-AP catalogue
# (/catalog.ttl) over loopback, release binary.
#   - B holds the demo city plus 1,000 synthetic entries: A harvests it
#     (registration harvests at once), timed, with A's peak RSS before/after;
#   - B grows to 10,000 synthetic entries: A harvests it again under a second
#     id (every entry new), and once more (every entry unchanged);
#   - the peer, same run, same feed: rdflib parsing it and walking its
#     datasets, as ckanext-dcat's harvester does (bench/rdflib_harvest.py).
# Usage: bench/harvest.sh   (needs the venv scripts/test makes: pyshacl brings rdflib)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/citytrust}
[ -x "$BIN" ] || cargo build --release --locked --bin citytrust
WORK=$(mktemp -d /tmp/citytrust-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 4000); do curl -fsS "$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.005; done; return 1; }
kb() { awk -v k="$2" '$1 == k":" {print $2}' /proc/$1/status; }

PB=$(port); B=http://127.0.0.1:$PB
CITYTRUST_LOG=warn $BIN demo --data "$WORK/b" --listen 127.0.0.1:$PB --public-url "$B" >/dev/null &
wait_up "$B"
PA=$(port); A=http://127.0.0.1:$PA
CITYTRUST_LOG=warn $BIN demo --data "$WORK/a" --listen 127.0.0.1:$PA --public-url "$A" >/dev/null &
SERVE_A=$!
wait_up "$A"
TOKEN=$(curl -fsS -X POST "$A/api/v1/auth/token" -H 'content-type: application/json' \
  -d '{"username":"admin","password":"demo-password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

harvest() { # id kind url → prints the report's figures and the wall time
  local t0 t1 out
  t0=$(date +%s%N)
  if [ "$1" = again ]; then
    out=$(curl -fsS -X POST "$A/api/v1/remote-catalogues/$2/harvest" -H "authorization: Bearer $TOKEN")
  else
    out=$(curl -fsS -X POST "$A/api/v1/remote-catalogues" -H "authorization: Bearer $TOKEN" \
      -H 'content-type: application/json' -d "{\"id\":\"$2\",\"name\":\"B\",\"url\":\"$B/catalog.ttl\",\"kind\":\"dcat\"}")
  fi
  t1=$(date +%s%N)
  echo "$out" | python3 -c '
import json, sys
d = json.load(sys.stdin); r = d.get("last_harvest", d)
print("  outcome %s: %d records, %d added, %d updated, %d unchanged, %d rejected, %.1f MB read" % (
    r["outcome"], r["records"], r["added"], r["updated"], r["unchanged"], r["rejected"], r["bytes"] / 1e6))' 
  echo "  wall time: $(( (t1 - t0) / 1000000 )) ms; A's RSS $(( $(kb $SERVE_A VmRSS) / 1024 )) MB, peak $(( $(kb $SERVE_A VmHWM) / 1024 )) MB"
}

echo "generating 1,000 datasets on B…"
python3 bench/gen_catalogue.py "$B" 1000
total=$(curl -fsS "$B/api/v1/datasets?per_page=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
echo "B: $total datasets; A before: RSS $(( $(kb $SERVE_A VmRSS) / 1024 )) MB, peak $(( $(kb $SERVE_A VmHWM) / 1024 )) MB"
echo "harvest of $total entries (all new):"
harvest new b1k
echo "generating 9,000 more on B…"
START=1000 python3 bench/gen_catalogue.py "$B" 9000
total=$(curl -fsS "$B/api/v1/datasets?per_page=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
echo "B: $total datasets"
curl -fsS -o "$WORK/catalog.ttl" "$B/catalog.ttl"
echo "harvest of $total entries (all new):"
harvest new b10k
echo "the same again (all unchanged):"
harvest again b10k
echo "--- peer, same run, same feed: rdflib (ckanext-dcat's harvester parses into an rdflib graph) ---"
.venv/bin/python bench/rdflib_harvest.py "$WORK/catalog.ttl"
