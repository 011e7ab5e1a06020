#!/usr/bin/env bash
# Issue 6's benchmark, in one run on this machine (see the header of
# crates/citytrust/examples/residents_bench.rs for what is measured and how):
#  - a consent-filtered aggregate vs the same aggregate unfiltered, over a
#    1,000,000-row personal dataset of 100,000 households with 10% withdrawn;
#  - "who used my data" once the log holds 1,000,000 entries.
#
#   bench/residents.sh [HOUSEHOLDS] [RUNS]      (defaults 100000, 15)
set -euo pipefail
cd "$(dirname "$0")/.."
HOUSEHOLDS=${1:-100000}
RUNS=${2:-15}
cargo build --release --locked --quiet --features citytrust/bench --example residents_bench
target/release/examples/residents_bench --households "$HOUSEHOLDS" --runs "$RUNS"
