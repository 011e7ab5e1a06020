#!/usr/bin/env bash
# Issue 7's thresholded-aggregate bench: POST /aggregate (margins, primary and
# secondary suppression) vs the same plain GROUP BY through POST /api/v1/query,
# over the same 5,000,000-row version, in one run.
#   ROWS=5000000 bench/aggregate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-5000000}
WORK=${BENCH_WORK:-/tmp/ct-bench}
mkdir -p "$WORK"
cargo build --release --locked --bin citytrust
[ -f "$WORK/trips-$ROWS.csv" ] || python3 bench/gen_trips.py "$ROWS" "$WORK/trips-$ROWS.csv"
python3 bench/aggregate.py --csv "$WORK/trips-$ROWS.csv" --workdir "$WORK" "$@"
