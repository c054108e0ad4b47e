#!/usr/bin/env bash
# Side-by-side benchmark, in one invocation on one machine (the machine is shared and noisy: compare
# the ratios between rows, not absolute numbers across runs):
#   gateway        mtls-gateway with phantom_token + cert_binding (cached tokens)
#   gateway-off    the same gateway with no filters: the floor of Pingora + mTLS
#   nginx-lua      nginx + Lua doing the reference's checks (scripts/nginx-lua.sh)
# all in front of the same dev-idsvr and example-api, under the same oha load. Prints one table
# (requests/s, latency percentiles, CPU seconds per 10k requests, peak RSS) and writes it, with the
# raw oha JSON, to target/bench/.
# It starts with scripts/bench-cpu.sh: CPU per request of every target and of nginx as a bare mTLS
# proxy (the floor), each as a ratio to the floor, all before one TLS echo upstream, at c=1, 16,
# 256 and with a new connection per request.
#
#   scripts/bench.sh                     10 s per scenario
#   BENCH_DURATION=30s scripts/bench.sh
#   BENCH_QUICK=1 scripts/bench.sh       2 s per scenario, small token counts (a smoke run)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
duration=${BENCH_DURATION:-10s}
miss_tokens=${BENCH_MISS_TOKENS:-20000}
rss_tokens=${BENCH_RSS_TOKENS:-100000}
if [[ -n "${BENCH_QUICK:-}" ]]; then duration=2s; miss_tokens=2000; rss_tokens=5000; fi
out=$here/target/bench
conf=$out/conf
certs=$here/certs
mkdir -p "$conf"

# --- tools and binaries ------------------------------------------------------------------------
scripts/install-deps.sh --load
[[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"
cargo build --release --workspace --bins --example tokenflood
bin=$here/target/release
scripts/create-certs.sh >/dev/null

# --- CPU per request against the floor ---------------------------------------------------------
BENCH_DURATION=$duration scripts/bench-cpu.sh

# --- the system under test ---------------------------------------------------------------------
IDSVR=21444 API=21300 GW=21443 GW_OFF=22443 NGINX=23443
pids=()
cleanup() {
  NGINX_PORT=$NGINX RUN_DIR=$out/nginx scripts/nginx-lua.sh stop >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

source scripts/conf-lib.sh
idsvr_conf "$conf/idsvr.yaml" $IDSVR dev_endpoints=true threads=2
api_conf "$conf/api.yaml" $API $IDSVR threads=2
gw_conf() { # port out filters-yaml
  gateway_conf "$2" "$1" "$out" $IDSVR "127.0.0.1:$API" pingora.threads=2 pingora.upstream_keepalive_pool_size=256 \
    listener.unknown_sni=close introspection.idsvr.cache.max_entries=200000 "routes[0].filters=$3" -metrics
}
gw_conf $GW "$conf/gw.yaml" '[ { phantom_token: { introspection: idsvr } }, { cert_binding: {} } ]'
gw_conf $GW_OFF "$conf/gw-off.yaml" '[]'

wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not open" >&2; exit 1; }
RUST_LOG=warn "$bin/dev-idsvr" "$conf/idsvr.yaml" >"$out/idsvr.log" 2>&1 & pids+=($!); wait_port $IDSVR
RUST_LOG=warn "$bin/example-api" "$conf/api.yaml" >"$out/api.log" 2>&1 & pids+=($!); wait_port $API
# Access logs off in the gateways (RUST_LOG=warn), as nginx runs with access_log off.
RUST_LOG=warn "$bin/mtls-gateway" -c "$conf/gw.yaml" >"$out/gw.log" 2>&1 & gw_pid=$!; pids+=($gw_pid); wait_port $GW
RUST_LOG=warn "$bin/mtls-gateway" -c "$conf/gw-off.yaml" >"$out/gw-off.log" 2>&1 & gw_off_pid=$!; pids+=($gw_off_pid); wait_port $GW_OFF
NGINX_PORT=$NGINX IDSVR_ADDR=127.0.0.1:$IDSVR API_ADDR=127.0.0.1:$API RUN_DIR=$out/nginx CERTS_DIR=$certs \
  scripts/nginx-lua.sh start >/dev/null

# --- measuring -----------------------------------------------------------------------------------
declare -A port=([gateway]=$GW [gateway-off]=$GW_OFF [nginx-lua]=$NGINX)
target_pids() { # every process of a target: nginx is a master and its workers
  case $1 in
    gateway) echo "$gw_pid" ;;
    gateway-off) echo "$gw_off_pid" ;;
    nginx-lua) local m; m=$(cat "$out/nginx/nginx.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')" ;;
  esac
}
cpu_ticks() { local t=0; for p in $(target_pids "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
rss_kib() { # $1 target, $2 VmHWM (peak) or VmRSS (now)
  local t=0; for p in $(target_pids "$1"); do t=$((t + $(awk -v k="$2:" '$1 == k {print $2}' "/proc/$p/status"))); done; echo $t
}
hz=$(getconf CLK_TCK)
mint() { # count -> file of tokens bound to the demo-partner certificate
  local x5t
  x5t=$(openssl x509 -in "$certs/example.client.pem" -outform DER | openssl dgst -sha256 -binary | basenc --base64url | tr -d '=')
  curl -sS --resolve "login.example.com:$IDSVR:127.0.0.1" --cacert "$certs/root.pem" \
    -H 'content-type: application/json' -d "{\"count\":$1,\"client_id\":\"partner-client\",\"x5t\":\"$x5t\",\"scope\":\"transactions\"}" \
    "https://login.example.com:$IDSVR/dev/mint" | jq -r '.tokens[]'
}
introspections() { curl -sS --resolve "login.example.com:$IDSVR:127.0.0.1" --cacert "$certs/root.pem" "https://login.example.com:$IDSVR/dev/stats" | jq .introspections; }
faults() { curl -sS --resolve "login.example.com:$IDSVR:127.0.0.1" --cacert "$certs/root.pem" -H 'content-type: application/json' -d "$1" "https://login.example.com:$IDSVR/dev/faults" >/dev/null; }

rows=()
record() { # scenario target json(rps p50 p99 p999 requests errors) cpu_ticks_used
  local s=$1 t=$2 j=$3 used=$4
  local req cpu rss
  req=$(jq -r .requests <<<"$j")
  cpu=$(awk -v u="$used" -v hz="$hz" -v n="$req" 'BEGIN { printf "%.2f", (n > 0 ? u / hz / n * 10000 : 0) }')
  rss=$(awk -v k="$(rss_kib "$t" VmHWM)" 'BEGIN { printf "%.0f", k / 1024 }')
  rows+=("$(jq -r --arg s "$s" --arg t "$t" --arg cpu "$cpu" --arg rss "$rss" \
    '"| \($s) | \($t) | \(.rps | floor) | \(.p50 | .*100 | round / 100) | \(.p99 | .*100 | round / 100) | \(.p999 | .*100 | round / 100) | \(.errors) | \($cpu) | \($rss) |"' <<<"$j")")
  echo "${rows[-1]}"
}

token=$(mint 1)
# With its filters off the gateway forwards what it gets, so its clients send the JWT that the
# phantom-token filter would have put there: the API does the same work behind every target.
jwt=$(curl -sS --fail --resolve "login.example.com:$IDSVR:127.0.0.1" --cacert "$certs/root.pem" -u introspect-client:Password1 \
  -H 'accept: application/jwt' -d "token=$token" "https://login.example.com:$IDSVR/oauth/v2/oauth-introspect")
credential() { if [[ $1 == gateway-off ]]; then echo "$jwt"; else echo "$token"; fi; }
run_oha() { # scenario target oha-args...
  local s=$1 t=$2; shift 2
  local before after json
  before=$(cpu_ticks "$t")
  oha --no-tui --output-format json -m POST -d '{}' -H "Authorization: Bearer $(credential "$t")" -H 'content-type: application/json' \
    --cert "$certs/example.client.pem" --key "$certs/example.client.key" --cacert "$certs/root.pem" \
    --connect-to "api.example.com:443:127.0.0.1:${port[$t]}" "$@" https://api.example.com/api/transactions \
    >"$out/$s-$t.json"
  after=$(cpu_ticks "$t")
  json=$(jq -c '{ rps: .summary.requestsPerSec, p50: (.latencyPercentiles.p50 * 1000), p99: (.latencyPercentiles.p99 * 1000),
    p999: (.latencyPercentiles["p99.9"] * 1000), requests: ([.statusCodeDistribution[]] | add // 0),
    errors: (([.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0)
      + ([.errorDistribution | to_entries[]? | select(.key != "aborted due to deadline") | .value] | add // 0)) }' \
    "$out/$s-$t.json")
  record "$s" "$t" "$json" $((after - before))
}
run_flood() { # scenario target tokens-file concurrency
  local s=$1 t=$2 before after json
  before=$(cpu_ticks "$t")
  json=$("$bin/examples/tokenflood" --url https://api.example.com/api/transactions --connect "127.0.0.1:${port[$t]}" \
    --p12 "$certs/example.client.p12" --ca "$certs/root.pem" --tokens "$3" --concurrency "$4")
  after=$(cpu_ticks "$t")
  echo "$json" >"$out/$s-$t.json"
  record "$s" "$t" "$(jq -c '{ rps, p50: .p50_ms, p99: .p99_ms, p999: .p999_ms, requests, errors: (.requests - (.statuses["200"] // 0)) }' <<<"$json")" $((after - before))
}

echo "| scenario | target | req/s | p50 ms | p99 ms | p99.9 ms | non-200 | CPU s / 10k req | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
for t in gateway gateway-off nginx-lua; do oha --no-tui --output-format quiet -n 200 -c 4 -m POST -H "Authorization: Bearer $(credential "$t")" \
  --cert "$certs/example.client.pem" --key "$certs/example.client.key" --cacert "$certs/root.pem" \
  --connect-to "api.example.com:443:127.0.0.1:${port[$t]}" https://api.example.com/api/transactions >/dev/null; done # warm-up: caches, pools
for c in 1 16 256; do
  for t in gateway gateway-off nginx-lua; do run_oha "h1-keepalive-c$c" "$t" -z "$duration" -c "$c"; done
done
for t in gateway gateway-off nginx-lua; do run_oha "h1-new-connection-c16" "$t" -z "$duration" -c 16 --disable-keepalive; done
for t in gateway gateway-off; do run_oha "h2-c16" "$t" -z "$duration" -c 16 --http2; done # nginx-lua: capture fails on h2

for t in gateway nginx-lua; do mint "$miss_tokens" >"$out/miss-$t.tokens"; run_flood "cache-miss-c16" "$t" "$out/miss-$t.tokens" 16; done

# Coalescing: 64 concurrent requests with one fresh token, introspection slowed to 200 ms.
coalesce=()
faults '{"introspection_delay_ms":200}'
for t in gateway nginx-lua; do
  token=$(mint 1)
  before=$(introspections)
  oha --no-tui --output-format quiet -n 64 -c 64 -m POST -H "Authorization: Bearer $token" \
    --cert "$certs/example.client.pem" --key "$certs/example.client.key" --cacert "$certs/root.pem" \
    --connect-to "api.example.com:443:127.0.0.1:${port[$t]}" https://api.example.com/api/transactions >/dev/null
  coalesce+=("| $t | 64 | $(($(introspections) - before)) |")
done
faults '{}'

# Memory with many cached tokens.
memory=()
for t in gateway nginx-lua; do
  mint "$rss_tokens" >"$out/rss-$t.tokens"
  rss_before=$(rss_kib "$t" VmRSS)
  flood=$("$bin/examples/tokenflood" --url https://api.example.com/api/transactions --connect "127.0.0.1:${port[$t]}" \
    --p12 "$certs/example.client.p12" --ca "$certs/root.pem" --tokens "$out/rss-$t.tokens" --concurrency 32)
  memory+=("| $t | $rss_tokens | $((rss_before / 1024)) | $(($(rss_kib "$t" VmRSS) / 1024)) | $(jq -r '.statuses["200"] // 0' <<<"$flood") |")
done

# Soak: HTTP/2 for a long while (pingora #372 saw memory grow under TLS + HTTP/2), RSS sampled.
soak=${BENCH_SOAK:-60}
[[ -n "${BENCH_QUICK:-}" ]] && soak=10
soak_rows=()
token=$(mint 1)
oha --no-tui --output-format json -z "${soak}s" -c 32 --http2 -m POST -H "Authorization: Bearer $token" \
  --cert "$certs/example.client.pem" --key "$certs/example.client.key" --cacert "$certs/root.pem" \
  --connect-to "api.example.com:443:127.0.0.1:$GW" https://api.example.com/api/transactions >"$out/soak.json" &
soak_pid=$!
for ((s = 0; s <= soak; s += soak / 6)); do soak_rows+=("| ${s} s | $(($(rss_kib gateway VmRSS) / 1024)) |"); sleep $((soak / 6)); done
wait "$soak_pid"
soak_total=$(jq '.statusCodeDistribution["200"] // 0' "$out/soak.json")

{
  echo "## Results"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r), oha $(oha --version | awk '{print $2}'), ${duration} per scenario, load generator on the same machine"
  echo
  echo "| scenario | target | req/s | p50 ms | p99 ms | p99.9 ms | non-200 | CPU s / 10k req | peak RSS MiB |"
  echo "|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Concurrent requests with one fresh token (introspection slowed to 200 ms):"
  echo
  echo "| target | requests | introspection calls |"
  echo "|---|---|---|"
  printf '%s\n' "${coalesce[@]}"
  echo
  echo "Memory with many distinct cached tokens (nginx-lua's shared dict holds 32 MiB and evicts):"
  echo
  echo "| target | tokens | RSS before MiB | RSS after MiB | 200s |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${memory[@]}"
  echo
  echo "Gateway RSS during ${soak} s of HTTP/2 load at 32 connections ($soak_total requests answered 200):"
  echo
  echo "| time | RSS MiB |"
  echo "|---|---|"
  printf '%s\n' "${soak_rows[@]}"
  echo
  echo "CPU per request against nginx as a bare mTLS proxy (scripts/bench-cpu.sh: one TLS echo upstream behind every target):"
  echo
  cat "$here/target/bench-cpu/results.md"
} | tee "$out/results.md"
