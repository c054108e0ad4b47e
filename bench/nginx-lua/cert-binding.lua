-- Certificate binding (the reference's second plugin, RFC 8705): the JWT's cnf."x5t#S256" must equal
-- base64url(SHA-256(DER of this connection's client certificate)), else 401. Runs after phantom-token.lua
-- has put the JWT in Authorization. nginx already verified the certificate (chain, CRL) in the handshake.
local common = require "mtls-common"

local _M = {}

-- base64url SHA-256 of the client leaf certificate, from nginx's PEM copy of it.
local function thumbprint()
  local pem = ngx.var.ssl_client_raw_cert
  if not pem then return nil end
  local body = pem:match("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-(.-)%-%-%-%-%-END CERTIFICATE%-%-%-%-%-")
  local der = body and ngx.decode_base64((body:gsub("%s", "")))
  return der and common.b64url(common.sha256(der))
end

function _M.run()
  local h = ngx.var.http_authorization
  local jwt = h and h:match("^[Bb][Ee][Aa][Rr][Ee][Rr] +(%S+)$")
  local claims = jwt and common.jwt_claims(jwt)
  local cnf = claims and claims.cnf
  local want = type(cnf) == "table" and cnf["x5t#S256"]
  if type(want) ~= "string" then
    ngx.log(ngx.WARN, "unable to read cnf.x5t#S256 from the JWT access token")
    return common.unauthorized(true)
  end
  if thumbprint() ~= want then
    ngx.log(ngx.WARN, "the client certificate of the request and the JWT do not match")
    return common.unauthorized(true)
  end
end

return _M
