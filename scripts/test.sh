#!/usr/bin/env bash
# All tests: formatting, lints, the no_std builds for ESP32-C3, and the test suites (which start
# their own mosquitto brokers and call ESP-IDF's NVS generator from .venv). See README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p acorn-embedded --all-targets --features tokio,device,register,rotation,claim -- -D warnings
for crate in acorn-nvs acorn-certs acorn-mqtt acorn-api acorn-device; do
  cargo build -p "$crate" --target riscv32imc-unknown-none-elf
done
cargo build -p acorn-device --features nvs --target riscv32imc-unknown-none-elf
cargo build -p acorn-device --features nvs,rotation --target riscv32imc-unknown-none-elf
# The device core without rotation (as the firmware builds it) is lint-clean too.
cargo clippy -p acorn-device --features nvs -- -D warnings
cargo build -p acorn-embedded --no-default-features --target riscv32imc-unknown-none-elf
cargo build -p acorn-embedded --no-default-features --features rotation,claim --target riscv32imc-unknown-none-elf
cargo build -p acorn-certs --no-default-features --features nvs --target riscv32imc-unknown-none-elf
cargo test --workspace
# The aws signer (AWS IoT Core through the AWS SDK, cargo feature `aws`) against moto's
# emulator: built once here, apart from the default build it would make heavy.
cargo test -p acorn-backend --features aws --lib --test aws
# The embedded transport against real mosquitto needs its tokio adapter.
cargo test -p acorn-embedded --features tokio,device,register,rotation,claim
# The ESP32-C3 firmware: its own cargo project; prints its footprint against the budget.
bash bench/firmware_size.sh
# Its development build (`dev-ca`: trusts the CA named by ACORN_DEV_CA at build time instead of
# Amazon's roots, for `acorn dev up --lan-address`) builds, and refuses to build without it.
dev_ca=$(mktemp --suffix=.pem)
python3 -c 'import base64, sys, textwrap
der = open(sys.argv[1], "rb").read()
print("-----BEGIN CERTIFICATE-----", *textwrap.wrap(base64.b64encode(der).decode(), 64),
      "-----END CERTIFICATE-----", sep="\n")' fuzz/fixtures/chain/root.der > "$dev_ca"
(cd firmware && ACORN_DEV_CA="$dev_ca" cargo build --release --features dev-ca)
if (cd firmware && env -u ACORN_DEV_CA cargo build --release --features dev-ca 2>/dev/null); then
  echo "error: the firmware's dev-ca build went on without ACORN_DEV_CA" >&2
  exit 1
fi
rm -f "$dev_ca"

# No broker of ours may outlive the suite: each is killed when its Broker is stopped or
# dropped, or by its parent-death signal when the test process dies. Our brokers all run with
# a config named acorn-mosquitto.conf (a killed one may take a moment to be reaped).
# The same holds for the `acorn` processes the CLI tests start (dev up, device run, backend
# serve), the PostgreSQL clusters of the registry tests (data in acorn-pg-*) and moto servers.
for _ in $(seq 20); do
  survivors=$(pgrep -a -f 'acorn-mosquitto[.]conf|target/[a-z]+/acorn (dev|device|demo|sim|backend) |acorn-pg-[^ ]*/data|moto[.]server import main' || true)
  [ -z "$survivors" ] && break
  sleep 0.1
done
if [ -n "$survivors" ]; then
  echo "error: processes of the test suite outlived it:" >&2
  echo "$survivors" >&2
  exit 1
fi
