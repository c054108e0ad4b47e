#!/usr/bin/env bash
# CPU per request against the floor, in one invocation on one machine (ratios hold, absolute
# numbers do not: the machine is shared and noisy). Targets, all in front of the same nginx TLS
# echo upstream and the same dev-idsvr:
#   nginx-bare     nginx as a bare mTLS reverse proxy, 1 worker: the floor
#   gateway        mtls-gateway, phantom_token + cert_binding on a cached token, 1 thread
#   gateway-off    the same gateway with no filters
#   nginx-lua      nginx + Lua doing the reference's checks, 1 worker
# Every proxy runs one worker (GATEWAY_THREADS=2 to change the gateway's): the same shape as the
# floor, and on two cores shared with oha and the upstream a second worker only adds wake-ups.
#   gateway-3      the gateway with three backends (three echo servers) and HTTP health checks
#                  every second, next to `gateway` (one backend): the cost of balancing and health
# Scenarios: keep-alive HTTP/1.1 at c=1, 16, 256, and a new mTLS connection per request at c=16;
# `dpop`: the same API call with a fresh DPoP proof checked on every request (gateway-dpop, a DPoP
# token) next to the certificate-bound call (gateway), both sent by examples/tokenflood (oha cannot
# vary a header per request) at c=16, BENCH_DPOP_REQUESTS each (20000); `limit`: a rate_limit filter
# counted in process (gateway-limit) and on a local redis-server (gateway-shared, the `cluster`
# section), oha at c=16, with latency percentiles and the redis-server's own CPU per request.
# CPU is utime + stime of every process of a target from /proc, divided by the requests answered.
#
#   scripts/bench-cpu.sh                  10 s per scenario
#   BENCH_DURATION=30s scripts/bench-cpu.sh
#   PERF_GATEWAY=1 scripts/bench-cpu.sh   also records perf at c=16 and writes a flat profile, and a
#                                         flamegraph SVG if inferno is installed (cargo install inferno);
#                                         PERF_GATEWAY="gateway gateway-base" profiles each of them;
#                                         PERF_CALLGRAPH=dwarf PERF_FREQ=299 for inclusive costs per function;
#                                         PERF_CONCURRENCY=1 profiles another load than c=16
#   PINGORA_PATCHED=1 scripts/bench-cpu.sh  adds gateway-patched: the gateway built against pingora-core
#                                         with bench/pingora-patches/ applied (scripts/pingora-patched.sh)
#   PINGORA_SERVE=1 scripts/bench-cpu.sh  adds gateway-pingora: the gateway served by pingora's own
#                                         runtime, accepted stream and keep-alive loop instead of
#                                         src/connection/serve's (scripts/pingora-serve.sh)
#   BASELINE=3a9952a scripts/bench-cpu.sh  adds gateway-base: the gateway as of that commit, same config,
#                                         to show a change's cost against the commit before it
#   BENCH_ROUNDS=3 scripts/bench-cpu.sh    every scenario three times, targets alternating, and a table
#                                         of medians (one run on this machine moves by ±10%)
#   BENCH_TARGETS="nginx-bare gateway" BENCH_SCENARIOS="16" scripts/bench-cpu.sh
#                                         a subset: targets, and concurrencies ("new" for new-connection)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
duration=${BENCH_DURATION:-10s}
out=$here/target/bench-cpu
conf=$out/conf
certs=$here/certs
mkdir -p "$conf"

scripts/install-deps.sh --load
[[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"
[[ -n "${PINGORA_PATCHED:-}" ]] && scripts/pingora-patched.sh
[[ -n "${PINGORA_SERVE:-}" ]] && scripts/pingora-serve.sh
base_bin=
if [[ -n "${BASELINE:-}" ]]; then
  # The baseline commit's tracked files, built with this target folder (dependencies are shared);
  # the build below puts this tree's binary back. A commit's binary is kept and reused: the same
  # commit builds the same binary, and a release build takes minutes.
  base_bin=$out/mtls-gateway-base-$(git rev-parse --short=12 "$BASELINE^{commit}")
  if [[ ! -x $base_bin ]]; then
    rm -rf "$out/baseline" && mkdir -p "$out/baseline"
    git archive "$BASELINE" | tar -x -C "$out/baseline"
    (cd "$out/baseline" && CARGO_TARGET_DIR=$here/target cargo build --release --bin mtls-gateway)
    cp "$here/target/release/mtls-gateway" "$base_bin.tmp" && mv "$base_bin.tmp" "$base_bin"
  fi
fi
cargo build --release --workspace --bins --example tokenflood
bin=$here/target/release
scripts/create-certs.sh >/dev/null

IDSVR=26444 ECHO=26300 GW=26443 GW_OFF=27443 LUA=28443 BARE=29443 GW_P=30443 GW_B=31443 GW_D=32443
GW_L=33443 GW_S=34443 REDIS=26379 ECHO2=26301 ECHO3=26302 GW_3=35443 GW_PS=36443
pids=()
cleanup() {
  for n in lua bare echo echo2 echo3; do RUN_DIR=$out/$n scripts/nginx-lua.sh stop >/dev/null 2>&1 || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

source scripts/conf-lib.sh
idsvr_conf "$conf/idsvr.yaml" $IDSVR dev_endpoints=true threads=1
gw_conf() { # port out filters-yaml [more changes]
  gateway_conf "$2" "$1" "$out" $IDSVR "127.0.0.1:$ECHO" "pingora.threads=${GATEWAY_THREADS:-1}" pingora.upstream_keepalive_pool_size=256 \
    listener.unknown_sni=close "routes[0].filters=$3" -metrics "${@:4}"
}
gw_conf $GW "$conf/gw.yaml" '[ { phantom_token: { introspection: idsvr } }, { cert_binding: {} } ]'
gw_conf $GW_OFF "$conf/gw-off.yaml" '[]'
gw_conf $GW_3 "$conf/gw-3.yaml" '[ { phantom_token: { introspection: idsvr } }, { cert_binding: {} } ]' \
  -upstreams.example-api.address \
  "upstreams.example-api.backends=[127.0.0.1:$ECHO, 127.0.0.1:$ECHO2, 127.0.0.1:$ECHO3]" \
  'upstreams.example-api.health_check={type: http, path: /healthz, interval: 1s, timeout: 1s}'
# A limit no request reaches: what is measured is the counting, in process or on the server.
limit='{ rate_limit: { per_second: 100000, burst: 100000 } }'
gw_conf $GW_L "$conf/gw-limit.yaml" "[ { phantom_token: { introspection: idsvr } }, { cert_binding: {} }, $limit ]"
gw_conf $GW_S "$conf/gw-shared.yaml" "[ { phantom_token: { introspection: idsvr } }, { cert_binding: {} }, $limit ]" \
  "cluster={url: \"redis://127.0.0.1:$REDIS\", key_prefix: \"bench:\", timeout: 50ms}"
# Every proof of a run stays in the replay cache: no eviction inside the measurement.
gw_conf $GW_D "$conf/gw-dpop.yaml" '[ { phantom_token: { introspection: idsvr } }, { binding: { accept: [certificate, dpop] } } ]' \
  dpop.replay_cache_entries=4000000
gw_conf $GW_P "$conf/gw-patched.yaml" '[ { phantom_token: { introspection: idsvr } }, { cert_binding: {} } ]'
gw_conf $GW_PS "$conf/gw-pingora.yaml" '[ { phantom_token: { introspection: idsvr } }, { cert_binding: {} } ]'
# The baseline reads its own version of the file: keys added since 3a9952a are taken out (audiences
# at the section's top level, optional client certificates, the dpop section and the DPoP route,
# routes[1]). The measured route, routes[0], is the same in both.
gw_conf $GW_B "$conf/gw-base.yaml" '[ { phantom_token: { introspection: idsvr } }, { cert_binding: {} } ]' \
  ${BASELINE_DROP:--introspection.idsvr.audiences -tls.optional_client_certificate -dpop -routes[1]}

wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not open" >&2; exit 1; }
nginx_start() { # name port template workers
  NGINX_PORT=$2 TEMPLATE=$3 NGINX_WORKERS=$4 IDSVR_ADDR=127.0.0.1:$IDSVR API_ADDR=127.0.0.1:$ECHO \
    RUN_DIR=$out/$1 CERTS_DIR=$certs scripts/nginx-lua.sh start >/dev/null
}
RUST_LOG=warn "$bin/dev-idsvr" "$conf/idsvr.yaml" >"$out/idsvr.log" 2>&1 & pids+=($!); wait_port $IDSVR
nginx_start echo $ECHO bench/nginx-bare/echo.conf.template 2
gw_3_pid=
if [[ " ${BENCH_TARGETS:-} " == *" gateway-3 "* ]]; then
  # As many workers each as the one-backend echo: the backends differ only in number.
  nginx_start echo2 $ECHO2 bench/nginx-bare/echo.conf.template 2
  nginx_start echo3 $ECHO3 bench/nginx-bare/echo.conf.template 2
  RUST_LOG=warn "$bin/mtls-gateway" -c "$conf/gw-3.yaml" >"$out/gw-3.log" 2>&1 & gw_3_pid=$!; pids+=($gw_3_pid); wait_port $GW_3
fi
RUST_LOG=warn "$bin/mtls-gateway" -c "$conf/gw.yaml" >"$out/gw.log" 2>&1 & gw_pid=$!; pids+=($gw_pid); wait_port $GW
RUST_LOG=warn "$bin/mtls-gateway" -c "$conf/gw-off.yaml" >"$out/gw-off.log" 2>&1 & gw_off_pid=$!; pids+=($gw_off_pid); wait_port $GW_OFF
RUST_LOG=warn "$bin/mtls-gateway" -c "$conf/gw-dpop.yaml" >"$out/gw-dpop.log" 2>&1 & gw_d_pid=$!; pids+=($gw_d_pid); wait_port $GW_D
redis-server --port $REDIS --bind 127.0.0.1 --save '' --appendonly no >"$out/redis.log" 2>&1 & redis_pid=$!; pids+=($redis_pid); wait_port $REDIS
RUST_LOG=warn "$bin/mtls-gateway" -c "$conf/gw-limit.yaml" >"$out/gw-limit.log" 2>&1 & gw_l_pid=$!; pids+=($gw_l_pid); wait_port $GW_L
RUST_LOG=warn "$bin/mtls-gateway" -c "$conf/gw-shared.yaml" >"$out/gw-shared.log" 2>&1 & gw_s_pid=$!; pids+=($gw_s_pid); wait_port $GW_S
gw_p_pid=
if [[ -n "${PINGORA_PATCHED:-}" ]]; then
  RUST_LOG=warn target/pingora-patched/mtls-gateway -c "$conf/gw-patched.yaml" >"$out/gw-patched.log" 2>&1 & gw_p_pid=$!
  pids+=($gw_p_pid); wait_port $GW_P
fi
gw_ps_pid=
if [[ -n "${PINGORA_SERVE:-}" ]]; then
  RUST_LOG=warn target/pingora-serve/mtls-gateway -c "$conf/gw-pingora.yaml" >"$out/gw-pingora.log" 2>&1 & gw_ps_pid=$!
  pids+=($gw_ps_pid); wait_port $GW_PS
fi
gw_b_pid=
if [[ -n "${BASELINE:-}" ]]; then
  RUST_LOG=warn "$base_bin" -c "$conf/gw-base.yaml" >"$out/gw-base.log" 2>&1 & gw_b_pid=$!
  pids+=($gw_b_pid); wait_port $GW_B
fi
nginx_start lua $LUA bench/nginx-lua/nginx.conf.template 1
nginx_start bare $BARE bench/nginx-bare/nginx.conf.template 1

declare -A port=([nginx-bare]=$BARE [gateway]=$GW [gateway-off]=$GW_OFF [nginx-lua]=$LUA [gateway-patched]=$GW_P [gateway-base]=$GW_B [gateway-dpop]=$GW_D [gateway-limit]=$GW_L [gateway-shared]=$GW_S [gateway-3]=$GW_3 [gateway-pingora]=$GW_PS)
read -ra targets <<<"${BENCH_TARGETS:-nginx-bare gateway gateway-off nginx-lua${PINGORA_PATCHED:+ gateway-patched}${PINGORA_SERVE:+ gateway-pingora}${BASELINE:+ gateway-base}}"
read -ra scenarios <<<"${BENCH_SCENARIOS:-1 16 256 new dpop limit}"
target_pids() {
  case $1 in
    gateway) echo "$gw_pid" ;;
    gateway-off) echo "$gw_off_pid" ;;
    gateway-patched) echo "$gw_p_pid" ;;
    gateway-base) echo "$gw_b_pid" ;;
    gateway-dpop) echo "$gw_d_pid" ;;
    gateway-limit) echo "$gw_l_pid" ;;
    gateway-shared) echo "$gw_s_pid" ;;
    gateway-3) echo "$gw_3_pid" ;;
    gateway-pingora) echo "$gw_ps_pid" ;;
    redis) echo "$redis_pid" ;;
    nginx-*) local m; m=$(cat "$out/${1#nginx-}/nginx.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')" ;;
  esac
}
cpu_ticks() { local t=0; for p in $(target_pids "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
switches() { local t=0; for p in $(target_pids "$1"); do for s in /proc/$p/task/*/status; do t=$((t + $(awk '/ctxt_switches/ {s += $2} END {print s}' "$s"))); done; done; echo $t; }
hz=$(getconf CLK_TCK)

token=$(curl -sS --fail --connect-to "login.example.com:443:127.0.0.1:$GW" --cert "$certs/example.client.p12:Password1" \
  --cert-type P12 --cacert "$certs/root.pem" -d client_id=partner-client -d grant_type=client_credentials \
  -d scope=transactions https://login.example.com/oauth/v2/oauth-token-mutual-tls | jq -er .access_token)

oha_run() { # target out oha-args...
  local t=$1 file=$2; shift 2
  oha --no-tui --output-format json -m POST -d '{}' -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    --cert "$certs/example.client.pem" --key "$certs/example.client.key" --cacert "$certs/root.pem" \
    --connect-to "api.example.com:443:127.0.0.1:${port[$t]}" "$@" https://api.example.com/api/transactions >"$file"
}
for t in "${targets[@]}"; do oha_run "$t" /dev/null -n 200 -c 4; done # warm-up: caches, pools

# A DPoP-bound token of dev-idsvr's dpop-client, for a key made here.
dpop_key=$out/dpop.key.pem
rm -f "$dpop_key"
token_url=https://login.example.com/oauth/v2/oauth-token-mutual-tls
dpop_token=$(curl -sS --fail --connect-to "login.example.com:443:127.0.0.1:$GW" --cacert "$certs/root.pem" \
  -u dpop-client:Password1 -H "DPoP: $("$bin/dpop-proof" --key "$dpop_key" --htm POST --htu "$token_url")" \
  -d grant_type=client_credentials -d scope=transactions "$token_url" | jq -er .access_token)
repeat() { awk -v line="$1" -v n="$2" 'BEGIN { for (i = 0; i < n; i++) print line }'; } # not yes|head: SIGPIPE under pipefail
flood_run() { # target out requests
  local t=$1 file=$2 n=$3 tokens=$out/flood-tokens.txt more=()
  if [[ $t == gateway-dpop ]]; then
    repeat "$dpop_token" "$n" >"$tokens"; more=(--dpop-key "$dpop_key")
  else
    repeat "$token" "$n" >"$tokens"
  fi
  "$bin/examples/tokenflood" --url https://api.example.com/api/transactions --connect "127.0.0.1:${port[$t]}" \
    --p12 "$certs/example.client.p12" --ca "$certs/root.pem" --tokens "$tokens" --concurrency 16 "${more[@]}" >"$file"
}

declare -A floor samples medians
rows=() order=()
measure() { # scenario target oha-args...
  local s=$1 t=$2; shift 2
  local c0 x0 c1 x1 n rps us sw bad
  c0=$(cpu_ticks "$t"); x0=$(switches "$t")
  oha_run "$t" "$out/$s-$t.json" "$@"
  c1=$(cpu_ticks "$t"); x1=$(switches "$t")
  n=$(jq '.statusCodeDistribution["200"] // 0' "$out/$s-$t.json")
  bad=$(jq '[.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0' "$out/$s-$t.json")
  rps=$(jq '.summary.requestsPerSec | floor' "$out/$s-$t.json")
  us=$(awk -v u=$((c1 - c0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.1f", (n > 0 ? u / hz / n * 1e6 : 0) }')
  sw=$(awk -v d=$((x1 - x0)) -v n="$n" 'BEGIN { printf "%.2f", (n > 0 ? d / n : 0) }')
  [[ $t == nginx-bare ]] && floor[$s]=$us
  [[ -n ${samples["$s|$t"]+set} ]] || order+=("$s|$t")
  samples["$s|$t"]+=" $us"
  local ratio
  ratio=$(awk -v a="$us" -v b="${floor[$s]:-0}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
  rows+=("| $s | $t | $rps | $us | $ratio | $sw | $bad |")
  echo "${rows[-1]}"
}

echo "| scenario | target | req/s | CPU µs/req | × nginx-bare | context switches/req | non-200 |"
echo "|---|---|---|---|---|---|---|"
rounds=${BENCH_ROUNDS:-1}
for _ in $(seq "$rounds"); do
  for c in "${scenarios[@]}"; do
    for t in "${targets[@]}"; do
      if [[ $c == new ]]; then
        measure "new-connection-c16" "$t" -z "$duration" -c 16 --disable-keepalive
      elif [[ $c == dpop || $c == limit ]]; then
        continue
      else
        measure "h1-keepalive-c$c" "$t" -z "$duration" -c "$c"
      fi
    done
  done
done

# With several rounds, each target's median per scenario, and its ratio to the floor's median.
median_rows=()
if ((rounds > 1)); then
  for key in "${order[@]}"; do
    s=${key%%|*} t=${key#*|}
    m=$(tr ' ' '\n' <<<"${samples[$key]}" | grep . | sort -g | awk '{ v[NR] = $1 } END { printf "%.1f", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')
    medians[$key]=$m
    f=${medians["$s|nginx-bare"]:-0}
    median_rows+=("| $s | $t | $m | $(awk -v a="$m" -v b="$f" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }') |${samples[$key]} |")
  done
  echo
  echo "Medians of $rounds rounds:"
  echo "| scenario | target | median CPU µs/req | × nginx-bare | each round |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${median_rows[@]}"
fi

# DPoP: the cert-bound call and the DPoP call through the same loader, in this run.
measure_flood() { # target
  local t=$1 s=tokenflood-c16 c0 c1 n us rps bad file
  file=$out/$s-$t.json
  c0=$(cpu_ticks "$t")
  flood_run "$t" "$file" "${BENCH_DPOP_REQUESTS:-20000}"
  c1=$(cpu_ticks "$t")
  n=$(jq '.statuses["200"] // 0' "$file")
  bad=$(jq '[.statuses | to_entries[] | select(.key != "200") | .value] | add // 0' "$file")
  rps=$(jq '.rps | floor' "$file")
  us=$(awk -v u=$((c1 - c0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.1f", (n > 0 ? u / hz / n * 1e6 : 0) }')
  rows+=("| $s | $t | $rps | $us | - | - | $bad |")
  echo "${rows[-1]}"
}
if [[ " ${scenarios[*]} " == *" dpop "* ]]; then
  flood_run gateway-dpop /dev/null 200 # warm-up
  for t in gateway gateway-dpop; do measure_flood "$t"; done
fi

# A shared limit against the in-process one: the gateway's CPU, the server's, and the latency.
limit_rows=()
measure_limit() { # target
  local t=$1 c0 c1 r0 r1 n us rus p50 p99 file=$out/limit-c16-$1.json
  c0=$(cpu_ticks "$t"); r0=$(cpu_ticks redis)
  oha_run "$t" "$file" -z "$duration" -c 16
  c1=$(cpu_ticks "$t"); r1=$(cpu_ticks redis)
  n=$(jq '.statusCodeDistribution["200"] // 0' "$file")
  us=$(awk -v u=$((c1 - c0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.1f", (n > 0 ? u / hz / n * 1e6 : 0) }')
  rus=$(awk -v u=$((r1 - r0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.1f", (n > 0 ? u / hz / n * 1e6 : 0) }')
  p50=$(jq '.latencyPercentiles.p50 * 1000 | . * 100 | floor / 100' "$file")
  p99=$(jq '.latencyPercentiles.p99 * 1000 | . * 100 | floor / 100' "$file")
  limit_rows+=("| limit-c16 | $t | $(jq '.summary.requestsPerSec | floor' "$file") | $us | $rus | $p50 | $p99 | $(jq '[.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0' "$file") |")
  echo "${limit_rows[-1]}"
}
if [[ " ${scenarios[*]} " == *" limit "* ]]; then
  for t in gateway-limit gateway-shared; do oha_run "$t" /dev/null -n 200 -c 4; done
  echo
  echo "| scenario | target | req/s | gateway CPU µs/req | redis-server CPU µs/req | p50 ms | p99 ms | non-200 |"
  echo "|---|---|---|---|---|---|---|---|"
  for t in gateway-limit gateway-shared; do measure_limit "$t"; done
fi

if [[ -n "${PERF_GATEWAY:-}" ]]; then
  read -ra perf_targets <<<"${PERF_GATEWAY/#1/gateway}"
  for t in "${perf_targets[@]}"; do
    oha_run "$t" "$out/perf-load-$t.json" -z 15s -c "${PERF_CONCURRENCY:-16}" &
    load=$!
    sleep 2
    perf record -F "${PERF_FREQ:-999}" --call-graph "${PERF_CALLGRAPH:-fp}" -p "$(target_pids "$t" | tr ' ' ',' | sed 's/,*$//')" -o "$out/perf-$t.data" -- sleep 10 >/dev/null 2>&1
    wait "$load"
    perf report -i "$out/perf-$t.data" --no-children --percent-limit 0.3 --stdio -g none 2>/dev/null >"$out/perf-$t.txt"
    # Inclusive cost per function: meaningful with PERF_CALLGRAPH=dwarf (release builds keep no frame pointers).
    perf report -i "$out/perf-$t.data" --children --percent-limit 0.5 --stdio -g none --sort sym 2>/dev/null >"$out/perf-$t-children.txt"
    echo "flat profile: $out/perf-$t.txt"
    if command -v inferno-flamegraph >/dev/null; then
      perf script -i "$out/perf-$t.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"$out/$t-c16.svg"
      echo "flamegraph: $out/$t-c16.svg"
    fi
  done
fi

{
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r), oha $(oha --version | awk '{print $2}'), $duration per scenario"
  echo
  echo "| scenario | target | req/s | CPU µs/req | × nginx-bare | context switches/req | non-200 |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  if ((${#median_rows[@]})); then
    echo
    echo "Medians of $rounds rounds:"
    echo
    echo "| scenario | target | median CPU µs/req | × nginx-bare | each round |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${median_rows[@]}"
  fi
  if ((${#limit_rows[@]})); then
    echo
    echo "| scenario | target | req/s | gateway CPU µs/req | redis-server CPU µs/req | p50 ms | p99 ms | non-200 |"
    echo "|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${limit_rows[@]}"
  fi
} >"$out/results.md"
echo "results: $out/results.md"
