#!/usr/bin/env bash
# Issue 7's k-anonymity benchmark: `citytrust anonymise` (release build) vs the
# anjana package (PyPI) on Adult, 8 quasi-identifiers, ARX's hierarchies, k=5,
# at 0% and 5% suppression, in one run. Prints a table; JSON=FILE keeps the figures.
#   bench/anonymise.sh          (RUNS=N repeats of our binary, default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/release/citytrust ] || cargo build --release --locked --bin citytrust
# anjana and pycanon pin typing_extensions: their own venv (as scripts/test's privacy step)
[ -x .venv-privacy/bin/python ] || python3 -m venv .venv-privacy
.venv-privacy/bin/pip show anjana 2>/dev/null | grep -q '^Version: 1.2.3$' \
  || .venv-privacy/bin/pip install -q --disable-pip-version-check anjana==1.2.3 pycanon==1.3.5
CITYTRUST=target/release/citytrust .venv-privacy/bin/python -W ignore bench/anonymise.py
