#!/usr/bin/env bash
# CI smoke of the fuzz targets: `bash fuzz/smoke.sh [SECONDS]` (default 15) installs cargo-fuzz
# if needed, builds every target, and runs each for SECONDS from its committed seeds
# (fuzz/corpus/<target>), two at a time. libFuzzer first runs every seed, so a regression that
# crashes on a corpus input fails here; the short fuzzing after that may find more. New inputs
# go to a temporary directory and are thrown away; a crash is kept in fuzz/artifacts/<target>/
# and its log is printed.
#
# The build is unoptimised and without AddressSanitizer (`--dev -s none`; overflow checks and
# debug assertions stay on): it compiles in half the time, and every crate fuzzed here forbids
# `unsafe`, so a seed that crashes one build crashes the other. `fuzz/run.sh` builds optimised
# with AddressSanitizer for real fuzzing. FUZZ_SMOKE_FLAGS replaces the build flags.
#
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the one stable toolchain accept them, in
# this step only.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-15}"
export RUSTC_BOOTSTRAP=1
# shellcheck disable=SC2206
flags=(${FUZZ_SMOKE_FLAGS:---dev -s none})
start=$(date +%s)

# libfuzzer-sys compiles libFuzzer, which is C++.
if ! command -v c++ >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq g++ >/dev/null
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
cargo fuzz build "${flags[@]}"
built=$(date +%s)

mapfile -t targets < <(cargo fuzz list)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

smoke() {
  local target=$1
  mkdir -p "$work/$target"
  # The same build as above: `cargo fuzz run` only checks that it is fresh.
  if cargo fuzz run "${flags[@]}" "$target" "$work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=20000 -timeout=20 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$work/$target.log" 2>&1; then
    echo "fuzz smoke: $target ok ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$work/$target.log" | grep -o '[0-9]*$') runs)"
  else
    echo "fuzz smoke: $target FAILED; its log ends:" >&2
    tail -n 60 "$work/$target.log" >&2
    return 1
  fi
}

failed=0
pids=()
for target in "${targets[@]}"; do
  smoke "$target" &
  pids+=($!)
  if [ "${#pids[@]}" -eq 2 ]; then
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done

end=$(date +%s)
echo "fuzz smoke: ${#targets[@]} targets; install and build $((built - start)) s, runs $((end - built)) s"
exit "$failed"
