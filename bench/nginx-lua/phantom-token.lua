-- Phantom token (the reference's first plugin): swaps the opaque access token in Authorization for the
-- JWT that the identity server's introspection endpoint answers with `Accept: application/jwt`.
-- Results are cached in a shared dict (all workers) keyed by SHA-256 of the token; an entry lives for
-- min(Cache-Control max-age, JWT exp - now, max_ttl), fixed at insertion (a hit never extends it).
-- Introspection goes through ngx.location.capture to an internal proxy_pass location, because Debian
-- has no lua-resty-http; that subrequest API does not work when the client speaks HTTP/2.
local common = require "mtls-common"

local conf = {
  location = "/_introspect", -- internal location that proxy_passes to the introspection endpoint
  max_ttl = 300,             -- seconds: a revoked token stays usable at most this long
}
local cache -- ngx.shared.DICT, set by configure()

local _M = {}

function _M.configure(c)
  for k, v in pairs(c) do conf[k] = v end
  cache = ngx.shared[conf.dict or "phantom_token"]
  assert(cache, "lua_shared_dict for the phantom token cache is missing")
end

-- The token of `Authorization: Bearer <token>` (scheme case-insensitive), or nil.
local function bearer()
  local h = ngx.var.http_authorization
  if not h then return nil end
  local scheme, token = h:match("^(%a+) +([%w%-%._~%+/]+=*)$") -- RFC 6750 b64token
  if scheme and scheme:lower() == "bearer" then return token end
  return nil
end

local function header(res, name, lower)
  return res.header[name] or res.header[lower]
end

-- Returns the JWT, or nil and the status to refuse with (401 inactive, 503 identity server trouble).
local function introspect(token, key)
  local res = ngx.location.capture(conf.location, {
    method = ngx.HTTP_POST,
    body = "token=" .. ngx.escape_uri(token), -- form-URL-encoded, unlike the reference
  })
  if res.status == 204 then return nil, 401 end -- inactive, unknown or expired
  if res.status ~= 200 or res.truncated then
    ngx.log(ngx.ERR, "introspection failed: HTTP ", res.status)
    return nil, 503
  end
  local jwt = res.body
  local claims = jwt and common.jwt_claims(jwt)
  if not claims then
    ngx.log(ngx.ERR, "introspection answered something that is not a JWT")
    return nil, 503
  end
  local ttl = conf.max_ttl
  local max_age = tonumber((header(res, "Cache-Control", "cache-control") or ""):match("max%-age=(%d+)"))
  if max_age and max_age < ttl then ttl = max_age end
  local exp = tonumber(claims.exp)
  if exp then
    local left = exp - ngx.time()
    if left <= 0 then return nil, 401 end
    if left < ttl then ttl = left end
  end
  if ttl > 0 then cache:set(key, jwt, ttl) end
  return jwt
end

function _M.run()
  local token = bearer()
  if not token then return common.unauthorized(false) end
  local key = ngx.encode_base64(common.sha256(token)) -- never the token itself
  local jwt = cache:get(key)
  if not jwt then
    local refuse
    jwt, refuse = introspect(token, key)
    if not jwt then
      if refuse == 401 then return common.unauthorized(true) end
      return common.unavailable()
    end
  end
  ngx.req.set_header("Authorization", "Bearer " .. jwt)
end

return _M
