#!/usr/bin/env bash
# Issue 4: a governed read vs an open read of 1,000 rows over HTTP (release demo).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin citytrust
python3 bench/governed_read.py
