#!/usr/bin/env bash
# Builds the ESP32-C3 firmware and prints its footprint beside the budget and the spike
# figures of issue 10: app image (sum of SHF_ALLOC sections that are not NOBITS: what
# `espflash save-image` writes, less its headers and padding), static RAM (.data + .bss +
# other allocated NOBITS in RAM). Needs only the Rust toolchain with riscv32imc-unknown-none-elf.
# Usage: bash bench/firmware_size.sh [--no-rsa] [--register] [--full-certs]
#   --no-rsa      without RSA server-chain verification (ECC chains to Amazon Root CA 3 only)
#   --register    with registration on the chip (feature `register`)
#   --full-certs  with acorn-certs' default features (RSA and P-384 identities, DN names
#                 through const-oid's database), as on Linux: shows what those trims save
set -euo pipefail
cd "$(dirname "$0")/../firmware"
features=()
for arg in "$@"; do
  case "$arg" in
    --no-rsa) features+=(--no-default-features) ;;
    --register) features+=(--features register) ;;
    --full-certs) features+=(--features acorn-certs/default) ;;
    *) echo "unknown option $arg (use --no-rsa, --register, --full-certs)" >&2; exit 2 ;;
  esac
done
start=$(date +%s)
cargo build --release "${features[@]}" >&2
elf=target/riscv32imc-unknown-none-elf/release/acorn-firmware
python3 - "$elf" "$(( $(date +%s) - start ))" <<'PY'
import struct, sys
path, secs = sys.argv[1], sys.argv[2]
data = open(path, 'rb').read()
assert data[:4] == b'\x7fELF' and data[4] == 1, 'expected a 32-bit ELF'
shoff, = struct.unpack_from('<I', data, 0x20)
shentsize, shnum, shstrndx = struct.unpack_from('<HHH', data, 0x2e)
secs_ = [struct.unpack_from('<IIIIIIIIII', data, shoff + i * shentsize) for i in range(shnum)]
strtab = secs_[shstrndx]
def name(off):
    start = strtab[4] + off
    return data[start:data.index(b'\0', start)].decode()
SHF_ALLOC, SHT_NOBITS = 0x2, 8
flash = iram = data_ = bss = 0
for (nm, typ, flags, addr, off, size, *_rest) in secs_:
    if not flags & SHF_ALLOC or size == 0:
        continue
    n = name(nm)
    if typ != SHT_NOBITS:
        flash += size
        if n.startswith(('.trap', '.rwtext')):
            iram += size
        elif n.startswith('.data'):
            data_ += size
    elif n.startswith('.bss'):
        bss += size
# The budget is one OTA application slot of the partition table the firmware ships with.
budget = next(int(line.split(',')[4].strip(), 0) for line in open('partitions.csv')
              if line.split(',')[0].strip() == 'ota_0')
print(f"firmware: {path} (build {secs} s)")
print(f"  app image (SHF_ALLOC, not NOBITS): {flash:>9,} B   budget {budget:,} B  ({flash * 100 / budget:.1f} %, {'OK' if flash <= budget else 'OVER'}, {budget - flash:+,} B)")
print(f"  static RAM: .data {data_:,} B + .bss {bss:,} B = {data_ + bss:,} B (the .bss holds the 72 KB esp-alloc heap); IRAM code {iram:,} B")
print(f"  spike (issue 10): embedded-tls + RSA full firmware 797,008 B; mbedtls-rs 945,136 B; Wi-Fi + TCP 510,704 B")
PY
