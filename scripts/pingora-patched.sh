#!/usr/bin/env bash
# Builds mtls-gateway against pingora-core with the patches in bench/pingora-patches/ applied, into
# target/pingora-patched/mtls-gateway, for bench-cpu.sh's `gateway-patched` row (PINGORA_PATCHED=1).
# The patches are measurements of what a change in pingora itself would save; the shipped binary
# is built against pingora as published. The working tree is left as it was: the patched build runs
# in a copy of the tracked files, and the normal binary is rebuilt afterwards.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
out=$here/target/pingora-patched
version=$(awk '/^name = "pingora-core"/ { getline; gsub(/[^0-9.]/, ""); print }' Cargo.lock)
cargo fetch --locked >/dev/null
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"pingora-core-$version" | head -1)
rm -rf "$out/pingora-core" "$out/tree"
mkdir -p "$out/tree"
cp -r "$src" "$out/pingora-core"
for p in bench/pingora-patches/*.patch; do patch -s -d "$out/pingora-core" -p1 <"$p"; done
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$out/tree"
printf '\n[patch.crates-io]\npingora-core = { path = "%s" }\n' "$out/pingora-core" >>"$out/tree/Cargo.toml"
(cd "$out/tree" && CARGO_TARGET_DIR=$here/target cargo build --release --bin mtls-gateway)
cp "$here/target/release/mtls-gateway" "$out/mtls-gateway"
cargo build --release --bin mtls-gateway # the published-pingora binary back in target/release
echo "patched build: $out/mtls-gateway (pingora-core $version + $(ls bench/pingora-patches | tr '\n' ' '))"
