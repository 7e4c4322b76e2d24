#!/usr/bin/env bash
# Builds in release and runs every benchmark, printing Markdown for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv && .venv/bin/pip install -q esp-idf-nvs-partition-gen==0.3.0; fi
cargo build --release -p acorn -p acorn-bench
./target/release/nvs_bench
./target/release/certs_bench
./target/release/queue_bench
# MQTT over mutual TLS against a real mosquitto (needs /usr/sbin/mosquitto and mosquitto_pub):
# `acorn device ping` beside `mosquitto_pub -q 1`, press-to-PUBACK latency, agent memory.
cargo run --release -q -p acorn-agent --example ping_bench
cargo run --release -q -p acorn-agent --example device_bench
