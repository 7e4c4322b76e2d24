#!/usr/bin/env bash
# All tests: formatting, lints, the no_std builds for ESP32-C3, and the test suites (which start
# their own mosquitto brokers and call ESP-IDF's NVS generator from .venv). See README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
for crate in acorn-nvs acorn-certs acorn-mqtt; do
  cargo build -p "$crate" --target riscv32imc-unknown-none-elf
done
cargo test --workspace
