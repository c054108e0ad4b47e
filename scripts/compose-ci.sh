#!/usr/bin/env bash
# Runs compose.yaml for real with Debian's podman (no registry, no systemd needed), then the
# partner client and a few checks against the stack through the gateway's one published port.
#
#   scripts/compose-ci.sh                       as root on Debian 12; about 2 minutes on a prepared machine
#   COMPOSE_CI_TIMEOUT=900                      seconds for everything after the setup (default 900)
#   COMPOSE_CI_PUBLISH=127.0.0.1:18443          where the gateway's port 443 is published
#   COMPOSE_CI_PUBLISH_2=127.0.0.1:18444        where the second replica's is
#   PROFILE=debug|release                       which host build goes into the image (default debug)
#
# Setup, each step skipped when already done: the Debian packages (podman runc debootstrap
# docker-compose), a podman config of our own (CONTAINERS_CONF, the machine's files are not
# touched), a Debian base image from debootstrap (localhost/debian:bookworm, as no container
# registry may be reachable), podman's Docker-compatible API socket. The binaries are built on the
# host and copied into the image (the Dockerfile's `prebuilt` target): Rust is not installed in a
# container. Whatever this script starts it stops, and on failure it prints the containers' logs.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC1091
[[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"

timeout_s=${COMPOSE_CI_TIMEOUT:-900}
publish=${COMPOSE_CI_PUBLISH:-127.0.0.1:18443}
publish_2=${COMPOSE_CI_PUBLISH_2:-127.0.0.1:18444}
profile=${PROFILE:-debug}
project=mtls-gateway-ci
work=$here/target/compose-ci
base_image=localhost/debian:bookworm
sock=/run/podman/podman.sock
started=$SECONDS

log() { printf '[compose-ci %4ds] %s\n' "$((SECONDS - started))" "$*"; }
fail() { log "FAILED: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || fail "run as root (rootful podman: the stack publishes a port and imports a base image)"
mkdir -p "$work"

# --- setup ----------------------------------------------------------------------------------------
needed=()
for pair in podman:podman runc:runc debootstrap:debootstrap docker-compose:docker-compose strip:binutils \
  curl:curl jq:jq openssl:openssl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [[ -x /usr/sbin/${pair%%:*} ]] || needed+=("${pair##*:}")
done
if ((${#needed[@]})); then
  log "installing ${needed[*]}"
  apt-get update -qq
  apt-get install -y -qq "${needed[@]}" >/dev/null
fi
export PATH=$PATH:/usr/sbin:/sbin

# Podman's defaults ask for more open files and processes than this shell may grant; runc and
# cgroupfs because there is no systemd; events to a file for the same reason.
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
[[ "$nproc" == unlimited || "$nproc" -gt 32768 ]] && nproc=32768
[[ "$nofile" == unlimited ]] && nofile=1048576
cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF=$work/containers.conf

if ! podman image exists "$base_image"; then
  log "building $base_image with debootstrap (Debian's archive)"
  rootfs=$work/rootfs
  rm -rf "$rootfs"
  timeout 900 debootstrap --variant=minbase bookworm "$rootfs" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; fail "debootstrap"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import - "$base_image" >/dev/null
  rm -rf "$rootfs"
fi

# --- from here on, bounded in time, and everything started is stopped ------------------------------
deadline=$((SECONDS + timeout_s))
left() { local l=$((deadline - SECONDS)); ((l > 0)) || fail "out of time (${timeout_s}s)"; echo "$l"; }
bounded() { timeout --kill-after=10 "$(left)" "$@"; }

service_pid="" health_pid="" ok=0
dc() { DOCKER_HOST=unix://$sock bounded docker-compose -p "$project" -f compose.yaml "$@"; }
containers() { podman ps -a -q --filter "label=com.docker.compose.project=$project"; }

teardown() {
  local status=$?
  set +e
  trap - EXIT INT TERM
  [[ -n "$health_pid" ]] && kill "$health_pid" 2>/dev/null && wait "$health_pid" 2>/dev/null
  if ((ok == 0)); then
    for c in $(containers); do
      echo "----- logs of $(podman inspect --format '{{.Name}}' "$c") (last 60 lines) -----"
      podman logs --tail 60 "$c" 2>&1 || true
    done
  fi
  if [[ -S "$sock" ]]; then
    DOCKER_HOST=unix://$sock timeout 60 docker-compose -p "$project" -f compose.yaml down --remove-orphans >/dev/null 2>&1 || true
  fi
  for c in $(containers); do podman rm -f "$c" >/dev/null 2>&1 || true; done
  [[ -n "$service_pid" ]] && kill "$service_pid" 2>/dev/null && wait "$service_pid" 2>/dev/null
  log "$([[ $ok == 1 && $status == 0 ]] && echo "compose stack: all checks passed" || echo "compose stack: FAILED")"
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# Podman's Docker-compatible API for docker-compose: reuse one that answers, else start our own.
if ! curl -sf --max-time 3 --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then
  mkdir -p "$(dirname "$sock")"
  rm -f "$sock"
  podman system service --time=0 "unix://$sock" >"$work/podman-service.log" 2>&1 &
  service_pid=$!
  for _ in $(seq 50); do
    curl -sf --max-time 1 --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -sf --max-time 3 --unix-socket "$sock" http://d/_ping >/dev/null || fail "podman system service did not answer"
fi
# A stack left over from an interrupted run.
for c in $(containers); do podman rm -f "$c" >/dev/null; done

# --- binaries from the host, staged as the image's build context -----------------------------------
log "building the binaries on the host ($profile)"
if [[ "$profile" == release ]]; then
  bounded cargo build --release --locked --workspace --bins
else
  bounded cargo build --locked --workspace --bins
fi
ctx=$work/context
rm -rf "$ctx" && mkdir -p "$ctx/bin"
cp Dockerfile "$ctx/"
for b in mtls-gateway dev-idsvr example-api; do
  # Debug symbols make a debug build ~200 MB per binary; the code is the same without them.
  strip --strip-debug -o "$ctx/bin/$b" "target/$profile/$b"
done

# The certificates compose.yaml mounts (readable by the image's user; older copies made so here).
scripts/create-certs.sh >/dev/null
chmod a+r certs/*

export MTLS_BUILD_CONTEXT=$ctx MTLS_BUILD_TARGET=prebuilt MTLS_BUILD_IMAGE=$base_image \
  MTLS_RUNTIME_IMAGE=$base_image MTLS_PUBLISH=$publish MTLS_PUBLISH_2=$publish_2

# No systemd, so podman runs no healthchecks on its own: run them, so that depends_on's
# service_healthy conditions and the wait below see a health status.
(
  while true; do
    for c in $(podman ps -q --filter "label=com.docker.compose.project=$project" 2>/dev/null); do
      podman healthcheck run "$c" >/dev/null 2>&1 || true
    done
    sleep 2
  done
) &
health_pid=$!

log "docker-compose up -d --build (podman at $sock)"
dc up -d --build >"$work/up.log" 2>&1 || { tail -40 "$work/up.log"; fail "docker-compose up (log: $work/up.log)"; }

log "waiting for six healthy containers (two gateways, identity server, two API instances, Redis)"
while true; do
  states=$(podman ps -a --filter "label=com.docker.compose.project=$project" --format '{{.Names}} {{.Status}}')
  healthy=$(grep -c '(healthy)' <<<"$states" || true)
  ((healthy == 6)) && break
  if grep -q 'Exited' <<<"$states"; then echo "$states"; fail "a container exited"; fi
  ((SECONDS < deadline)) || { echo "$states"; fail "not healthy within ${timeout_s}s"; }
  sleep 2
done
log "healthy: $(tr '\n' ';' <<<"$states")"

# --- checks ---------------------------------------------------------------------------------------
gateway=$(podman ps -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=gateway")

log "check: /readyz answers 200 (mtls-gateway health in the gateway's container)"
ready=$(bounded podman exec "$gateway" mtls-gateway health 127.0.0.1:9090) || fail "/readyz: $ready"
[[ $(jq -r .status <<<"$ready") == ready ]] || fail "/readyz: $ready"

log "check: the partner client through $publish"
GATEWAY=$publish bounded scripts/client.sh || fail "scripts/client.sh"

log "check: the partner client through the second replica ($publish_2)"
GATEWAY=$publish_2 bounded scripts/client.sh || fail "scripts/client.sh through gateway-2"

log "check: both replicas are subscribed to the shared purge channel"
gateway_2=$(podman ps -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=gateway-2")
redis=$(podman ps -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=redis")
for c in "$gateway" "$gateway_2"; do
  for _ in $(seq 50); do
    purges=$(bounded podman exec "$c" mtls-gateway health 127.0.0.1:9090 | jq -r '.cluster_purges // empty') || true
    [[ "$purges" == subscribed ]] && break
    sleep 0.2
  done
  [[ "$purges" == subscribed ]] || fail "$(podman inspect --format '{{.Name}}' "$c"): cluster_purges=$purges"
done
subscribers=$(bounded podman exec "$redis" redis-cli PUBSUB NUMSUB mtls-gateway:purge | tail -1)
[[ "$subscribers" == 2 ]] || fail "subscribers of mtls-gateway:purge: $subscribers (want 2)"

C=(curl -sS --max-time 20 --connect-to "login.example.com:443:$publish" --connect-to "api.example.com:443:$publish"
  --cacert certs/root.pem --cert-type P12)
log "check: a token presented with another partner's certificate is refused (401)"
token=$(bounded "${C[@]}" --cert certs/example.client.p12:Password1 https://login.example.com/oauth/v2/oauth-token-mutual-tls \
  -d client_id=partner-client -d grant_type=client_credentials -d scope=transactions | jq -r '.access_token // empty')
[[ -n "$token" ]] || fail "no token"
own=$(bounded "${C[@]}" --cert certs/example.client.p12:Password1 -o /dev/null -w '%{http_code}' -X POST \
  https://api.example.com/api/transactions -H "Authorization: Bearer $token")
stolen=$(bounded "${C[@]}" --cert certs/other.client.p12:Password1 -o /dev/null -w '%{http_code}' -X POST \
  https://api.example.com/api/transactions -H "Authorization: Bearer $token")
[[ "$own" == 200 && "$stolen" == 401 ]] || fail "own certificate: $own (want 200), other certificate: $stolen (want 401)"

log "check: a revoked certificate gets no TLS session with the API host (CRL)"
if bounded "${C[@]}" --cert certs/revoked.client.p12:Password1 -o /dev/null https://api.example.com/api/transactions 2>/dev/null; then
  fail "revoked-partner was served"
fi

# The gateway's metrics, read inside its container (the ops listener is not published).
metrics() {
  bounded podman exec "$1" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9090 &&
    printf "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" >&3 && timeout 5 cat <&3'
}
# "address count" of each backend of example-api that answered at least one request.
served_by() {
  metrics "$1" | grep '^gateway_upstream_attempts_total{' | grep 'upstream="example-api"' | grep 'result="ok"' \
    | sed -E 's/.*backend="([^"]+)".*\} ([0-9]+)$/\1 \2/' | awk '$2 > 0'
}
api_2=$(podman ps -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=api-internal-2")
transaction() {
  bounded "${C[@]}" --cert certs/example.client.p12:Password1 -o /dev/null -w '%{http_code}' -X POST \
    https://api.example.com/api/transactions -H "Authorization: Bearer $token"
}

log "check: both API instances serve requests through one gateway (round robin)"
for _ in $(seq 8); do
  code=$(transaction) || true
  [[ "$code" == 200 ]] || fail "POST /api/transactions: $code (want 200)"
done
backends=$(bounded podman exec "$gateway" mtls-gateway health 127.0.0.1:9090 | jq -c '.upstreams["example-api"]')
[[ $(jq -r '"\(.healthy_backends)/\(.backends)"' <<<"$backends") == 2/2 ]] || fail "/readyz upstreams.example-api: $backends"
served=$(served_by "$gateway") || true
[[ $(wc -l <<<"$served") == 2 ]] || fail "backends that answered: $(tr '\n' ';' <<<"$served") (want two)"
log "served by: $(tr '\n' ';' <<<"$served")"

log "check: with api-internal-2 stopped, every request is answered by the other instance"
dc stop api-internal-2 >/dev/null 2>&1 || fail "docker-compose stop api-internal-2"
for _ in $(seq 4); do
  code=$(transaction) || true
  [[ "$code" == 200 ]] || fail "POST /api/transactions with one instance stopped: $code (want 200)"
done
# The health check (every 5 s, out after two failures) says so too.
for _ in $(seq 40); do
  backends=$(bounded podman exec "$gateway" mtls-gateway health 127.0.0.1:9090 | jq -c '.upstreams["example-api"]') || true
  [[ $(jq -r .healthy_backends <<<"$backends") == 1 ]] && break
  sleep 0.5
done
[[ $(jq -r '"\(.healthy_backends)/\(.backends)"' <<<"$backends") == 1/2 ]] || fail "/readyz upstreams.example-api: $backends"
podman inspect --format '{{.State.Status}}' "$api_2" | grep -q exited || fail "api-internal-2 did not stop"
log "retries so far: $(metrics "$gateway" | grep '^gateway_upstream_retries_total{' | tr '\n' ';')" || true

log "check: the ops listener is not published; only $publish is"
ports=$(podman port "$gateway")
[[ $(wc -l <<<"$ports") == 1 && "$ports" == "443/tcp -> $publish" ]] || fail "published: $ports"

log "check: SIGTERM stops the gateway gracefully within stop_grace_period (exit status 0)"
dc stop gateway >/dev/null 2>&1 || fail "docker-compose stop gateway"
code=$(podman inspect --format '{{.State.ExitCode}}' "$gateway")
[[ "$code" == 0 ]] || fail "gateway exit status $code after SIGTERM"
grep -q 'SIGTERM received, gracefully exiting' < <(podman logs "$gateway" 2>&1) || fail "no graceful shutdown in the log"

ok=1
