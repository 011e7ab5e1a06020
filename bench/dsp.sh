#!/usr/bin/env bash
# Issue 29's Dataspace Protocol benchmark (see
# crates/citytrust/examples/dsp_bench.rs for what is measured and how): a
# governed read of 1,000 rows through the DSP pull path — trust A relaying,
# trust B's data address deciding and logging — against the same read made
# directly on B, interleaved, two trusts on loopback in one process.
#
#   bench/dsp.sh [ROWS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000}
RUNS=${2:-200}
cargo build --release --locked --quiet --features citytrust/bench --example dsp_bench
target/release/examples/dsp_bench --rows "$ROWS" --runs "$RUNS"
