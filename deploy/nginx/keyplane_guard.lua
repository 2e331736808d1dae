-- keyplane gateway: the guard every request passes, public or private, before any location sends it on.
-- Used as `rewrite_by_lua_file` at server level (see nginx.conf.template), so every location inherits it.
--
-- 1. One path, one meaning. The request target exactly as the client sent it ($request_uri) must be
--    canonical: an absolute path of plain segments, then optionally a query of printable ASCII. Refused:
--    dot segments (`.`, `..`, also percent-encoded, since `%` is refused), doubled or trailing slashes,
--    backslashes, any percent-encoding or other punctuation in the path (`;` parameters included),
--    control characters, spaces, `#`, non-ASCII.
--    nginx matches locations on its normalized $uri (dots resolved, slashes merged, %XX decoded) while the
--    upstream reads the raw target; for a canonical target both are the same string, so what nginx
--    routed (public or private) and what keyplane verified is what the upstream reads.
-- 2. Identity headers are keyplane's alone: every client-sent X-Keyplane-* header is removed here, so on
--    public locations too the upstream only ever sees the ones keyplane_verify.lua sets.

-- The same rule as keyplane's verifier (src/keyplane/domain/target.py), so a path means one thing on every
-- location: "/segment" repeated, a segment being A-Z a-z 0-9 - _ ~ with single dots inside (never a dot
-- segment, never a leading or trailing dot), no empty segment (no "//", no trailing "/"). Query:
-- printable ASCII except "#".
local CANONICAL = [[^(?:/[A-Za-z0-9_~-]+(?:\.[A-Za-z0-9_~-]+)*)+(?:\?[\x21\x22\x24-\x7e]*)?\z]]
local IDENTITY_PREFIX = "x-keyplane-"
local MAX_HEADERS = 200  -- the same bound keyplane_verify.lua reads; more is refused, never half-stripped

if ngx.is_subrequest then  -- the call to keyplane: already checked as the client's request
    return
end

-- HTTP 400 in the dialect the path belongs to, the very answer keyplane's verifier gives such a target
-- (Reason.BAD_TARGET): Bitget `40017` "Parameter verification failed" ([BG-ERR] in
-- shared/reference/exchanges.md; every Bitget error is HTTP 400), WhiteBIT's "Invalid payload." code 9
-- (dialects/whitebit.py INVALID_PAYLOAD). The gateway answers before keyplane sees the request.
local function refuse(target, what)
    ngx.status = 400
    ngx.header["Content-Type"] = "application/json"
    ngx.header["X-Keyplane-Code"] = "BAD_TARGET"
    if string.sub(target, 1, 8) == "/api/v2/" then
        ngx.print(string.format(
            '{"code":"40017","msg":"Parameter verification failed","requestTime":%d,"data":null}',
            math.floor(ngx.now() * 1000)
        ))
    elseif string.sub(target, 1, 8) == "/api/v4/" then
        ngx.print('{"code":9,"message":"Invalid payload."}')
    else
        ngx.print(string.format('{"code":"400","msg":"bad %s"}', what))
    end
    return ngx.exit(ngx.HTTP_OK)
end

local target = ngx.var.request_uri
if not ngx.re.find(target, CANONICAL, "jo") then
    return refuse(target, "path")
end

local headers, err = ngx.req.get_headers(MAX_HEADERS, true)  -- raw names: cleared below as sent
if err == "truncated" then
    return refuse(target, "headers")
end
for name, _ in pairs(headers) do
    if string.lower(string.sub(name, 1, #IDENTITY_PREFIX)) == IDENTITY_PREFIX then
        ngx.req.clear_header(name)
    end
end
