// Prints an RFC 7523 client assertion (private_key_jwt) for manual requests to server.mjs, signed ES256 with an
// EC P-256 private key such as introspect-jwt.es256.key:
//
//   node client-assertion.mjs <private key PEM file> <client_id> <aud> [lifetime seconds, default 60]
//
// Claims: iss = sub = client_id, aud, iat, exp = iat + lifetime, a random jti (the server refuses a jti it has
// seen). Header: alg ES256, typ JWT, kid = the key's RFC 7638 thumbprint (the kid server.mjs registers).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';

const [file, clientId, aud, lifetime = '60'] = process.argv.slice(2);
if (!file || !clientId || !aud || !/^\d+$/.test(lifetime)) {
  process.stderr.write('usage: node client-assertion.mjs <private key PEM file> <client_id> <aud> [lifetime seconds]\n');
  process.exit(2);
}

const key = crypto.createPrivateKey(fs.readFileSync(file));
const jwk = crypto.createPublicKey(key).export({ format: 'jwk' });
if (jwk.kty !== 'EC' || jwk.crv !== 'P-256') {
  process.stderr.write(`${file}: an EC P-256 key is needed for ES256\n`);
  process.exit(2);
}
const kid = crypto
  .createHash('sha256')
  .update(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }))
  .digest('base64url');

const now = Math.floor(Date.now() / 1000);
const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
const input = `${b64({ alg: 'ES256', typ: 'JWT', kid })}.${b64({
  iss: clientId,
  sub: clientId,
  aud,
  jti: crypto.randomUUID(),
  iat: now,
  exp: now + Number(lifetime),
})}`;
const signature = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
process.stdout.write(`${input}.${signature.toString('base64url')}\n`);
