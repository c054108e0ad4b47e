#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input, each for a bounded time (default 60 s), one after another:
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Targets (default: all): client_hello, dpop_proof, request_target, trace_context (fuzz/fuzz_targets/).
# Each starts from its seeds (fuzz/seeds/TARGET/) and the corpus of earlier runs (fuzz/corpus/TARGET/);
# a crash is saved under fuzz/artifacts/TARGET/ and stops the script. The fuzzer runs without cargo, so
# NICE=19 lowers its priority alone; CARGO names the cargo command used to build.
# Needs cargo-fuzz (installed if missing) and nightly features, enabled on stable with RUSTC_BOOTSTRAP.
# Not part of CI's default path.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
cargo=${CARGO:-cargo}
command -v cargo-fuzz >/dev/null || $cargo install cargo-fuzz --locked
cd "$here/fuzz"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(ls fuzz_targets | sed 's/\.rs$//')
fi
triple=$(rustc -vV | sed -n 's/^host: //p')

# Inputs longer than the parser reads are wasted: a ClientHello fits 16 KiB of records, a proof 8 KiB.
max_len() {
  case $1 in
    client_hello) echo 20000 ;;
    dpop_proof) echo 9000 ;;
    *) echo 4096 ;;
  esac
}

for target in "${targets[@]}"; do
  [ -f "fuzz_targets/$target.rs" ] || { echo "fuzz.sh: no target $target" >&2; exit 2; }
  RUSTC_BOOTSTRAP=1 $cargo fuzz build "$target"
  mkdir -p "corpus/$target" "artifacts/$target"
  cp seeds/"$target"/* "corpus/$target/"
  echo "fuzz.sh: $target for $seconds s"
  nice -n "${NICE:-0}" "target/$triple/release/$target" "corpus/$target" \
    -artifact_prefix="artifacts/$target/" -max_total_time="$seconds" -max_len="$(max_len "$target")" \
    -print_final_stats=1
done
