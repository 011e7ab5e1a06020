#!/usr/bin/env bash
# Issue 4's decision benchmark: the charter in Cedar vs the same rules in Rego
# (regorus), 10,000 datasets / 1,000 agreements / 10,000 users, one process.
#   bench/decide.sh
set -euo pipefail
cd "$(dirname "$0")/decide"
cargo run --release --locked --quiet
