-- Helpers shared by phantom-token.lua and cert-binding.lua. Debian 12's nginx has no lua-resty-string or
-- lua-resty-jwt, so SHA-256 comes from OpenSSL through LuaJIT's FFI, base64url from ngx.base64
-- (lua-resty-core) and JWT claims from cjson. Nothing here verifies a JWT signature: the API does that.
local ffi = require "ffi"
local b64 = require "ngx.base64"
local cjson = require "cjson.safe"

ffi.cdef [[
unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);
]]

-- nginx itself links libcrypto, so SHA256 is normally already in the process; else load it by name.
local crypto = ffi.C
if not pcall(function() return crypto.SHA256 end) then
  crypto = ffi.load("libcrypto.so.3")
end

local digest = ffi.new("unsigned char[32]") -- one per worker: no yield between SHA256 and ffi.string
local find, sub = string.find, string.sub

local UNAUTHORIZED = '{"code":"unauthorized","message":"Missing, invalid or expired access token"}'
local UNAVAILABLE = '{"code":"server_error","message":"The identity server is unavailable, please retry later"}'

local _M = {}

-- Raw 32-byte SHA-256 of a Lua string.
function _M.sha256(s)
  crypto.SHA256(s, #s, digest)
  return ffi.string(digest, 32)
end

_M.b64url = b64.encode_base64url -- no padding, as x5t#S256 wants

-- The claims of a compact JWT (header.payload.signature), or nil if it is not one.
function _M.jwt_claims(jwt)
  local a = find(jwt, ".", 1, true)
  local b = a and find(jwt, ".", a + 1, true)
  if not b then return nil end
  local json = b64.decode_base64url(sub(jwt, a + 1, b - 1))
  local claims = json and cjson.decode(json)
  if type(claims) ~= "table" then return nil end
  return claims
end

local function respond(status, body, www_authenticate)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.header["WWW-Authenticate"] = www_authenticate
  ngx.print(body)
  return ngx.exit(ngx.HTTP_OK) -- ends the request (not just this phase) with the status set above
end

-- 401 with the reference's body. As in the Rust gateway (RFC 6750 section 3.1): no error code when no
-- token came at all, error="invalid_token" when one came but was unknown, expired or bound elsewhere.
function _M.unauthorized(invalid)
  return respond(401, UNAUTHORIZED, invalid and 'Bearer error="invalid_token"' or "Bearer")
end

-- 503: the identity server could not say whether the token is active. Fail closed, cache nothing.
function _M.unavailable()
  return respond(503, UNAVAILABLE, nil)
end

return _M
