#!/usr/bin/env bash
# Builds mtls-gateway served by pingora's own serve path into target/pingora-serve/mtls-gateway, for
# bench-cpu.sh's `gateway-pingora` row (PINGORA_SERVE=1). bench/pingora-serve.patch, applied to a
# copy of the tracked files, serves each connection in the task pingora's listener starts for it on
# pingora's runtime (pingora-core services/listening.rs), on pingora's accepted stream with its read
# and write buffers (l4/stream.rs), through pingora's HTTP/1.1 keep-alive loop (apps/mod.rs): in
# place of src/connection/serve's worker loops, adopted stream and keep-alive loop. The connection's
# supervision (drain, age, revocation, watchdog) is left as it is. A measurement only: the patched
# binary loses the listener's keep-alive timeout, the watchdog's byte counts and the idle close.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
out=$here/target/pingora-serve
rm -rf "$out/tree"
mkdir -p "$out/tree"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$out/tree"
patch -s -d "$out/tree" -p1 <bench/pingora-serve.patch
(cd "$out/tree" && CARGO_TARGET_DIR=$here/target cargo build --release --bin mtls-gateway)
cp "$here/target/release/mtls-gateway" "$out/mtls-gateway"
echo "pingora-serve build: $out/mtls-gateway"
