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

# Debian's nginx as a TLS-terminating balancer in front of the gateway's trusted-hop listener, as
# docs/trusted-hop.md deploys it: it terminates the partner's TLS without verifying it
# (optional_no_ca), and forwards the certificate URL-escaped in X-SSL-Client-Cert over TLS, from
# 127.0.0.2, with its hop certificate. Sets balancer_pid; the caller waits for the port.
balancer_start() { # dir listen-port hop-port
  local lb=$1 port=$2 hop=$3 nginx
  nginx=$("$(dirname "${BASH_SOURCE[0]}")/nginx-lua.sh" unpack)
  mkdir -p "$lb/tmp"
  cat >"$lb/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $lb/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $lb/tmp/body; proxy_temp_path $lb/tmp/proxy; fastcgi_temp_path $lb/tmp/fastcgi;
  uwsgi_temp_path $lb/tmp/uwsgi; scgi_temp_path $lb/tmp/scgi;
  upstream hop { server 127.0.0.1:$hop; keepalive 32; }
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $certs/example.tls.pem; ssl_certificate_key $certs/example.tls.key;
    ssl_verify_client optional_no_ca; ssl_session_cache off; ssl_session_tickets off;
    location / {
      proxy_pass https://hop; proxy_bind 127.0.0.2; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header Host \$http_host;
      proxy_set_header X-SSL-Client-Cert \$ssl_client_escaped_cert;
      proxy_ssl_server_name on; proxy_ssl_name api.example.com; proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $certs/root.pem; proxy_ssl_session_reuse on;
      proxy_ssl_certificate $certs/hop.client.pem; proxy_ssl_certificate_key $certs/hop.client.key;
    }
  }
}
EOF
  "$nginx" -p "$lb" -e "$lb/error.log" -c "$lb/nginx.conf" &
  balancer_pid=$!
}

# The gateway's trusted_hop section for that balancer (key=value for gateway_conf).
balancer_hop() { # hop-port
  echo "trusted_hop={address: '127.0.0.1:$1', sources: [127.0.0.2], format: escaped_pem, hop_ca: $certs/hop-ca.pem, hop_subjects: [CN=edge-balancer]}"
}
