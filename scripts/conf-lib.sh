# Sourced by the load scripts (bench.sh, bench-cpu.sh, upgrade-under-load.sh): each file they run
# is a shipped conf/ file with the run's ports, certificates ($certs) and files patched in, so no
# script keeps a configuration of its own.

patch() { /usr/bin/python3 scripts/patch-yaml.py "$@"; }

idsvr_conf() { # out port [key=value ...]
  local out=$1 port=$2; shift 2
  patch conf/dev-idsvr.yaml "$out" "listen=127.0.0.1:$port" "certificate=$certs/example.tls.pem" \
    "key=$certs/example.tls.key" "client_ca=$certs/root.pem" access_token_ttl_seconds=3600 "$@"
}

api_conf() { # out port idsvr-port [key=value ...]
  local out=$1 port=$2 idsvr=$3; shift 3
  patch conf/example-api.yaml "$out" "listen=127.0.0.1:$port" "certificate=$certs/example.tls.pem" \
    "key=$certs/example.tls.key" "jwks_ca=$certs/root.pem" "jwks_resolve=127.0.0.1:$idsvr" \
    "jwks_url=https://login-internal.example.com:$idsvr/oauth/v2/oauth-anonymous/jwks" "$@"
}

# The gateway of conf/local.yaml on `port`, its pid file and upgrade socket under `dir`, in front of
# the identity server on `idsvr-port` and the API at `api-addr`. One load generator is one source
# address, so the per-source caps are lifted.
gateway_conf() { # out port dir idsvr-port api-addr [key=value ...]
  local out=$1 port=$2 dir=$3 idsvr=$4 api=$5; shift 5
  patch conf/local.yaml "$out" "pingora.pid_file=$dir/gw-$port.pid" "pingora.upgrade_sock=$dir/gw-$port.sock" \
    "listener.address=127.0.0.1:$port" "passthrough.routes[0].upstream=127.0.0.1:$idsvr" \
    "tls.certificate=$certs/example.tls.pem" "tls.key=$certs/example.tls.key" "tls.client_ca=$certs/root.pem" \
    "tls.client_crl=$certs/root.crl.pem" "upstreams.example-api.address=$api" "upstreams.example-api.ca=$certs/root.pem" \
    "introspection.idsvr.endpoint=https://login-internal.example.com:$idsvr/oauth/v2/oauth-introspect" \
    "introspection.idsvr.resolve=127.0.0.1:$idsvr" "introspection.idsvr.ca=$certs/root.pem" \
    'limits.per_source={tunnels: 4096, connections: 100000, handshakes: 100000}' "$@"
}
