#!/usr/bin/env bash
# A DPoP client (RFC 9449) without a certificate: gets a DPoP-bound access token from the identity
# server with HTTP Basic and a proof of its key, then calls the API with `Authorization: DPoP` and a
# fresh proof for that request. Answers a `use_dpop_nonce` challenge by retrying with the nonce.
#
#   GATEWAY=127.0.0.1:8443 scripts/dpop-client.sh   connect there for both host names
#   API_GATEWAY=127.0.0.1:9443 ...                  but reach the API host there (a balancer in front)
#   DPOP_KEY=/path/key.pem                          the client's key (made on first use)
#
# Needs target/debug/dpop-proof (cargo build --workspace --bins). Exits non-zero on any failure.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
certs=${CERTS_DIR:-$here/certs}
ca=${CA_FILE:-$certs/root.pem}
login=${LOGIN_HOST:-login.example.com}
api=${API_HOST:-dpop-api.example.com}
client_id=${CLIENT_ID:-dpop-client}
secret=${CLIENT_SECRET:-Password1}
proof_bin=${DPOP_PROOF:-$here/target/${PROFILE:-debug}/dpop-proof}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
key=${DPOP_KEY:-$work/dpop.key.pem}

connect=()
if [[ -n "${GATEWAY:-}" ]]; then
  connect=(--connect-to "$login:443:$GATEWAY" --connect-to "$api:443:${API_GATEWAY:-$GATEWAY}")
fi
curl_tls=(curl -sS --max-time 20 "${connect[@]}" --cacert "$ca")
[[ -x "$proof_bin" ]] || { echo "missing $proof_bin: run cargo build --workspace --bins" >&2; exit 1; }

fail() { echo "$1" >&2; exit 1; }
proof() { "$proof_bin" --key "$key" "$@"; }
# The DPoP-Nonce of the last answer (empty when none).
nonce_of() { tr -d '\r' <"$work/headers" | awk -F': ' 'tolower($1)=="dpop-nonce" {print $2}'; }

token_url="https://$login/oauth/v2/oauth-token-mutual-tls"
echo "Client is asking the Identity Server for a DPoP-bound access token (key $(proof --jkt | cut -c1-12)...) ..."
status=$("${curl_tls[@]}" -D "$work/headers" -o "$work/body" -w '%{http_code}' -u "$client_id:$secret" \
  -H "DPoP: $(proof --htm POST --htu "$token_url")" \
  -d grant_type=client_credentials -d scope=transactions "$token_url") \
  || fail "Problem encountered connecting to the Identity Server"
[[ "$status" == 200 ]] || fail "Problem encountered authenticating with the Identity Server: HTTP $status $(cat "$work/body")"
token=$(jq -r '.access_token // empty' "$work/body")
type=$(jq -r '.token_type // empty' "$work/body")
[[ -n "$token" && "$type" == DPoP ]] || fail "The Identity Server answered no DPoP token: $(cat "$work/body")"
echo "Client received a DPoP-bound access token (token_type $type)"

api_url="https://$api/api/transactions"
call() {
  "${curl_tls[@]}" -D "$work/headers" -o "$work/body" -w '%{http_code}' -X POST "$api_url" \
    -H "Authorization: DPoP $token" -H "DPoP: $(proof --htm POST --htu "$api_url" --token "$token" --nonce "${1:-}")" \
    -H "Content-Type: application/json" -d '{}'
}
echo "Client is creating a transaction at the API with the token and a DPoP proof ..."
status=$(call) || fail "Problem encountered connecting to the API"
if [[ "$status" == 401 ]] && grep -qi 'use_dpop_nonce' "$work/headers"; then
  echo "The API asked for a server nonce: retrying with it"
  status=$(call "$(nonce_of)") || fail "Problem encountered connecting to the API"
fi
[[ "$status" == 200 ]] || fail "Problem encountered calling the API: HTTP $status $(grep -i www-authenticate "$work/headers") $(cat "$work/body")"
echo "Client successfully created the API transaction using DPoP"
