#!/usr/bin/env bash
# Creates the development certificates of the reference tutorial, with the same names, subjects and
# Password1 p12 passwords, plus a few more for the tests. DEVELOPMENT ONLY: every key here is a
# throw-away test fixture.
#
#   scripts/create-certs.sh [--force]      writes into $CERTS_DIR (default: ./certs)
#   KEY_TYPE=ecdsa scripts/create-certs.sh uses ECDSA P-256 instead of RSA 2048
#
# Files:
#   root.pem / root.key                 self-signed root CA ("Example Root CA")
#   example.tls.{pem,key,p12}           *.example.com server cert (SANs for every host of the system)
#   example.client.{p12,pem,key}        CN=demo-partner, clientAuth
#   other.client.{p12,pem,key}          CN=other-partner, same CA (a second partner)
#   revoked.client.{p12,pem,key}        CN=revoked-partner, same CA, listed in root.crl.pem
#   untrusted.client.{p12,pem,key}      CN=demo-partner issued by untrusted-root.pem, which nothing trusts
#   root.crl.pem                        CRL of the root CA revoking revoked-partner
#   root.empty.crl.pem                  an earlier CRL of the root CA that revokes nothing
#   example-org.tls.{pem,key,p12}       *.example.org server cert (SNI-based certificate selection)
#   gateway-signing.{ps256,es256}.key   keys for the JWTs the gateway issues itself
#   introspection.client.{p12,pem,key}  CN=gateway-introspection, same CA: the gateway's certificate for
#                                       tls_client_auth at the introspection endpoint
#   introspect-jwt.es256.key            EC P-256 key the gateway signs private_key_jwt client assertions with
#   admin-ca.{pem,key}                  CN=Example Admin CA: a CA of its own for operators, so that no
#                                       partner certificate (root's) can even complete a handshake there
#   admin.client.{p12,pem,key}          CN=gateway-admin, from admin-ca: an operator's certificate for the admin listener
#   hop-ca.{pem,key}                    CN=Example Hop CA: the CA of the balancer in front (trusted_hop.hop_ca)
#   hop.client.{p12,pem,key}            CN=edge-balancer, from hop-ca: the balancer's certificate at the hop listener
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=${CERTS_DIR:-$here/certs}
key_type=${KEY_TYPE:-rsa}
password=Password1
days=365

if [[ -f "$out/root.pem" && -f "$out/root.crl.pem" && -f "$out/introspect-jwt.es256.key" && -f "$out/admin-ca.pem" \
  && -f "$out/hop.client.pem" \
  && "${1:-}" != "--force" ]]; then
  echo "certificates already exist in $out (use --force to recreate)"
  exit 0
fi
command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }
mkdir -p "$out"
cd "$out"
rm -rf ca-db

new_key() {
  case "$key_type" in
    rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null ;;
    ecdsa) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" ;;
    *) echo "KEY_TYPE must be rsa or ecdsa" >&2; exit 1 ;;
  esac
}

new_ca() { # name subject
  new_key "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days 3650 -subj "$2" -out "$1.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}

issue() { # name subject ca extensions-file
  new_key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -days "$days" -sha256 \
    -extfile "$4" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr"
  openssl pkcs12 -export -inkey "$1.key" -in "$1.pem" -name "$1" -passout "pass:$password" -out "$1.p12"
}

new_ca root "/CN=Example Root CA"
new_ca untrusted-root "/CN=Untrusted Root CA"
new_ca admin-ca "/CN=Example Admin CA"

cat > server.ext <<'EOF'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:*.example.com,DNS:example.com,DNS:login.example.com,DNS:api.example.com,DNS:login-internal.example.com,DNS:api-internal.example.com
EOF
cat > client.ext <<'EOF'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
EOF

issue example.tls "/CN=*.example.com" root server.ext
sed 's/^subjectAltName=.*/subjectAltName=DNS:*.example.org,DNS:example.org/' server.ext > server-org.ext
issue example-org.tls "/CN=*.example.org" root server-org.ext
issue example.client "/CN=demo-partner" root client.ext
issue other.client "/CN=other-partner" root client.ext
issue revoked.client "/CN=revoked-partner" root client.ext
issue untrusted.client "/CN=demo-partner" untrusted-root client.ext
# The gateway as a client of the identity server's introspection endpoint (tls_client_auth, RFC 8705).
issue introspection.client "/CN=gateway-introspection" root client.ext
# An operator of the admin listener (cache purge), from the admin CA.
issue admin.client "/CN=gateway-admin" admin-ca client.ext
# The TLS-terminating balancer in front (trusted_hop): its own CA, so that no partner certificate
# can pass for the hop, and the certificate it presents to the gateway's hop listener.
new_ca hop-ca "/CN=Example Hop CA"
issue hop.client "/CN=edge-balancer" hop-ca client.ext

# Keys the gateway signs its own JWTs with (json and rfc9701 introspection modes).
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out gateway-signing.ps256.key 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out gateway-signing.es256.key
# Key the gateway signs its RFC 7523 client assertions with (private_key_jwt at the introspection endpoint, ES256).
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out introspect-jwt.es256.key

# A CRL of the root CA that revokes revoked-partner (partner offboarding).
mkdir -p ca-db && touch ca-db/index.txt && echo 1000 > ca-db/crlnumber
cat > ca.cnf <<'EOF'
[ ca ]
default_ca = root
[ root ]
database = ca-db/index.txt
crlnumber = ca-db/crlnumber
default_md = sha256
default_crl_days = 30
EOF
openssl ca -config ca.cnf -keyfile root.key -cert root.pem -gencrl -out root.empty.crl.pem 2>/dev/null
openssl ca -config ca.cnf -keyfile root.key -cert root.pem -revoke revoked.client.pem 2>/dev/null
openssl ca -config ca.cnf -keyfile root.key -cert root.pem -gencrl -out root.crl.pem 2>/dev/null
rm -rf ca-db ca.cnf server.ext server-org.ext client.ext ./*.srl
# openssl writes keys and p12 files for their owner only; the containers of compose.yaml run as
# uid 10001 and read these throw-away fixtures through a bind mount.
chmod a+r ./*

echo "certificates written to $out"
