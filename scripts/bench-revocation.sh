#!/usr/bin/env bash
# What revocation checking costs a partner's new connection: the first-request latency (a new TLS
# connection and its first request, one curl process per run, no session resumption) of the same
# gateway build, in one invocation, with
#   none         no revocation section
#   ocsp-cold    OCSP, every run a certificate the gateway has not seen (a request to the responder)
#   ocsp-warm    OCSP, the same certificate every run (answered from the cache)
#   crl-dp-warm  CRLs from the certificates' distribution point, already fetched (a lookup)
#   balancer, balancer-ocsp-cold, balancer-ocsp-warm   the same through Debian's nginx as the
#                TLS-terminating balancer (trusted_hop): curl's handshake is with nginx, which
#                forwards the certificate over its kept-alive connection to the hop listener
# `openssl ocsp` is the responder and python's http.server serves the CRL, both on loopback: the
# responder's own time (one signature) is in the cold numbers, a network's round trip is not.
# The request has no token (401 no_token from the first filter): what is measured is the
# connection, the handshake and the revocation check, not the identity server.
#
#   scripts/bench-revocation.sh               20 runs per scenario, release build
#   BENCH_RUNS=50 scripts/bench-revocation.sh
#   BENCH_BIN=target/debug scripts/bench-revocation.sh   an existing build, nothing built
#
# Prints one table (median and p90 of curl's time_appconnect and time_starttransfer, in ms) and
# writes it to target/bench/revocation.txt.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
runs=${BENCH_RUNS:-20}
out=$here/target/bench/revocation
rm -rf "$out" && mkdir -p "$out"
certs=$out/certs
# shellcheck source=scripts/conf-lib.sh
source scripts/conf-lib.sh

if [[ -n "${BENCH_BIN:-}" ]]; then
  bin=$(cd "$BENCH_BIN" && pwd)
else
  cargo build --release -p mtls-gateway --bin mtls-gateway
  # A copy: a shared target directory may be rebuilt from another tree while this runs.
  cp "${CARGO_TARGET_DIR:-$here/target}/release/mtls-gateway" "$out/"
  bin=$out
fi
CERTS_DIR=$certs scripts/create-certs.sh >/dev/null

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
gw_port=$(port); ocsp_port=$(port); crl_port=$(port); ops_port=$(port); hop_port=$(port); lb_port=$(port)
[[ $gw_port != "$ocsp_port" && $crl_port != "$ops_port" ]] || { echo "port clash, run again" >&2; exit 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# --- a PKI of its own: root -> issuing CA -> responder and partners --------------------------------
pki=$out/pki
mkdir -p "$pki/www"
cd "$pki"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
issue() { # name subject ca ext serial
  key "$1"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  printf '%b' "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -set_serial "$5" -days 60 -sha256 -extfile "$1.ext" \
    -out "$1.pem" 2>/dev/null
}
key root
openssl req -x509 -new -key root.key -sha256 -days 60 -subj "/CN=Bench Root" -out root.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
ca_ext='basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n'
issue issuing "/CN=Bench Issuing CA" root "$ca_ext" 1
issue responder "/CN=Bench OCSP Responder" issuing 'keyUsage=critical,digitalSignature\nextendedKeyUsage=OCSPSigning\n' 2
cat issuing.pem root.pem >client-ca.pem
: >index.txt
expiry=$(date -u -d '+10 days' +%y%m%d%H%M%SZ)
partner_ext="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
partner_ext+="authorityInfoAccess=OCSP;URI:http://127.0.0.1:$ocsp_port/\n"
partner_ext+="crlDistributionPoints=URI:http://127.0.0.1:$crl_port/issuing.crl\n"
for i in $(seq 0 $((runs + 1))); do
  serial=$((4096 + i))
  issue "p$i" "/CN=bench-partner-$i" issuing "$partner_ext" "$serial"
  printf 'V\t%s\t\t%X\tunknown\t/CN=bench-partner-%s\n' "$expiry" "$serial" "$i" >>index.txt
done
printf '[ ca ]\ndefault_ca = c\n[ c ]\ndatabase = %s/index.txt\ncrlnumber = %s/crlnumber\ndefault_md = sha256\ndefault_crl_days = 1\n' \
  "$pki" "$pki" >ca.cnf
echo 1000 >crlnumber
openssl ca -config ca.cnf -keyfile issuing.key -cert issuing.pem -gencrl -out issuing.crl.pem 2>/dev/null
openssl crl -in issuing.crl.pem -outform DER -out www/issuing.crl
cd "$here"

openssl ocsp -index "$pki/index.txt" -port "$ocsp_port" -rsigner "$pki/responder.pem" -rkey "$pki/responder.key" \
  -CA "$pki/issuing.pem" -nmin 60 -ignore_err >"$out/responder.log" 2>&1 &
pids+=($!)
python3 -m http.server --bind 127.0.0.1 "$crl_port" --directory "$pki/www" >"$out/http.log" 2>&1 &
pids+=($!)
# `openssl ocsp` hangs on a connection closed without a request: wait for its line, do not probe.
for _ in $(seq 100); do grep -q "waiting for OCSP" "$out/responder.log" && break; sleep 0.1; done

# --- one gateway per scenario, the same build ---------------------------------------------------
start_gateway() { # name [key=value ...]
  local name=$1; shift
  gateway_conf "$out/$name.yaml" "$gw_port" "$out" 1 127.0.0.1:9 "tls.client_ca=$pki/client-ca.pem" "-tls.client_crl" \
    "metrics.address=127.0.0.1:$ops_port" "$@"
  "$bin/mtls-gateway" -c "$out/$name.yaml" >"$out/$name.log" 2>&1 &
  gw_pid=$!
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$gw_port") 2>/dev/null && return; sleep 0.05; done
  echo "the gateway did not start: $out/$name.log" >&2
  exit 1
}
stop_gateway() { kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true; }

hop=$(balancer_hop "$hop_port")
start_balancer() {
  balancer_start "$out/balancer" "$lb_port" "$hop_port"
  pids+=("$balancer_pid")
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$lb_port") 2>/dev/null && return; sleep 0.05; done
  echo "nginx did not start: $out/balancer/error.log" >&2
  exit 1
}

one() { # partner-index [port]: "appconnect starttransfer" in ms
  curl -s -o /dev/null --noproxy '*' --cacert "$certs/root.pem" --cert "$pki/p$1.pem" --key "$pki/p$1.key" \
    --connect-to "api.example.com:443:127.0.0.1:${2:-$gw_port}" -w '%{time_appconnect} %{time_starttransfer}\n' \
    https://api.example.com/api/transactions | awk '{ printf "%.2f %.2f\n", $1 * 1000, $2 * 1000 }'
}

stats() { # file column -> "median p90"
  sort -n -k"$2" "$1" | awk -v c="$2" '{ v[NR] = $c } END { m = v[int((NR + 1) / 2)]; p = v[int(NR * 0.9 + 0.5)]; printf "%8.2f %8.2f", m, p }'
}

table=$out/../revocation.txt
printf '%-18s %5s | %-17s | %-17s\n' scenario runs "appconnect ms" "first byte ms" >"$table"
printf '%-18s %5s | %8s %8s | %8s %8s\n' "" "" median p90 median p90 >>"$table"
row() { # name file
  printf '%-18s %5s | %s | %s\n' "$1" "$(wc -l <"$2")" "$(stats "$2" 1)" "$(stats "$2" 2)" >>"$table"
}

start_gateway none
one 0 >/dev/null
for _ in $(seq "$runs"); do one 0; done >"$out/none.txt"
stop_gateway
row none "$out/none.txt"

start_gateway ocsp 'revocation={policy: hard, timeout: 2s, ocsp: {}}'
for i in $(seq 1 "$runs"); do one "$i"; done >"$out/ocsp-cold.txt"
one 0 >/dev/null
for _ in $(seq "$runs"); do one 0; done >"$out/ocsp-warm.txt"
stop_gateway
row ocsp-cold "$out/ocsp-cold.txt"
row ocsp-warm "$out/ocsp-warm.txt"

start_gateway crl 'revocation={policy: hard, timeout: 2s, crl: {distribution_points: true}}'
one 0 >/dev/null
for i in $(seq 1 "$runs"); do one "$i"; done >"$out/crl-dp-warm.txt"
stop_gateway
row crl-dp-warm "$out/crl-dp-warm.txt"

start_balancer
start_gateway balancer "$hop"
one 0 "$lb_port" >/dev/null
for _ in $(seq "$runs"); do one 0 "$lb_port"; done >"$out/balancer.txt"
stop_gateway
row balancer "$out/balancer.txt"

start_gateway balancer-ocsp "$hop" 'revocation={policy: hard, timeout: 2s, ocsp: {}}'
# nginx's connections to the hop listener are made again first: not part of what is measured.
one 0 "$lb_port" >/dev/null
for i in $(seq 1 "$runs"); do one "$i" "$lb_port"; done >"$out/balancer-ocsp-cold.txt"
for _ in $(seq "$runs"); do one 0 "$lb_port"; done >"$out/balancer-ocsp-warm.txt"
stop_gateway
row balancer-ocsp-cold "$out/balancer-ocsp-cold.txt"
row balancer-ocsp-warm "$out/balancer-ocsp-warm.txt"

cat "$table"
