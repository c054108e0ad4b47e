// A real OAuth 2.0 authorization server for mtls-gateway's interop tests: node's oidc-provider configured for
// RFC 8705 (mutual-TLS client authentication and certificate-bound access tokens), RFC 7662 introspection,
// RFC 9701 JWT introspection responses and RFC 7009 revocation, on the routes of the reference's identity server.
//
// Environment (see README.md): PORT (required; 0 = any free port), CERTS_DIR, ACCESS_TOKEN_TTL, ISSUER, SIGNING_KID.
// Listens on 127.0.0.1 only and prints `oidc-provider listening on 127.0.0.1:<port>` once it accepts connections.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';

import Provider, { errors } from 'oidc-provider';

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

// Unset: the signing key's kid is its RFC 7638 thumbprint, so every start has a new key under a new kid. Set: the
// new key of every start gets this kid, so a restart rotates the key under the SAME kid, which a verifier that
// caches keys by kid only notices if it refetches the JWKS when a signature fails.
function readSigningKid() {
  const raw = process.env.SIGNING_KID;
  if (raw === undefined) return undefined;
  if (!/^[\x21-\x7e]{1,128}$/.test(raw)) {
    fail(`SIGNING_KID must be 1 to 128 printable ASCII characters without spaces, got ${JSON.stringify(raw)}`);
  }
  return raw;
}

// The private key of the private_key_jwt introspection client (made by scripts/create-certs.sh). Only its public
// half is used here: it is registered as that client's `jwks`.
const INTROSPECT_JWT_KEY_FILE = 'introspect-jwt.es256.key';

function clientAssertionJwk(pem) {
  let key;
  try {
    key = crypto.createPublicKey(pem);
  } catch (err) {
    return fail(`${INTROSPECT_JWT_KEY_FILE}: not a PEM key: ${err.message}`);
  }
  const jwk = key.export({ format: 'jwk' });
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256') {
    fail(`${INTROSPECT_JWT_KEY_FILE} must be an EC P-256 key (ES256), got kty ${jwk.kty} crv ${jwk.crv}`);
  }
  // kid = RFC 7638 thumbprint (members crv, kty, x, y in lexicographic order)
  const kid = crypto
    .createHash('sha256')
    .update(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }))
    .digest('base64url');
  return { ...jwk, kid, alg: 'ES256', use: 'sig' };
}

function readCerts() {
  const dir = process.env.CERTS_DIR ?? '/work/main/certs';
  if (!path.isAbsolute(dir)) fail(`CERTS_DIR must be an absolute path, got ${JSON.stringify(dir)}`);
  const read = (name) => {
    const file = path.join(dir, name);
    try {
      return fs.readFileSync(file);
    } catch (err) {
      return fail(`cannot read ${file}: ${err.message} (create the certificates with scripts/create-certs.sh; `
        + 'add --force to recreate a set made before this file existed)');
    }
  };
  return {
    tls: { ca: read('root.pem'), cert: read('example.tls.pem'), key: read('example.tls.key') },
    introspectJwtKey: read(INTROSPECT_JWT_KEY_FILE),
  };
}

const port = readPort();
const accessTokenTtl = readTtl();
const issuer = readIssuer();
const signingKid = readSigningKid();
const { tls, introspectJwtKey } = readCerts();

// ---------------------------------------------------------------------------------------------------------------
// Signing key: RSA 2048, generated at startup (every run has a new key; fetch the JWKS from the server)
// ---------------------------------------------------------------------------------------------------------------

function generateSigningJwk() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  // kid = SIGNING_KID, or else the RFC 7638 JWK thumbprint of the public key (members e, kty, n in
  // lexicographic order)
  const kid = signingKid ?? crypto
    .createHash('sha256')
    .update(JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n }))
    .digest('base64url');
  return { ...jwk, kid, use: 'sig' };
}

// ---------------------------------------------------------------------------------------------------------------
// Resource servers (RFC 8707 resource indicators)
// ---------------------------------------------------------------------------------------------------------------

// Resource indicator (normalized by URL) -> the `aud` of its tokens: the API's host name, the audience the
// gateway puts in the JWTs it issues. A token request without `resource` is for the default API.
const DEFAULT_RESOURCE = 'https://api.example.com';
const RESOURCE_SERVERS = new Map([
  ['https://api.example.com/', 'api.example.com'],
  ['https://other-api.example.com/', 'other-api.example.com'],
]);
const KNOWN_RESOURCES = [...RESOURCE_SERVERS.keys()].map((url) => url.replace(/\/$/, '')).join(', ');

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

// A resource server's client: it only introspects (no grants), with any client's tokens (see allowedPolicy).
// oidc-provider authenticates a client at the introspection endpoint with its token_endpoint_auth_method.
const introspectionClient = (clientId, authentication) => ({
  client_id: clientId,
  grant_types: [],
  response_types: [],
  redirect_uris: [],
  // RFC 9701: answer `Accept: application/token-introspection+jwt` with a signed JWT
  introspection_signed_response_alg: 'PS256',
  ...authentication,
});

const introspectionClients = [
  introspectionClient('introspect-client', {
    client_secret: 'Password1',
    token_endpoint_auth_method: 'client_secret_basic',
  }),
  introspectionClient('introspect-post', {
    client_secret: 'Password1',
    token_endpoint_auth_method: 'client_secret_post',
  }),
  // RFC 7523: client_assertion_type urn:ietf:params:oauth:client-assertion-type:jwt-bearer and an ES256
  // client_assertion with iss = sub = introspect-jwt, a unique jti, exp, and aud = the issuer (or the URL of the
  // introspection or token endpoint, as reached: scheme, Host header and path)
  introspectionClient('introspect-jwt', {
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    jwks: { keys: [clientAssertionJwk(introspectJwtKey)] },
  }),
  introspectionClient('introspect-mtls', {
    token_endpoint_auth_method: 'tls_client_auth',
    tls_client_auth_subject_dn: 'CN=gateway-introspection',
  }),
];
const RESOURCE_SERVER_CLIENTS = new Set(introspectionClients.map((client) => client.client_id));

const CLIENT_AUTH_METHODS = ['tls_client_auth', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'];
const CLIENT_AUTH_SIGNING_ALGS = ['ES256', 'PS256', 'RS256'];

// RFC 9449: a client without a certificate that binds its tokens to the key of its DPoP proofs. oidc-provider
// refuses a client with both tls_client_certificate_bound_access_tokens and dpop_bound_access_tokens.
const dpopClient = {
  client_id: 'dpop-client',
  client_secret: 'Password1',
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  scope: 'transactions',
  dpop_bound_access_tokens: true,
};

const configuration = {
  clients: [
    tlsClient('partner-client', 'CN=demo-partner'),
    tlsClient('other-client', 'CN=other-partner'),
    dpopClient,
    ...introspectionClients,
  ],
  clientAuthMethods: CLIENT_AUTH_METHODS,
  scopes: ['transactions'],
  jwks: { keys: [generateSigningJwk()] },
  enabledJWA: {
    introspectionSigningAlgValues: ['PS256', 'RS256'],
    idTokenSigningAlgValues: ['PS256', 'RS256'],
    dPoPSigningAlgValues: ['ES256', 'PS256', 'EdDSA'],
    clientAuthSigningAlgValues: CLIENT_AUTH_SIGNING_ALGS,
  },
  // Static additions to the discovery documents (RFC 8414 section 2)
  discovery: {
    introspection_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS,
    introspection_endpoint_auth_signing_alg_values_supported: CLIENT_AUTH_SIGNING_ALGS,
    revocation_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS,
    revocation_endpoint_auth_signing_alg_values_supported: CLIENT_AUTH_SIGNING_ALGS,
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
      // introspect any token; say it explicitly: the resource-server clients (introspect-*) may introspect
      // every client's tokens, any other client only its own.
      allowedPolicy(ctx, client, token) {
        return RESOURCE_SERVER_CLIENTS.has(client.clientId) || client.clientId === token.clientId;
      },
    },
    // RFC 8707: `resource` picks the API a token is for, and so its `aud`; without it, the default API.
    resourceIndicators: {
      enabled: true,
      defaultResource(ctx, client, oneOf) {
        return oneOf ?? DEFAULT_RESOURCE;
      },
      useGrantedResource() {
        return false;
      },
      getResourceServerInfo(ctx, resourceIndicator) {
        const audience = RESOURCE_SERVERS.get(URL.parse(resourceIndicator)?.href);
        if (!audience) {
          throw new errors.InvalidTarget(`unknown resource indicator; known: ${KNOWN_RESOURCES}`);
        }
        return {
          audience,
          scope: 'transactions',
          accessTokenTTL: accessTokenTtl,
          accessTokenFormat: 'opaque',
        };
      },
    },
    jwtIntrospection: { enabled: true },
    // RFC 9449 at the token endpoint: proofs with ES256, PS256 or EdDSA; introspection then answers
    // token_type DPoP and cnf.jkt.
    dPoP: { enabled: true },
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

// oidc-provider accepts a client secret by either mechanism, whatever the client registered. Hold every client to
// the one it registered, so that a client that sends its secret the other way is refused, as a strict server would.
// The check runs on the way out (the body is only parsed inside oidc-provider), so it refuses the answer; the only
// clients with secrets are the introspection clients, which have no grants and no tokens to revoke.
const SECRET_EVENTS = { token: 'grant.error', introspection: 'introspection.error', revocation: 'revocation.error' };
provider.use(async (ctx, next) => {
  await next();
  const registered = ctx.oidc?.client?.clientAuthMethod;
  if (ctx.status >= 400 || (registered !== 'client_secret_basic' && registered !== 'client_secret_post')) return;
  let used;
  if (ctx.oidc.params?.client_secret !== undefined) used = 'client_secret_post';
  else if (ctx.headers.authorization !== undefined) used = 'client_secret_basic';
  if (used === registered) return;
  const event = SECRET_EVENTS[ctx.oidc.route] ?? `${ctx.oidc.route}.error`;
  process.stderr.write(`oidc-provider: ${event}: invalid_client (client authentication failed: the client sent its `
    + `secret with ${used}, but is registered for ${registered})\n`);
  ctx.status = 401;
  ctx.remove('Content-Type');
  if (used === 'client_secret_basic') {
    ctx.set('WWW-Authenticate', `Basic realm="${provider.issuer}", error="invalid_client", `
      + 'error_description="client authentication failed"');
  }
  ctx.body = { error: 'invalid_client', error_description: 'client authentication failed' };
});

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

// Discovery. oidc-provider serves its metadata at /.well-known/openid-configuration and
// /.well-known/oauth-authorization-server only, which are the right places for an issuer without a path. For an
// issuer with a path (the default one), the documents are also served where the specifications put them:
// {issuer}/.well-known/openid-configuration (OpenID Connect Discovery 1.0, section 4) and
// /.well-known/oauth-authorization-server{issuer path} (RFC 8414, section 3.1), and at
// /.well-known/openid-configuration{issuer path} (the RFC 8414 insertion with the OpenID suffix, section 5). The
// path is rewritten before oidc-provider sees the request, so the endpoint URLs in the documents stay those of the
// real routes.
const issuerPath = new URL(issuer).pathname.replace(/\/+$/, '');
const DISCOVERY_ALIASES = new Map(issuerPath === '' ? [] : [
  [`${issuerPath}/.well-known/openid-configuration`, '/.well-known/openid-configuration'],
  [`/.well-known/oauth-authorization-server${issuerPath}`, '/.well-known/oauth-authorization-server'],
  [`/.well-known/openid-configuration${issuerPath}`, '/.well-known/openid-configuration'],
]);

const providerCallback = provider.callback();
function handleRequest(req, res) {
  const query = req.url.indexOf('?');
  const pathname = query === -1 ? req.url : req.url.slice(0, query);
  const target = DISCOVERY_ALIASES.get(pathname);
  if (target !== undefined) req.url = target + (query === -1 ? '' : req.url.slice(query));
  return providerCallback(req, res);
}

let server;
try {
  server = https.createServer({
    ...tls,
    requestCert: true, // ask every client for a certificate ...
    rejectUnauthorized: false, // ... but let those without one (introspect-client) in; see certificateAuthorized
  }, handleRequest);
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
