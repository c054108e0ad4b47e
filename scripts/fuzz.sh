#!/usr/bin/env bash
# Fuzzes the ClientHello parser for a bounded time (default 60 s): scripts/fuzz.sh [SECONDS]
# Needs cargo-fuzz (installed if missing) and nightly features, enabled on stable with RUSTC_BOOTSTRAP.
# Not part of CI's default path.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd "$here/fuzz"
mkdir -p corpus/client_hello
cp seeds/*.bin corpus/client_hello/
RUSTC_BOOTSTRAP=1 cargo fuzz run client_hello corpus/client_hello -- -max_total_time="$seconds" -max_len=20000
