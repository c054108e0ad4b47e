#!/usr/bin/env bash
# The tutorial's partner client: authenticates with its client certificate over mutual TLS, gets an
# opaque access token, then calls the API with the token and the same certificate.
#
#   GATEWAY=127.0.0.1:8443 scripts/client.sh   connect there for both host names (no hosts file needed)
#   API_GATEWAY=127.0.0.1:9443 ...               but reach the API host there (a balancer in front)
#   CLIENT_P12=certs/other.client.p12          use another client certificate (password Password1)
#
# Exits non-zero on any failure.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
certs=${CERTS_DIR:-$here/certs}
p12=${CLIENT_P12:-$certs/example.client.p12}
ca=${CA_FILE:-$certs/root.pem}
login=${LOGIN_HOST:-login.example.com}
api=${API_HOST:-api.example.com}

connect=()
if [[ -n "${GATEWAY:-}" ]]; then
  connect=(--connect-to "$login:443:$GATEWAY" --connect-to "$api:443:${API_GATEWAY:-$GATEWAY}")
fi
curl_mtls=(curl -sS --max-time 20 "${connect[@]}" --cert "$p12:Password1" --cert-type P12 --cacert "$ca")

fail() { echo "$1" >&2; exit 1; }

echo "Client is authenticating with the Identity Server via mutual TLS ..."
body=$(mktemp); trap 'rm -f "$body"' EXIT
status=$("${curl_mtls[@]}" -o "$body" -w '%{http_code}' -X POST "https://$login/oauth/v2/oauth-token-mutual-tls" \
  -H "Content-Type: application/x-www-form-urlencoded" \
  -d "client_id=partner-client" -d "grant_type=client_credentials" -d "scope=transactions") \
  || fail "Problem encountered connecting to the Identity Server"
[[ "$status" == 200 ]] || fail "Problem encountered authenticating with the Identity Server: HTTP $status $(cat "$body")"
token=$(jq -r '.access_token // empty' "$body")
[[ -n "$token" ]] || fail "The Identity Server answered no access token"
echo "Client successfully authenticated and received an opaque access token"

echo "Client is creating a transaction at the API using mutual TLS and the opaque access token ..."
status=$("${curl_mtls[@]}" -o "$body" -w '%{http_code}' -X POST "https://$api/api/transactions" \
  -H "Authorization: Bearer $token" -H "Content-Type: application/json" -d '{}') \
  || fail "Problem encountered connecting to the API"
[[ "$status" == 200 ]] || fail "Problem encountered calling the API: HTTP $status $(cat "$body")"
echo "Client successfully created the API transaction using mutual TLS"
