// A real OAuth 2.0 authorization server for mtls-gateway's interop tests: node's oidc-provider configured for
// RFC 8705 (mutual-TLS client authentication and certificate-bound access tokens), RFC 7662 introspection,
// RFC 9701 JWT introspection responses and RFC 7009 revocation, on the routes of the reference's identity server.
//
// Environment (see README.md): PORT (required; 0 = any free port), CERTS_DIR, ACCESS_TOKEN_TTL, ISSUER.
// Listens on 127.0.0.1 only and prints `oidc-provider listening on 127.0.0.1:<port>` once it accepts connections.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';

import Provider from 'oidc-provider';

function fail(message) {
  process.stderr.write(`oidc-provider: ${message}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------------------------
// Configuration from the environment
// ---------------------------------------------------------------------------------------------------------------

function readPort() {
  const raw = process.env.PORT;
  if (raw === undefined || raw === '') fail('PORT is required (a TCP port, 0 for any free port)');
  if (!/^\d+$/.test(raw) || Number(raw) > 65535) fail(`PORT must be an integer 0..65535, got ${JSON.stringify(raw)}`);
  return Number(raw);
}

function readTtl() {
  const raw = process.env.ACCESS_TOKEN_TTL ?? '600';
  if (!/^\d+$/.test(raw) || Number(raw) < 1 || !Number.isSafeInteger(Number(raw))) {
    fail(`ACCESS_TOKEN_TTL must be a positive integer number of seconds, got ${JSON.stringify(raw)}`);
  }
  return Number(raw);
}

function readIssuer() {
  const raw = process.env.ISSUER ?? 'https://login.example.com/oauth/v2/oauth-anonymous';
  let url;
  try {
    url = new URL(raw);
  } catch {
    fail(`ISSUER must be an absolute https URL, got ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== 'https:' || url.search || url.hash) {
    fail(`ISSUER must be an https URL without query or fragment, got ${JSON.stringify(raw)}`);
  }
  return raw;
}

function readCerts() {
  const dir = process.env.CERTS_DIR ?? '/work/main/certs';
  if (!path.isAbsolute(dir)) fail(`CERTS_DIR must be an absolute path, got ${JSON.stringify(dir)}`);
  const read = (name) => {
    const file = path.join(dir, name);
    try {
      return fs.readFileSync(file);
    } catch (err) {
      return fail(`cannot read ${file}: ${err.message} (create the certificates with scripts/create-certs.sh)`);
    }
  };
  return { ca: read('root.pem'), cert: read('example.tls.pem'), key: read('example.tls.key') };
}

const port = readPort();
const accessTokenTtl = readTtl();
const issuer = readIssuer();
const tls = readCerts();

// ---------------------------------------------------------------------------------------------------------------
// Signing key: RSA 2048, generated at startup (every run has a new key; fetch the JWKS from the server)
// ---------------------------------------------------------------------------------------------------------------

function generateSigningJwk() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  // kid = RFC 7638 JWK thumbprint of the public key (members e, kty, n in lexicographic order)
  const kid = crypto
    .createHash('sha256')
    .update(JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n }))
    .digest('base64url');
  return { ...jwk, kid, use: 'sig' };
}

// ---------------------------------------------------------------------------------------------------------------
// mTLS helpers
// ---------------------------------------------------------------------------------------------------------------

function tlsSocket(ctx) {
  return ctx.socket ?? ctx.req?.socket;
}

// The client's leaf certificate as a node X509Certificate (oidc-provider 9.x accepts it as well as PEM), or
// undefined when the client presented none.
function getCertificate(ctx) {
  const socket = tlsSocket(ctx);
  if (typeof socket?.getPeerX509Certificate !== 'function') return undefined;
  return socket.getPeerX509Certificate() ?? undefined;
}

// True only if the chain was verified against root.pem (the server runs with rejectUnauthorized: false so that
// introspection clients without a certificate can connect; this is where an untrusted certificate is refused).
function certificateAuthorized(ctx) {
  return tlsSocket(ctx)?.authorized === true;
}

// Distinguished names. RFC 4514 strings list RDNs from the most specific (CN) to the least (C); node's
// X509Certificate#subject lists them one per line in certificate (ASN.1) order, i.e. reversed, with multi-valued
// RDNs joined by " + " and values escaped as in RFC 2253. Both are parsed into [[type, value], ...] per RDN,
// the RFC 4514 one is reversed, and they are compared: attribute types case-insensitively (short names and OIDs
// normalized), values exactly after unescaping, AVAs within one RDN in any order.

const ATTRIBUTE_TYPES = new Map(Object.entries({
  '2.5.4.3': 'CN',
  COMMONNAME: 'CN',
  '2.5.4.4': 'SN',
  SURNAME: 'SN',
  '2.5.4.5': 'SERIALNUMBER',
  '2.5.4.6': 'C',
  COUNTRYNAME: 'C',
  '2.5.4.7': 'L',
  LOCALITYNAME: 'L',
  '2.5.4.8': 'ST',
  S: 'ST',
  STATEORPROVINCENAME: 'ST',
  '2.5.4.9': 'STREET',
  STREETADDRESS: 'STREET',
  '2.5.4.10': 'O',
  ORGANIZATIONNAME: 'O',
  '2.5.4.11': 'OU',
  ORGANIZATIONALUNITNAME: 'OU',
  '2.5.4.97': 'ORGANIZATIONIDENTIFIER',
  '0.9.2342.19200300.100.1.25': 'DC',
  DOMAINCOMPONENT: 'DC',
  '0.9.2342.19200300.100.1.1': 'UID',
  USERID: 'UID',
  '1.2.840.113549.1.9.1': 'EMAILADDRESS',
  E: 'EMAILADDRESS',
  EMAIL: 'EMAILADDRESS',
}));

function normalizeType(type) {
  const t = type.trim().replace(/^oid\./i, '').toUpperCase();
  return ATTRIBUTE_TYPES.get(t) ?? t;
}

// Splits on `sep` characters that are not escaped with a backslash.
function splitUnescaped(text, seps) {
  const parts = [];
  let current = '';
  for (let i = 0; i < text.length; i += 1) {
    const ch = text[i];
    if (ch === '\\' && i + 1 < text.length) {
      current += ch + text[i + 1];
      i += 1;
    } else if (seps.includes(ch)) {
      parts.push(current);
      current = '';
    } else {
      current += ch;
    }
  }
  parts.push(current);
  return parts;
}

// RFC 4514 section 3 value unescaping: `\` + special character, or `\` + two hex digits (UTF-8 bytes).
// Unescaped leading and trailing spaces are insignificant.
function unescapeValue(raw) {
  let start = 0;
  let end = raw.length;
  while (start < end && raw[start] === ' ') start += 1;
  while (end > start && raw[end - 1] === ' ' && !isEscapedAt(raw, end - 1)) end -= 1;
  const text = raw.slice(start, end);
  const bytes = [];
  for (let i = 0; i < text.length; i += 1) {
    const ch = text[i];
    if (ch === '\\') {
      const hex = text.slice(i + 1, i + 3);
      if (/^[0-9a-fA-F]{2}$/.test(hex)) {
        bytes.push(parseInt(hex, 16));
        i += 2;
      } else if (i + 1 < text.length) {
        bytes.push(...Buffer.from(text[i + 1], 'utf8'));
        i += 1;
      } else {
        throw new Error('dangling escape');
      }
    } else {
      bytes.push(...Buffer.from(ch, 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

function isEscapedAt(text, index) {
  let backslashes = 0;
  for (let i = index - 1; i >= 0 && text[i] === '\\'; i -= 1) backslashes += 1;
  return backslashes % 2 === 1;
}

function parseRdn(rdn) {
  return splitUnescaped(rdn, '+').map((ava) => {
    const eq = ava.indexOf('=');
    if (eq <= 0) throw new Error(`malformed attribute ${JSON.stringify(ava)}`);
    return [normalizeType(ava.slice(0, eq)), unescapeValue(ava.slice(eq + 1))];
  }).sort(([a, av], [b, bv]) => (a + '=' + av).localeCompare(b + '=' + bv));
}

// RFC 4514 string -> RDNs in certificate order (least specific first).
function parseRfc4514(dn) {
  if (dn.trim() === '') return [];
  return splitUnescaped(dn, ',;').map(parseRdn).reverse();
}

// node's X509Certificate#subject -> RDNs in certificate order.
function parseNodeSubject(subject) {
  return subject.split('\n').filter((line) => line !== '').map(parseRdn);
}

function sameRdns(a, b) {
  return a.length === b.length && a.every((rdn, i) => rdn.length === b[i].length
    && rdn.every(([type, value], j) => type === b[i][j][0] && value === b[i][j][1]));
}

function subjectDnMatches(cert, expected) {
  try {
    return sameRdns(parseNodeSubject(cert.subject ?? ''), parseRfc4514(expected));
  } catch (err) {
    process.stderr.write(`oidc-provider: cannot compare subject DN ${JSON.stringify(expected)}: ${err.message}\n`);
    return false;
  }
}

// node's X509Certificate#subjectAltName: "DNS:a, IP Address:1.2.3.4, email:x@y, URI:..." with values that need it
// written as JSON strings.
function subjectAltNames(cert) {
  const names = [];
  const re = /(DNS|IP Address|email|URI):("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)/g;
  for (const [, kind, value] of (cert.subjectAltName ?? '').matchAll(re)) {
    names.push([kind, value.startsWith('"') ? JSON.parse(value) : value]);
  }
  return names;
}

const SAN_KINDS = {
  tls_client_auth_san_dns: 'DNS',
  tls_client_auth_san_ip: 'IP Address',
  tls_client_auth_san_email: 'email',
  tls_client_auth_san_uri: 'URI',
};

function certificateSubjectMatches(ctx, property, expected) {
  const cert = getCertificate(ctx);
  if (!cert) return false;
  if (property === 'tls_client_auth_subject_dn') return subjectDnMatches(cert, expected);
  const kind = SAN_KINDS[property];
  if (!kind) return false;
  return subjectAltNames(cert).some(([k, v]) => k === kind && v === expected);
}

// ---------------------------------------------------------------------------------------------------------------
// Provider
// ---------------------------------------------------------------------------------------------------------------

const tlsClient = (clientId, subjectDn) => ({
  client_id: clientId,
  token_endpoint_auth_method: 'tls_client_auth',
  tls_client_auth_subject_dn: subjectDn,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  scope: 'transactions',
  tls_client_certificate_bound_access_tokens: true,
});

const configuration = {
  clients: [
    tlsClient('partner-client', 'CN=demo-partner'),
    tlsClient('other-client', 'CN=other-partner'),
    {
      client_id: 'introspect-client',
      client_secret: 'Password1',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
      // RFC 9701: answer `Accept: application/token-introspection+jwt` with a signed JWT
      introspection_signed_response_alg: 'PS256',
    },
  ],
  clientAuthMethods: ['tls_client_auth', 'client_secret_basic'],
  scopes: ['transactions'],
  jwks: { keys: [generateSigningJwk()] },
  enabledJWA: {
    introspectionSigningAlgValues: ['PS256', 'RS256'],
    idTokenSigningAlgValues: ['PS256', 'RS256'],
  },
  routes: {
    token: '/oauth/v2/oauth-token-mutual-tls',
    introspection: '/oauth/v2/oauth-introspect',
    revocation: '/oauth/v2/oauth-revoke',
    jwks: '/oauth/v2/oauth-anonymous/jwks',
  },
  ttl: {
    AccessToken: accessTokenTtl,
    ClientCredentials: accessTokenTtl,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // Which client may introspect which token. The default lets any authenticated confidential client
      // introspect any token; say it explicitly: the resource-server client may introspect every client's
      // tokens, any other client only its own.
      allowedPolicy(ctx, client, token) {
        return client.clientId === 'introspect-client' || client.clientId === token.clientId;
      },
    },
    jwtIntrospection: { enabled: true },
    revocation: { enabled: true },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      tlsClientAuth: true,
      getCertificate,
      certificateAuthorized,
      certificateSubjectMatches,
    },
  },
};

let provider;
try {
  provider = new Provider(issuer, configuration);
} catch (err) {
  fail(`invalid provider configuration: ${err.message}`);
}

for (const event of ['server_error', 'grant.error', 'introspection.error', 'revocation.error', 'jwks.error']) {
  provider.on(event, (ctx, err) => {
    const detail = [err?.error_description, err?.error_detail].filter(Boolean).join(': ');
    const suffix = detail ? ` (${detail})` : '';
    process.stderr.write(`oidc-provider: ${event}: ${err?.message ?? err}${suffix}\n`);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// HTTPS server
// ---------------------------------------------------------------------------------------------------------------

let server;
try {
  server = https.createServer({
    ...tls,
    requestCert: true, // ask every client for a certificate ...
    rejectUnauthorized: false, // ... but let those without one (introspect-client) in; see certificateAuthorized
  }, provider.callback());
} catch (err) {
  fail(`cannot set up TLS from CERTS_DIR: ${err.message}`);
}

server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${port}: ${err.message}`));

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`oidc-provider listening on 127.0.0.1:${server.address().port}\n`);
});

// State is in memory only, so there is nothing to drain: stop at once.
function shutdown(signal) {
  process.stderr.write(`oidc-provider: ${signal}, exiting\n`);
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
