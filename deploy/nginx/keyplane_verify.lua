-- keyplane gateway: verifies each private request through keyplane's POST /v1/verify before nginx
-- proxies it to the venue's upstream. Used as `access_by_lua_file` (see nginx.conf.template).
--
-- On success the caller's identity goes upstream in X-Keyplane-* headers; on failure the client gets
-- the venue dialect's own error (Bitget or WhiteBIT status and body) verbatim, and the upstream sees
-- nothing. Any X-Keyplane-* header the client sent is removed first (keyplane_guard.lua, which runs
-- before this on every location, already did; this copy keeps the script safe where it is used alone),
-- so the upstream can trust them.
-- If keyplane cannot be reached or answers nonsense, the request is refused (fail closed) with 503.

local cjson = require "cjson.safe"

local IDENTITY_PREFIX = "x-keyplane-"
local VERIFY_LOCATION = "/_keyplane/verify"

-- 1. strip identity headers a client may have sent
local headers, err = ngx.req.get_headers(200)
if err == "truncated" then
    ngx.status = 400
    ngx.header["Content-Type"] = "application/json"
    ngx.print('{"code":"400","msg":"too many headers"}')
    return ngx.exit(ngx.HTTP_OK)
end
for name, _ in pairs(headers) do
    if string.sub(name, 1, #IDENTITY_PREFIX) == IDENTITY_PREFIX then
        ngx.req.clear_header(name)
        headers[name] = nil
    end
end

-- 2. the exact body bytes (signatures cover them); bodies kept in memory by client_body_buffer_size
ngx.req.read_body()
local body = ngx.req.get_body_data()
if body == nil then
    local path = ngx.req.get_body_file()
    if path ~= nil then
        local file = io.open(path, "rb")
        if file ~= nil then
            body = file:read("*a")
            file:close()
        end
    end
end
body = body or ""

local call = cjson.encode({
    method = ngx.req.get_method(),
    uri = ngx.var.request_uri,          -- as received: percent-encoding and query untouched
    headers = headers,
    body_base64 = ngx.encode_base64(body),
    client_ip = ngx.var.remote_addr,    -- after the realip module, when nginx sits behind a balancer
})

-- 3. ask keyplane
local res = ngx.location.capture(VERIFY_LOCATION, { method = ngx.HTTP_POST, body = call })
local verdict = res and res.status == 200 and cjson.decode(res.body) or nil
if type(verdict) ~= "table" then
    ngx.log(ngx.ERR, "keyplane verify failed: status ", res and res.status or "none")
    ngx.status = 503
    ngx.header["Content-Type"] = "application/json"
    ngx.print('{"code":"503","msg":"verification unavailable"}')
    return ngx.exit(ngx.HTTP_OK)
end

-- 4a. refused: the dialect's own answer, verbatim
if verdict.valid ~= true then
    local answer = verdict.error
    if type(answer) ~= "table" then
        answer = { status = 401, content_type = "application/json", body = '{"code":"401","msg":"unauthorized"}' }
    end
    ngx.status = tonumber(answer.status) or 401
    ngx.header["Content-Type"] = answer.content_type or "application/json"
    ngx.header["X-Keyplane-Code"] = verdict.code
    ngx.print(answer.body or "")
    return ngx.exit(ngx.HTTP_OK)
end

-- 4b. accepted: who the caller is, for the upstream
local identity = verdict.identity or {}
local function set(name, value)
    if value ~= nil and value ~= cjson.null then
        ngx.req.set_header(name, tostring(value))
    end
end
set("X-Keyplane-Scheme", verdict.scheme)
set("X-Keyplane-Account-Uid", identity.account_uid)
set("X-Keyplane-Main-Account-Uid", identity.main_account_uid)
set("X-Keyplane-Is-Main", identity.is_main)
set("X-Keyplane-Account-Id", identity.account_id)
set("X-Keyplane-Key-Id", identity.key_id)
set("X-Keyplane-Api-Key", identity.api_key)
if type(identity.permissions) == "table" then
    set("X-Keyplane-Permissions", table.concat(identity.permissions, ","))
end
set("X-Keyplane-Key-Type", identity.key_type)
local limit = verdict.ratelimit
if type(limit) == "table" then
    set("X-Keyplane-Ratelimit-Limit", limit.limit)
    set("X-Keyplane-Ratelimit-Remaining", limit.remaining)
    set("X-Keyplane-Ratelimit-Reset", limit.reset)
end
