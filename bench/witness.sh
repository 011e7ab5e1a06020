#!/usr/bin/env bash
# Issue 28's witness benchmark, in one run on this machine (see the header of
# crates/citytrust/examples/witness_bench.rs for what is measured and how):
#  - a witness answering add-checkpoint for a 1,000,000-entry log, over HTTP
#    and in-process;
#  - a log with two witnesses at 10,000 appends/s: how soon an append is in a
#    published (cosigned) checkpoint, and the appends' rate and latency
#    against the same log without witnesses.
#
#   bench/witness.sh [SECONDS]      (default 20 per load phase)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_PHASE=${1:-20}
cargo build --release --locked --quiet --features citytrust/bench --example witness_bench
target/release/examples/witness_bench --seconds "$SECONDS_PER_PHASE"
