#!/usr/bin/env bash
# Installs the Debian packages the project needs to build (pingora builds OpenSSL and zlib-ng from
# source: cmake, perl, make, a C compiler) and to run its scripts (curl, jq, openssl, PyYAML). With --test,
# also what the tests need: node and npm (the oidc-provider interop suite), redis-server (the
# cluster tests), docker-compose (to check compose.yaml) and Debian's nginx, unpacked into target/ (the
# trusted-hop tests' balancer). With --load, also the load generator the load scripts pin: oha 1.16.0,
# built with cargo. Installs only what is missing, so it is quick on a prepared machine.
set -euo pipefail

tools=(cmake:cmake perl:perl make:make cc:gcc g++:g++ curl:curl jq:jq openssl:openssl pkg-config:pkg-config)
load=""
test=""
for arg in "$@"; do
  case $arg in
    --test)
      tools+=(node:nodejs npm:npm docker-compose:docker-compose redis-server:redis-server)
      test=1
      ;;
    --load) load=1 ;;
    *) echo "usage: $0 [--test] [--load]" >&2; exit 2 ;;
  esac
done
needed=()
for pair in "${tools[@]}"; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || needed+=("$pkg")
done
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || needed+=(ca-certificates)
# scripts/patch-yaml.py derives the scripts' configurations from conf/ with Debian's PyYAML.
/usr/bin/python3 -c 'import yaml' 2>/dev/null || needed+=(python3-yaml)
if ((${#needed[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  echo "installing: ${needed[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${needed[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || [[ -x "$HOME/.cargo/bin/cargo" ]] || {
  echo "Rust is required: https://rustup.rs" >&2
  exit 1
}
# The trusted-hop tests run Debian's nginx as the TLS-terminating balancer: unpacked into target/
# (no system service is installed or started), as the nginx + Lua benchmark does.
if [[ -n $test ]]; then
  "$(dirname "$0")/nginx-lua.sh" unpack >/dev/null
fi
if [[ -n $load ]]; then
  [[ -f "$HOME/.cargo/env" ]] && source "$HOME/.cargo/env"
  if ! oha --version 2>/dev/null | grep -q '1.16.0'; then cargo install oha --version 1.16.0 --locked; fi
fi
