#!/usr/bin/env bash
# Graceful upgrade or stop under load: while oha drives the gateway with mutual TLS and a bound
# token, either a second gateway process starts with pingora's -u and the first gets SIGQUIT (it
# hands its listening sockets over, drains and exits), or the gateway gets SIGTERM and drains. A
# config reload (SIGHUP) is done first, for good measure. Every request oha started counts: a
# non-200, "connection error", "operation was canceled" or any other error is a failure. Only
# requests oha itself cut at the end of its run ("aborted due to deadline") and, when stopping,
# connects refused once nothing listens (no request was sent) are not. Loopback only, bounded.
#
#   scripts/upgrade-under-load.sh                     20 s of load, 16 keep-alive connections
#   DURATION=30 CONCURRENCY=64 scripts/upgrade-under-load.sh
#   NEW_CONNECTIONS=1 scripts/upgrade-under-load.sh   a new TLS connection per request
#   HTTP2=1 scripts/upgrade-under-load.sh             HTTP/2 (the old process sends GOAWAY)
#   LOW_RATE=1 scripts/upgrade-under-load.sh          each connection sends one request per 300 ms
#   STOP=1 scripts/upgrade-under-load.sh              SIGTERM instead of an upgrade
#   CURL_H2=1 scripts/upgrade-under-load.sh           HTTP/2 with curl instead of oha: curl stops using a
#                                                     connection that got GOAWAY, oha only after a request
#                                                     on it failed (one per connection; see docs/operations.md)
#   BALANCER=1 scripts/upgrade-under-load.sh          through Debian's nginx as a TLS-terminating balancer
#                                                     that forwards the certificate to the trusted-hop
#                                                     listener over keep-alive connections (upgrade only)
#   MATRIX=1 scripts/upgrade-under-load.sh            every combination above, one table
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
if [[ -n "${MATRIX:-}" ]]; then
  if [[ ${PROFILE:-debug} == release ]]; then cargo build --release --workspace --bins; else cargo build --workspace --bins; fi
  export BIN_DIR=$here/target/upgrade/bin
  mkdir -p "$BIN_DIR"
  cp "$here/target/${PROFILE:-debug}"/{mtls-gateway,dev-idsvr,example-api} "$BIN_DIR/"
  rows=()
  status=0
  for stop in "" 1; do
    for kind in keepalive new h2 h2-curl balancer; do
      # Once the gateway stopped, the balancer answers 502 itself: nothing to tell lost from refused.
      [[ $kind == balancer && -n $stop ]] && continue
      for low in "" 1; do
        env=(MATRIX= STOP=$stop LOW_RATE=$low NEW_CONNECTIONS= HTTP2= CURL_H2= BALANCER=)
        [[ $kind == balancer ]] && env+=(BALANCER=1)
        [[ $kind == new ]] && env+=(NEW_CONNECTIONS=1)
        [[ $kind == h2 ]] && env+=(HTTP2=1)
        [[ $kind == h2-curl ]] && env+=(CURL_H2=1)
        out=$(env "${env[@]}" "$0" 2>&1) || status=1
        signal=upgrade rate=full
        [[ -n $stop ]] && signal=SIGTERM
        [[ -n $low ]] && rate="300 ms"
        rows+=("| $signal | $kind | $rate | $(grep '^| [0-9]' <<<"$out" | tail -1 | cut -c3-)")
        # Each run's whole output, with its error kinds: what a failed row was.
        printf '%s\n' "$out" >"$here/target/upgrade/matrix-$signal-$kind-${low:+slow}${low:-full}.txt"
      done
    done
  done
  echo "| signal | connections | rate | requests | 200 | failed | of which non-200 | connection error | canceled | other errors | refused, not sent | rps |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  exit $status
fi
duration=${DURATION:-20}
concurrency=${CONCURRENCY:-16}
profile=${PROFILE:-debug}
out=$here/target/upgrade
certs=$here/certs
IDSVR=25444 API=25300 GW=25443 OPS=25090 HOP=25445 LB=25446
mkdir -p "$out"
[[ -n "${BALANCER:-}" && -n "${STOP:-}" ]] && { echo "BALANCER=1 is for upgrades only" >&2; exit 2; }

scripts/install-deps.sh --load
[[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"
# BIN_DIR: binaries built beforehand (the matrix builds once, then uses them as they are).
if [[ -n "${BIN_DIR:-}" ]]; then bin=$BIN_DIR
else
  if [[ $profile == release ]]; then cargo build --release --workspace --bins; else cargo build --workspace --bins; fi
  bin=$here/target/$profile
fi
scripts/create-certs.sh >/dev/null

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

source scripts/conf-lib.sh
idsvr_conf "$out/idsvr.yaml" $IDSVR
api_conf "$out/api.yaml" $API $IDSVR
hop=()
[[ -n "${BALANCER:-}" ]] && hop=("$(balancer_hop $HOP)")
gateway_conf "$out/gw.yaml" $GW "$out" $IDSVR "127.0.0.1:$API" pingora.grace_period_seconds=3 \
  pingora.graceful_shutdown_timeout_seconds=10 "metrics.address=127.0.0.1:$OPS" "${hop[@]}"

wait_port() { for _ in $(seq 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not open" >&2; exit 1; }
RUST_LOG=warn "$bin/dev-idsvr" "$out/idsvr.yaml" >"$out/idsvr.log" 2>&1 & pids+=($!); wait_port $IDSVR
RUST_LOG=warn "$bin/example-api" "$out/api.yaml" >"$out/api.log" 2>&1 & pids+=($!); wait_port $API
RUST_LOG=info "$bin/mtls-gateway" -c "$out/gw.yaml" >"$out/gw-old.log" 2>&1 & old=$!; pids+=($old); wait_port $GW

target=$GW
if [[ -n "${BALANCER:-}" ]]; then
  # The balancer (conf-lib.sh): nginx terminates the partner's TLS without verifying it and
  # forwards the certificate over TLS, with its own hop certificate, from 127.0.0.2.
  balancer_start "$out/balancer" $LB $HOP
  pids+=("$balancer_pid")
  wait_port $LB
  target=$LB
fi

token=$(curl -sS --fail --connect-to "login.example.com:443:127.0.0.1:$GW" --cert "$certs/example.client.p12:Password1" \
  --cert-type P12 --cacert "$certs/root.pem" -d client_id=partner-client -d grant_type=client_credentials \
  -d scope=transactions https://login.example.com/oauth/v2/oauth-token-mutual-tls | jq -er .access_token)

extra=()
[[ -n "${NEW_CONNECTIONS:-}" ]] && extra+=(--disable-keepalive)
[[ -n "${HTTP2:-}" ]] && extra+=(--http2)
# oha's -q is for all connections together: one request per 300 ms on each.
[[ -n "${LOW_RATE:-}" ]] && extra+=(-q "$(( (concurrency * 10 + 2) / 3 ))")
echo "load: ${duration}s, $concurrency connections${BALANCER:+ through nginx to the trusted-hop listener}${NEW_CONNECTIONS:+, a new TLS connection per request}${HTTP2:+, HTTP/2}${CURL_H2:+, HTTP/2 with curl}${LOW_RATE:+, one request per 300 ms each}"
if [[ -n "${CURL_H2:-}" ]]; then
  # Each curl makes its requests one after the other (a URL range) on one HTTP/2 connection and
  # prints one status per request (000 for a failed one); it is interrupted at the end.
  curl_rate=()
  [[ -n "${LOW_RATE:-}" ]] && curl_rate=(--rate 200/m)
  loads=()
  for i in $(seq "$concurrency"); do
    # The status lines go to stderr, which is not buffered: curl is interrupted at the end.
    timeout -s INT "$duration" curl -s --http2 "${curl_rate[@]}" -o /dev/null -X POST -d '{}' \
      -w '%{stderr}%{http_code} %{exitcode}\n' \
      -H "Authorization: Bearer $token" -H 'content-type: application/json' \
      --cert "$certs/example.client.pem" --key "$certs/example.client.key" --cacert "$certs/root.pem" \
      --connect-to "api.example.com:443:127.0.0.1:$GW" "https://api.example.com/api/transactions?n=[1-1000000]" \
      2>"$out/curl-$i.txt" &
    loads+=($!)
  done
else
  oha --no-tui --output-format json -z "${duration}s" -c "$concurrency" -m POST -d '{}' \
    -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    --cert "$certs/example.client.pem" --key "$certs/example.client.key" --cacert "$certs/root.pem" \
    --connect-to "api.example.com:443:127.0.0.1:$target" "${extra[@]}" https://api.example.com/api/transactions \
    >"$out/oha.json" &
  loads=($!)
fi

sleep $((duration / 4))
echo "$(date +%T) reload (SIGHUP) of the running gateway"
kill -HUP "$old"
sleep $((duration / 4))
if [[ -n "${STOP:-}" ]]; then
  echo "$(date +%T) SIGTERM to the gateway ($old)"
  kill -TERM "$old"
else
  echo "$(date +%T) new gateway started with -u; SIGQUIT to the old one ($old)"
  RUST_LOG=info "$bin/mtls-gateway" -u -c "$out/gw.yaml" >"$out/gw-new.log" 2>&1 & new=$!; pids+=($new)
  sleep 1
  kill -QUIT "$old"
fi
for _ in $(seq 300); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
kill -0 "$old" 2>/dev/null && { echo "the old gateway did not exit" >&2; exit 1; }
echo "$(date +%T) the gateway ($old) exited${new:+; the new one ($new) serves}"
for l in "${loads[@]}"; do wait "$l" || true; done
if [[ -n "${CURL_H2:-}" ]]; then
  # The same summary as oha's. A 000 is a request without an answer, except exit code 7: curl
  # could not connect, so nothing was sent.
  # A line cut short is curl's last, interrupted at the end of the run (as oha's "aborted due to
  # deadline"): only whole "status exitcode" lines count.
  for f in "$out"/curl-*.txt; do cat "$f"; echo; done | grep -E '^[0-9]{3} [0-9]+$' |
    jq -Rs --argjson d "$duration" 'split("\n") | map(select(length > 0) | split(" ")) |
    { statusCodeDistribution: (map(select(.[0] != "000") | .[0]) | group_by(.) | map({ (.[0]): length }) | add // {}),
      errorDistribution: ((map(select(.[0] == "000") | if .[1] == "7" then "Connection refused (curl exit 7)"
        else "no answer (curl exit \(.[1]))" end) | group_by(.) | map({ (.[0]): length }) | add) // {}),
      summary: { requestsPerSec: (length / $d) } }' >"$out/oha.json"
fi

j() { jq "$1" "$out/oha.json"; }
total=$(j '[.statusCodeDistribution[]] | add // 0')
ok=$(j '.statusCodeDistribution["200"] // 0')
errs() { j "[.errorDistribution | to_entries[]? | select($1) | .value] | add // 0"; }
conn_error=$(errs '.key == "connection error"')
canceled=$(errs '.key == "operation was canceled"')
# A connect refused carries no request: counted apart only when stopping, once nothing listens.
refused=0
[[ -n "${STOP:-}" ]] && refused=$(errs '(.key | test("onnection refused"))')
other=$(errs '.key != "aborted due to deadline" and .key != "connection error" and .key != "operation was canceled" and (.key | test("onnection refused") | not)')
[[ -z "${STOP:-}" ]] && other=$((other + $(errs '(.key | test("onnection refused"))')))
failed=$((total - ok + conn_error + canceled + other))
grep -q "reload 1 applied" "$out/gw-old.log" || { echo "the reload was not applied" >&2; tail -20 "$out/gw-old.log"; exit 1; }
echo
echo "| requests | 200 | failed | of which non-200 | connection error | canceled | other errors | refused, not sent | rps |"
echo "|---|---|---|---|---|---|---|---|---|"
echo "| $((total + conn_error + canceled + other)) | $ok | $failed | $((total - ok)) | $conn_error | $canceled | $other | $refused | $(j '.summary.requestsPerSec | floor') |"
j '.errorDistribution'
what=upgrade
[[ -n "${STOP:-}" ]] && what=stop
if ((failed > 0 || ok == 0)); then
  echo "$what under load: FAILED ($failed failed)"
  exit 1
fi
echo "$what under load: 0 failed of $((total + conn_error + canceled + other))"
