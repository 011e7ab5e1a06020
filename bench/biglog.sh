#!/usr/bin/env bash
# Issue 30, item 6: a log a busy city keeps for years. On a log of
# ENTRIES entries (default 10^8) on SQLite, this machine:
#  - `citytrust serve` ready (health answered) from a cold process, 3 starts;
#  - its resident memory after start and after the proof runs (VmRSS, VmHWM);
#  - inclusion proofs over HTTP with wrk (one connection, so latency is per
#    request): the proof alone (/api/v1/ledger/proofs/{i}) and the entry with
#    proof and checkpoint (/api/v1/ledger/entries/{i}, three database reads),
#    at random indexes over the whole log and over the newest 10,000, and
#    C2SP bottom tiles at random;
#  - the sequencer against the group committer: 256 callers appending for
#    30 s while the sequencer integrates (ledger_bench --sustain).
# The log is built once in DIR (kept for reruns; ~25 GB at 10^8 entries):
# entries written in bulk by bench/fill_log.py, then tiled and signed by the
# service (ledger_bench --adopt), as a migration would.
#
#   bench/biglog.sh [ENTRIES] [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${1:-100000000}
DIR=${2:-/var/tmp/citytrust-biglog-$ENTRIES}
# (Keep CARGO_HOME as the build it reuses had it: another CARGO_HOME rebuilds every crate.)
cargo build --release --locked --quiet --bin citytrust
cargo build --release --locked --quiet --workspace --features citytrust-service/bench --example ledger_bench
command -v wrk >/dev/null || { apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }; }
BENCH=target/release/examples/ledger_bench
if [ ! -f "$DIR/built" ]; then
  rm -rf "$DIR"
  $BENCH --init "$DIR"
  T0=$(date +%s)
  python3 bench/fill_log.py "$DIR/citytrust.sqlite" "$ENTRIES"
  echo "entries written in $(( $(date +%s) - T0 )) s"
  $BENCH --adopt "$DIR"
  touch "$DIR/built"
fi
echo "on disk: $(du -sh "$DIR" | cut -f1) ($ENTRIES entries)"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PID=
LUA=$(mktemp /tmp/citytrust-biglog.XXXXXX.lua)
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; rm -f "$LUA"; }
trap cleanup EXIT
secs() { awk "BEGIN { printf \"%.2f\", $2 - $1 }"; }
start() {
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  local t0; t0=$(date +%s.%N)
  CITYTRUST_LOG=warn target/release/citytrust serve --data "$DIR" --listen "127.0.0.1:$PORT" >"$DIR/serve.log" 2>&1 &
  PID=$!
  until curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; do
    kill -0 "$PID" 2>/dev/null || { cat "$DIR/serve.log"; exit 1; }
    sleep 0.02
  done
  printf 'serve ready in %s s (cold page cache), RSS %s\n' "$(secs "$t0" "$(date +%s.%N)")" "$(grep VmRSS /proc/$PID/status | awk '{print $2 " " $3}')"
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
for _ in 1 2 3; do start; stop; done
start
proofs() { # name lo hi path-kind
  cat >"$LUA" <<LUA
math.randomseed(20261206)
request = function()
  local i = math.random($2, $3)
  if "$4" == "tile" then
    local n = math.floor(i / 256)
    local g = {}
    repeat table.insert(g, 1, string.format("%03d", n % 1000)); n = math.floor(n / 1000) until n == 0
    for k = 1, #g - 1 do g[k] = "x" .. g[k] end
    return wrk.format("GET", "/ledger/tile/0/" .. table.concat(g, "/"))
  end
  if "$4" == "proof" then
    return wrk.format("GET", "/api/v1/ledger/proofs/" .. i)
  end
  return wrk.format("GET", "/api/v1/ledger/entries/" .. i)
end
LUA
  printf '%s: ' "$1"
  wrk -t1 -c1 -d20s --latency -s "$LUA" "http://127.0.0.1:$PORT" 2>&1 | tee "$DIR/wrk.out" | awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$NF} /unexpected|error/ {err=1} END {if (err) {print "wrk script error"; exit 1}; printf "%s req/s, p50 %s, p99 %s, non-2xx %s\n", rps, p50, p99, (bad==""?0:bad)}'
}
LAST=$(( ENTRIES - 1 ))
FULL=$(( ENTRIES / 256 * 256 - 1 ))
proofs "inclusion proof alone, random over the log" 0 "$LAST" proof
proofs "inclusion proof alone, newest 10,000" $(( LAST - 9999 )) "$LAST" proof
proofs "entry + inclusion proof + checkpoint, random over the log" 0 "$LAST" entry
proofs "entry + inclusion proof + checkpoint, newest 10,000" $(( LAST - 9999 )) "$LAST" entry
proofs "C2SP bottom tile, random over the log" 0 "$FULL" tile
printf 'after the proof runs: %s, peak %s\n' "$(grep VmRSS /proc/$PID/status | awk '{print "RSS " $2 " " $3}')" "$(grep VmHWM /proc/$PID/status | awk '{print $2 " " $3}')"
stop
$BENCH --sustain "$DIR" --seconds 30
