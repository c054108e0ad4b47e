#!/usr/bin/env bash
# Load test: drives the gateway with mutual TLS and a certificate-bound token, with oha (pinned,
# installed if missing), over keep-alive HTTP/1.1 and then HTTP/2, and prints oha's summaries.
# Uses the system of scripts/run-local.sh on 127.0.0.1:8443: the running one, or one it starts and
# stops again. Loopback only, bounded in time.
#
#   scripts/loadtest.sh                       16 connections, 10 s each for HTTP/1.1 and HTTP/2
#   CONCURRENCY=64 DURATION=30s scripts/loadtest.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
gateway=127.0.0.1:8443
concurrency=${CONCURRENCY:-16}
duration=${DURATION:-10s}
certs=$here/certs

"$here/scripts/install-deps.sh" --load
[[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"

started=""
if ! (exec 3<>"/dev/tcp/${gateway%:*}/${gateway#*:}") 2>/dev/null; then
  log=$here/target/loadtest-system.log
  mkdir -p target
  echo "starting the system (scripts/run-local.sh), log in $log"
  scripts/run-local.sh >"$log" 2>&1 &
  started=$!
  trap 'kill "$started" 2>/dev/null; wait "$started" 2>/dev/null || true' EXIT
  for _ in $(seq 1200); do grep -q '^Serving' "$log" && break; kill -0 "$started" 2>/dev/null || { cat "$log"; exit 1; }; sleep 0.5; done
  grep -q '^Serving' "$log" || { echo "the system did not come up" >&2; exit 1; }
fi

# The client's steps: a certificate-bound token from the identity server, through the gateway.
token=$(curl -sS --fail --connect-to "login.example.com:443:$gateway" --cert "$certs/example.client.p12:Password1" --cert-type P12 \
  --cacert "$certs/root.pem" -d client_id=partner-client -d grant_type=client_credentials -d scope=transactions \
  https://login.example.com/oauth/v2/oauth-token-mutual-tls | jq -er .access_token)

load() {
  echo
  echo "== $1: $concurrency connections, $duration =="
  shift
  oha --no-tui -z "$duration" -c "$concurrency" -m POST -d '{}' -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    --cert "$certs/example.client.pem" --key "$certs/example.client.key" --cacert "$certs/root.pem" \
    --connect-to "api.example.com:443:$gateway" "$@" https://api.example.com/api/transactions
}
load "keep-alive HTTP/1.1"
load "HTTP/2" --http2
