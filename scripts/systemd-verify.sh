#!/usr/bin/env bash
# Checks deploy/systemd/mtls-gateway.service with systemd-analyze, without installing anything:
# `verify` (every key known, every command present) in a scratch root holding the unit, the
# gateway binary and systemd's own units, where any warning is an error; then `security`
# offline, which fails if the sandbox's exposure score rises above 2.5 (of 10).
#
#   scripts/systemd-verify.sh        uses target/debug/mtls-gateway (PROFILE=release for the other)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
unit=$here/deploy/systemd/mtls-gateway.service
bin=$here/target/${PROFILE:-debug}/mtls-gateway
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd-verify: systemd-analyze is not installed (Debian package systemd); not checked"
  exit 0
fi
[[ -x "$bin" ]] || { echo "systemd-verify: build $bin first" >&2; exit 1; }
mkdir -p "$here/target"
root=$(mktemp -d "$here/target/systemd-verify.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
# Real files: systemd-analyze resolves symbolic links inside the root.
ln "$bin" "$root/usr/local/bin/mtls-gateway" 2>/dev/null || cp "$bin" "$root/usr/local/bin/mtls-gateway"
cp "$(type -P kill)" "$root/bin/kill"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp "$unit" "$root/etc/systemd/system/"
out=$(timeout 60 systemd-analyze verify --man=no --root="$root" "$root/etc/systemd/system/mtls-gateway.service" 2>&1) \
  || { echo "$out"; exit 1; }
[[ -z "$out" ]] || { echo "$out"; echo "systemd-verify: warnings above" >&2; exit 1; }
score=$(timeout 60 systemd-analyze security --offline=true --threshold=25 --root="$root" \
  "$root/etc/systemd/system/mtls-gateway.service" 2>&1) || { echo "$score"; exit 1; }
echo "systemd-verify: $(systemd-analyze --version | head -1): verify clean; $(grep -o 'Overall exposure level.*' <<<"$score")"
