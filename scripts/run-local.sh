#!/usr/bin/env bash
# The whole system on this machine: certificates, dev-idsvr, example-api and the gateway on
# 127.0.0.1 (the gateway's single public port is 127.0.0.1:8443), then the partner client once.
# Keeps serving until Ctrl-C or SIGTERM, then stops every process it started.
#
#   scripts/run-local.sh            release build
#   PROFILE=debug scripts/run-local.sh
#   RUN_ONCE=1 scripts/run-local.sh stop after the client has run (exit status = the client's)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
profile=${PROFILE:-release}
logs=${LOG_DIR:-$here/target/run-local}

"$here/scripts/install-deps.sh"
# shellcheck disable=SC1091
[[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"

if [[ "$profile" == release ]]; then
  cargo build --release --workspace --bins
else
  cargo build --workspace --bins
fi
bin="$here/target/$profile"
scripts/create-certs.sh

mkdir -p "$logs"
pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_port() { # port name
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "$2 did not start listening on port $1; see $logs/$2.log" >&2
  exit 1
}

"$bin/dev-idsvr" conf/dev-idsvr.yaml >"$logs/dev-idsvr.log" 2>&1 & pids+=($!)
wait_port 8444 dev-idsvr
"$bin/example-api" conf/example-api.yaml >"$logs/example-api.log" 2>&1 & pids+=($!)
wait_port 3000 example-api
"$bin/mtls-gateway" -t -c conf/local.yaml
"$bin/mtls-gateway" -c conf/local.yaml >"$logs/mtls-gateway.log" 2>&1 & pids+=($!)
wait_port 8443 mtls-gateway
echo "dev-idsvr :8444, example-api :3000, mtls-gateway :8443 (metrics :9090); logs in $logs"
echo

GATEWAY=127.0.0.1:8443 scripts/client.sh
echo
GATEWAY=127.0.0.1:8443 DPOP_PROOF="$bin/dpop-proof" scripts/dpop-client.sh

if [[ -n "${RUN_ONCE:-}" ]]; then
  exit 0
fi
echo
echo "Serving. Try: GATEWAY=127.0.0.1:8443 scripts/client.sh   (Ctrl-C stops everything)"
echo "  or, with DPoP instead of a certificate: GATEWAY=127.0.0.1:8443 DPOP_PROOF=$bin/dpop-proof scripts/dpop-client.sh"
wait -n "${pids[@]}"
echo "a process exited; stopping the rest" >&2
exit 1
