#!/usr/bin/env bash
# Fuzzes NVS mounting: `bash fuzz/run.sh [SECONDS]` (default 600). Needs `cargo install cargo-fuzz`.
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the one stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
cargo build --release -p acorn --manifest-path ../Cargo.toml
mkdir -p corpus/nvs_mount seeds
cd seeds
printf 'key,type,encoding,value\nmqtt_certs,namespace,,\ncert,data,string,hello-certificate\nb,data,hex2bin,%s\nv,data,u8,1\nsettings,namespace,,\nx,data,i64,-5\n' \
  "$(printf 'ab%.0s' $(seq 3000))" > s.csv
python3 - <<'PY'
import struct, zlib
k = bytes([0x11]) * 32 + bytes([0x22]) * 32   # the fixed key the fuzz target uses
open('k.bin', 'wb').write(k + struct.pack('<I', zlib.crc32(k, 0xFFFFFFFF)) + b'\xff' * (4096 - 68))
PY
../../target/release/acorn nvs generate s.csv p.bin 0x4000 2>/dev/null
../../target/release/acorn nvs generate s.csv e.bin 0x4000 --encrypt --inputkey k.bin 2>/dev/null
(printf '\x03'; cat p.bin) > ../corpus/nvs_mount/plain
(printf '\x07'; cat e.bin) > ../corpus/nvs_mount/encrypted
(printf '\x0b'; head -c 3000 p.bin) > ../corpus/nvs_mount/partial
cd ..
RUSTC_BOOTSTRAP=1 cargo fuzz run nvs_mount -- -max_total_time="$seconds" -max_len=20000
