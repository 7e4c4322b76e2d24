#!/usr/bin/env bash
# Fuzzes: `bash fuzz/run.sh [SECONDS] [TARGET...]` runs each target (every one by default) for
# SECONDS (default 600), one after the other. Needs `cargo install cargo-fuzz --locked`.
#
# Each run starts from the committed seeds (fuzz/corpus/<target>, never written) and from what
# earlier runs found (fuzz/corpus-run/<target>, not committed), and writes the inputs it finds
# to the latter. A crash is saved in fuzz/artifacts/<target>/ and the script goes on with the
# next target; it exits non-zero if any target crashed. The last lines of each run (and
# libFuzzer's final stats: executions, coverage `cov:` and features `ft:`) are in its output.
#
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the one stable toolchain accept them.
# FUZZ_BUILD_FLAGS adds flags to `cargo fuzz build/run` (e.g. `-s none` for no sanitizer).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
shift || true
export RUSTC_BOOTSTRAP=1
# shellcheck disable=SC2206
build_flags=(${FUZZ_BUILD_FLAGS:-})

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

# The largest input worth trying, per target (libFuzzer's default is 4096 bytes).
max_len() {
  case "$1" in
    nvs_mount | nvs_csv) echo 20000 ;;
    certs_validate | certs_store) echo 16384 ;;
    *) echo 8192 ;;
  esac
}

cargo fuzz build "${build_flags[@]}"

crashed=()
for target in "${targets[@]}"; do
  mkdir -p "corpus-run/$target" "corpus/$target"
  echo "== $target: ${seconds}s"
  if ! cargo fuzz run "${build_flags[@]}" "$target" "corpus-run/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len="$(max_len "$target")" -timeout=20 \
    -rss_limit_mb=2048 -print_final_stats=1; then
    crashed+=("$target")
  fi
done

if [ "${#crashed[@]}" -gt 0 ]; then
  echo "crashed: ${crashed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
