#!/usr/bin/env bash
# nginx + Lua baseline: runs the reference's OpenResty setup (Curity "Mutual TLS Secured API" tutorial)
# rebuilt from Debian 12's packages, so benchmarks compare mtls-gateway with a like-for-like nginx:
# one public port split by SNI in a stream {} block (login.example.com passed through to the identity
# server, everything else to an internal mTLS http {} listener), there the phantom-token and
# cert-binding Lua plugins, then the example API over verified TLS. See bench/nginx-lua/.
#
#   scripts/nginx-lua.sh start    unpack nginx (once), render the config, start it, wait for the port
#   scripts/nginx-lua.sh stop     stop the nginx this script started (its pid file only)
#   scripts/nginx-lua.sh unpack   only unpack nginx (the trusted-hop tests run it as their balancer)
#
# nginx and its modules are unpacked with `apt-get download` + `dpkg -x` into target/nginx-lua/root:
# nothing is installed system-wide and no system service is started. The identity server and the API
# are not started here (target/debug/dev-idsvr, target/debug/example-api).
#
# Environment (defaults):
#   NGINX_PORT=19443            public port (on NGINX_BIND=127.0.0.1)
#   INTERNAL_ADDR=127.0.0.1:$((NGINX_PORT+1))   the internal mTLS listener (or unix:/path)
#   IDSVR_ADDR=127.0.0.1:18444  identity server (passthrough and introspection)
#   API_ADDR=127.0.0.1:13000    example API
#   CERTS_DIR=<repo>/certs      root.pem, root.crl.pem, example.tls.{pem,key}
#   NGINX_WORKERS=2             worker_processes
#   CACHE_MAX_TTL=300           seconds an introspection result may be cached at most
#   ACCESS_LOG=off              or a file path
#   RUN_DIR=<repo>/target/nginx-lua/run   rendered nginx.conf, pid, error.log, temp dirs
#   INTROSPECT_CLIENT=introspect-client INTROSPECT_SECRET=Password1
#   TEMPLATE=bench/nginx-lua/nginx.conf.template   or bench/nginx-bare/{nginx,echo}.conf.template
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
base=$here/target/nginx-lua
export NGINX_ROOT=$base/root
export NGINX_PORT=${NGINX_PORT:-19443}
export NGINX_LISTEN=${NGINX_BIND:-127.0.0.1}:$NGINX_PORT
export INTERNAL_ADDR=${INTERNAL_ADDR:-127.0.0.1:$((NGINX_PORT + 1))}
export IDSVR_ADDR=${IDSVR_ADDR:-127.0.0.1:18444}
export API_ADDR=${API_ADDR:-127.0.0.1:13000}
export CERTS_DIR=${CERTS_DIR:-$here/certs}
export NGINX_WORKERS=${NGINX_WORKERS:-2}
export CACHE_MAX_TTL=${CACHE_MAX_TTL:-300}
export ACCESS_LOG=${ACCESS_LOG:-off}
export RUN_DIR=${RUN_DIR:-$base/run}
export LUA_DIR=$here/bench/nginx-lua
INTROSPECT_BASIC=$(printf '%s:%s' "${INTROSPECT_CLIENT:-introspect-client}" "${INTROSPECT_SECRET:-Password1}" | base64 -w0)
export INTROSPECT_BASIC

# nginx 1.22, lua-nginx-module 0.10.23 (+ NDK), the stream module, lua-resty-core/lrucache, cjson,
# OpenResty's LuaJIT 2.1 (lua-resty-core wants it), and libpcre3 which the Lua module links.
packages=(nginx libnginx-mod-http-lua libnginx-mod-http-ndk libnginx-mod-stream lua-resty-core
  lua-resty-lrucache lua-cjson libluajit2-5.1-2 libluajit2-5.1-common libpcre3)
# Shared libraries of the unpacked packages (libluajit, libpcre); the rest (libssl3, libpcre2) are
# already on a Debian 12 machine.
export LD_LIBRARY_PATH=$NGINX_ROOT/usr/lib/x86_64-linux-gnu:$NGINX_ROOT/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nginx=$NGINX_ROOT/usr/sbin/nginx
pidfile=$RUN_DIR/nginx.pid

unpack() {
  [[ -x $nginx && -f $NGINX_ROOT/usr/lib/nginx/modules/ngx_http_lua_module.so ]] && return 0
  local debs=$base/debs
  mkdir -p "$debs" && rm -f "$debs"/*.deb # only this download's versions get unpacked
  if ! apt-cache show "${packages[@]}" >/dev/null 2>&1; then apt-get update -qq; fi
  # As root, apt-get would drop to the _apt user, who cannot write into target/: keep root.
  (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "${packages[@]}")
  rm -rf "$NGINX_ROOT.tmp" && mkdir -p "$NGINX_ROOT.tmp"
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$NGINX_ROOT.tmp"; done
  rm -rf "$NGINX_ROOT" && mv "$NGINX_ROOT.tmp" "$NGINX_ROOT"
}

render() {
  mkdir -p "$RUN_DIR"/tmp
  local vars='${NGINX_ROOT} ${NGINX_LISTEN} ${INTERNAL_ADDR} ${IDSVR_ADDR} ${API_ADDR} ${CERTS_DIR}
    ${NGINX_WORKERS} ${CACHE_MAX_TTL} ${ACCESS_LOG} ${RUN_DIR} ${LUA_DIR} ${INTROSPECT_BASIC}'
  envsubst "$vars" <"$here/${TEMPLATE:-bench/nginx-lua/nginx.conf.template}" >"$RUN_DIR/nginx.conf"
  chmod 600 "$RUN_DIR/nginx.conf" # it holds the introspection client's credentials
}

running() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

start() {
  if running; then echo "nginx-lua already running, pid $(cat "$pidfile")" >&2; exit 1; fi
  unpack
  render
  : >"$RUN_DIR/error.log" # one run's log only
  "$nginx" -p "$RUN_DIR" -e "$RUN_DIR/error.log" -c "$RUN_DIR/nginx.conf" -t -q
  "$nginx" -p "$RUN_DIR" -e "$RUN_DIR/error.log" -c "$RUN_DIR/nginx.conf" # daemonizes, writes the pid file
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/${NGINX_LISTEN%:*}/$NGINX_PORT") 2>/dev/null; then
      echo "nginx-lua listening on $NGINX_LISTEN, pid $(cat "$pidfile"), logs in $RUN_DIR"
      return 0
    fi
    sleep 0.1
  done
  echo "nginx-lua did not open $NGINX_LISTEN; see $RUN_DIR/error.log" >&2
  exit 1
}

stop() {
  if ! running; then echo "nginx-lua not running"; return 0; fi
  local pid
  pid=$(cat "$pidfile")
  kill -TERM "$pid" # the master stops its workers
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || { echo "nginx-lua stopped"; return 0; }; sleep 0.1; done
  echo "nginx-lua (pid $pid) did not stop" >&2
  exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  unpack) unpack && echo "$nginx" ;;
  *) echo "usage: $0 start|stop|unpack" >&2; exit 2 ;;
esac
