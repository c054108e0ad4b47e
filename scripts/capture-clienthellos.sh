#!/usr/bin/env bash
# Captures real ClientHellos from curl and openssl s_client into tests/fixtures/clienthello/, for
# the SNI parser's tests. A small listener on 127.0.0.1 saves the first flight of each client and
# closes the connection (the clients then fail, as expected).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=$here/tests/fixtures/clienthello
mkdir -p "$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

capture() { # name command...
  local name=$1; shift
  python3 - "$port" "$out/$name.bin" <<'PY' &
import socket, sys, time
port, path = int(sys.argv[1]), sys.argv[2]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(1); srv.settimeout(10)
conn, _ = srv.accept(); conn.settimeout(0.5)
data = b""
while True:
    try:
        chunk = conn.recv(65536)
    except socket.timeout:
        break
    if not chunk:
        break
    data += chunk
open(path, "wb").write(data)
conn.close(); srv.close()
PY
  local listener=$!
  sleep 1
  "$@" >/dev/null 2>&1 </dev/null || true
  wait "$listener"
  echo "$name: $(stat -c %s "$out/$name.bin") bytes"
}

s_client=(timeout 5 openssl s_client -connect "127.0.0.1:$port")
capture openssl-tls12-sni "${s_client[@]}" -servername login.example.com -tls1_2
capture openssl-tls13-sni "${s_client[@]}" -servername api.example.com -tls1_3
capture openssl-nosni "${s_client[@]}" -noservername
capture curl-sni timeout 5 curl -s --resolve "login.example.com:$port:127.0.0.1" "https://login.example.com:$port/"
# Large: a long ALPN list pushes the ClientHello past 1500 bytes, as post-quantum key shares do.
alpn=$(python3 -c 'print(",".join("proto-%03d-%s" % (i, "x" * 40) for i in range(40)))')
capture openssl-large-sni "${s_client[@]}" -servername login.example.com -alpn "$alpn"
