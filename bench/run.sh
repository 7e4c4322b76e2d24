#!/usr/bin/env bash
# Builds in release and runs every benchmark, printing Markdown for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv && .venv/bin/pip install -q esp-idf-nvs-partition-gen==0.3.0; fi
cargo build --release -p acorn -p acorn-bench
./target/release/nvs_bench
./target/release/certs_bench
