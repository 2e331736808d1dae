"""keyplane's own JSON API for gateways: ``POST /v1/verify``, and ``POST /v1/noop`` (a benchmark baseline).

``POST /v1/verify`` takes a venue's signed request as received and answers in the manner of Unkey's
``verifyKey``: always HTTP 200 with ``valid`` and ``code``; on success the caller's identity and
rate-limit state; on failure also ``error``, the answer the venue's own API (Bitget or WhiteBIT) would
have given, status and body, for a gateway to return verbatim. HTTP 400 means the verify call itself
was malformed. The endpoint is for the venue's internal network: anyone who can call it can spend keys' rate limits
and nonces and name the client address that IP allowlists judge. So ``/v1/`` is closed unless the
operator configures it: with ``KEYPLANE_VERIFY_TOKEN`` set, every ``/v1/`` call must carry
``Authorization: Bearer <token>`` (compared in constant time); without a token every call answers HTTP 401
``{"valid": false, "code": "UNAUTHORIZED", ...}``, unless ``KEYPLANE_VERIFY_OPEN=1`` opens it explicitly
(then a call's ``client_ip`` is believed only from a caller in ``KEYPLANE_TRUSTED_PROXIES``; from anyone
else a ``client_ip`` other than the caller's own address is HTTP 400). ``keyplane serve`` says at start
which of the three it is.

The request target is verified exactly as given: ``uri``/``path`` is never percent-decoded, ``method``
never upper-cased. A target an upstream could read otherwise (``keyplane.domain.target``) is refused with
the dialect's 400 error (code ``BAD_TARGET``), and a method and path no rule of the key's dialect names
with its 404 (code ``UNKNOWN_ENDPOINT``).

Request (JSON object)::

    {"method": "POST",                       # required
     "uri": "/api/v4/trade-account/balance", # the request target as received (path and query), or
     "path": "/api/v2/spot/account/assets", "query": "coin=BTC",   # the two parts apart
     "headers": {"X-TXC-APIKEY": "...", ...} # names in any case; a list's items (a header sent more than
                                             # once), like names equal but for case, are joined with ", "
     "body": "{...}",                        # the body as text (UTF-8), or
     "body_base64": "eyJ...",                # the body's exact bytes, base64
     "client_ip": "203.0.113.7",             # the client's address as the gateway saw it
     "scheme": "bitget"}                     # optional: otherwise detected from the signing headers

Response::

    {"valid": true, "code": "VALID", "scheme": "bitget",
     "identity": {"account_uid": "1000000001", "main_account_uid": "1000000001", "is_main": true,
                  "account_id": "<uuid>", "key_id": "<uuid>", "api_key": "bg_...",
                  "permissions": ["read", "spot_trade"], "key_type": null},
     "secret": "current",     # or "previous": the secret a rotation replaced signed, in its grace period
     "ratelimit": {"limit": 10, "remaining": 9, "reset": 1700000000000}}

    {"valid": false, "code": "BAD_SIGNATURE", "scheme": "bitget", "identity": null, "secret": null,
     "ratelimit": null,
     "error": {"status": 400, "content_type": "application/json",
               "body": "{\\"code\\":\\"40009\\",\\"msg\\":\\"sign signature error\\",...}"}}

An outage of the store or Redis where the request cannot be decided without it (an uncached key, a nonce
or replay record that cannot be written) is ``"code": "UNAVAILABLE"`` with the dialect's 503 answer as
``error`` (Bitget 40015, WhiteBIT's 503 body: ``dialects/bitget.py``, ``dialects/whitebit.py``).

The permission each endpoint needs comes from the endpoint table (``keyplane.endpoints``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
from typing import Any

import msgspec

from keyplane.auth import Reason, Requirement, SignedRequest, Verifier, VerifyResult
from keyplane.auth.verifier import detect_scheme
from keyplane.dialects import bitget, native_wire
from keyplane.domain.ipnet import TrustedProxies
from keyplane.domain.model import Scheme
from keyplane.http import Request, Response, json_response
from keyplane.metrics import VIA_VERIFY, Metrics
from keyplane.openapi import Body, Operation

PREFIX = "/v1/"
VERIFY = "/v1/verify"
NOOP = "/v1/noop"


class VerifyCall(msgspec.Struct, forbid_unknown_fields=False):
    method: str
    uri: str | None = None
    path: str | None = None
    query: str = ""
    headers: dict[str, str | list[str]] = {}
    body: str | None = None
    body_base64: str | None = None
    client_ip: str | None = None
    scheme: str | None = None


class _PlainHeadersCall(VerifyCall):
    """The common call, every header one string: decoded without a second pass over the headers."""

    headers: dict[str, str] = {}  # type: ignore[assignment]


_DECODER = msgspec.json.Decoder(VerifyCall)
_PLAIN_DECODER = msgspec.json.Decoder(_PlainHeadersCall)
_ENCODER = msgspec.json.Encoder()
_JSON = [(b"content-type", b"application/json")]
_VALID = Reason.VALID  # an enum member read through a module constant: ~70 ns less (auth/verifier.py)


def bad_call(message: str) -> Response:
    return json_response(400, {"valid": False, "code": "BAD_REQUEST", "message": message})


def internal_error() -> Response:
    """A bug (never client input): HTTP 500 in this API's own shape."""
    return json_response(500, {"valid": False, "code": "INTERNAL_ERROR", "message": "internal error"})


def dialect_error(scheme: Scheme | None, path: str, result: VerifyResult, requirement: Requirement) -> Response:
    """The answer the venue's own API gives for ``result``: Bitget's or WhiteBIT's error envelope."""
    if scheme is Scheme.WHITEBIT or (scheme is None and path.startswith("/api/v4/")):
        try:
            from keyplane.dialects import whitebit
        except ImportError:  # a build without the WhiteBIT dialect: its generic auth error
            return json_response(401, {"code": 10, "message": "Unauthorized request.", "errors": {}})
        return whitebit.verify_error(result, requirement)
    return bitget.verify_error(result)


def identity_of(result: VerifyResult) -> dict[str, Any] | None:
    key, account = result.key, result.account
    if key is None or account is None:
        return None
    return {
        "account_uid": str(account.uid),
        "main_account_uid": str(account.main_uid),
        "is_main": account.is_main,
        "account_id": account.public_id,
        "key_id": key.id,
        "api_key": key.api_key,
        "permissions": list(key.permissions),
        "key_type": key.key_type,
    }


class NativeDialect:
    """``/v1/verify`` and ``/v1/noop``: pure ASGI handlers, no framework on the hot path."""

    def __init__(
        self,
        verifier: Verifier,
        token: str | None = None,
        *,
        open_without_token: bool = False,
        trusted_proxies: TrustedProxies | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.verifier = verifier
        self.metrics = metrics or Metrics(counting=False)  # counters for /metrics, and the refusal log
        # KEYPLANE_VERIFY_TOKEN: what the gateway's calls must carry. Without one, /v1/ is closed (every
        # call 401) unless the operator opened it explicitly (KEYPLANE_VERIFY_OPEN=1)
        self._authorization = f"Bearer {token}".encode() if token else None
        self._closed = token is None and not open_without_token
        # open without a token, anyone may call: a caller-chosen client_ip would defeat every key's IP
        # allowlist, so it is believed only from a trusted proxy (the gateway)
        self._client_ip_from: TrustedProxies | None = (
            None if token else (trusted_proxies or TrustedProxies())
        )
        # key id -> (key, account, identity, a valid answer's encoded head): rebuilt when the cache hands
        # out new objects (a change)
        self._identities: dict[str, tuple[Any, Any, dict[str, Any] | None, bytes]] = {}

    def _known(self, result: VerifyResult) -> tuple[Any, Any, dict[str, Any] | None, bytes] | None:
        key, account = result.key, result.account
        if key is None or account is None:
            return None
        known = self._identities.get(key.id)
        if known is not None and known[0] is key and known[1] is account:
            return known
        identity = identity_of(result)
        scheme = result.scheme.value if result.scheme else None
        head = _ENCODER.encode(
            {"valid": True, "code": Reason.VALID.value, "scheme": scheme, "identity": identity, "secret": "current"}
        )
        if len(self._identities) >= 100_000:
            self._identities.clear()
        known = self._identities[key.id] = (key, account, identity, head[:-1] + b',"ratelimit":')
        return known

    def _identity(self, result: VerifyResult) -> dict[str, Any] | None:
        known = self._known(result)
        return None if known is None else known[2]

    def _valid_answer(self, result: VerifyResult) -> bytes | None:
        """A valid result's answer from its key's encoded head: the hot path encodes only the rate limit."""
        known = self._known(result)
        if known is None or result.secret != "current":  # signed with a rotated secret: the full encoding
            return None
        state = result.rate_limit
        if state is None:
            return known[3] + b"null}"
        return known[3] + b'{"limit":%d,"remaining":%d,"reset":%d}}' % (state.limit, state.remaining, state.reset_ms)

    def operations(self) -> list[Operation]:
        """``/v1/verify`` and ``/v1/noop`` for the OpenAPI document (``native_wire`` has their answers)."""
        errors = {
            400: Body("A malformed call (never a verdict on the request)", native_wire.NativeError),
            401: Body(
                "No or a wrong verify token (or /v1/ is closed: no KEYPLANE_VERIFY_TOKEN)", native_wire.NativeError,
                headers={"WWW-Authenticate": "Bearer"},
            ),
            500: Body("A bug (never client input)", native_wire.NativeError),
        }
        return [
            Operation(
                "POST", VERIFY, "verify", "Verify a signed request (the gateway's call)", "Verify",
                {200: Body("The verdict; invalid requests carry the dialect's own error", native_wire.VerifyAnswer),
                 **errors},
                security=("VerifyToken",),
                request=VerifyCall,
                request_example={
                    "method": "GET", "uri": "/api/v2/spot/account/assets?coin=BTC",
                    "headers": {"ACCESS-KEY": "bg_...", "ACCESS-SIGN": "...", "ACCESS-TIMESTAMP": "1700000000000",
                                "ACCESS-PASSPHRASE": "..."},
                    "body": "", "client_ip": "203.0.113.7",
                },
                description=(
                    "Judges a request as the venue's API received it, against the endpoint table. Every verdict is "
                    "HTTP 200: `valid` says which; an invalid one carries the answer to give the client in `error`."
                ),
            ),
            Operation(
                "POST", NOOP, "noop", "Read the body and answer (a benchmark baseline)", "Verify",
                {200: Body("`{\"ok\":true,\"p\":\"xxx...\"}` padded to the requested size", native_wire.NoopAnswer),
                 **errors},
                security=("VerifyToken",),
                request={"description": "any bytes"},
                request_content_type="application/octet-stream",
                request_required=False,
                query=native_wire.NoopQuery,
            ),
        ]

    async def handle(self, request: Request) -> Response:
        if self._closed:
            self.metrics.refused_request("UNAUTHORIZED", "native", request, 401)
            return _unauthorized("/v1/ is closed: the server has no KEYPLANE_VERIFY_TOKEN")
        if self._authorization is not None and not hmac.compare_digest(
            request.headers.get("authorization", "").encode("latin-1"), self._authorization
        ):
            self.metrics.refused_request("UNAUTHORIZED", "native", request, 401)
            return _unauthorized("missing or wrong Authorization: Bearer token")
        if request.path == VERIFY and request.method == "POST":
            response = await self.verify(request.body, request.client_ip)
            if response.status != 200:  # the call itself was malformed (400)
                self.metrics.refused_request("BAD_REQUEST", "native", request, response.status)
            return response
        if request.path == NOOP and request.method == "POST":
            return noop(request)
        self.metrics.refused_request("NOT_FOUND", "native", request, 404)
        return json_response(404, {"code": "NOT_FOUND", "message": "Not found"})

    async def verify(self, raw: bytes, caller_ip: str) -> Response:
        call: VerifyCall
        try:
            call = _PLAIN_DECODER.decode(raw)
        except msgspec.ValidationError:  # a header given as a list, or a real mistake: the full decoder says
            try:
                call = _DECODER.decode(raw)
            except msgspec.DecodeError as error:
                return bad_call(f"invalid verify request: {error}")
            except RecursionError:  # msgspec's depth limit (the typed decoders refuse most nesting first)
                return bad_call("invalid verify request: nested too deeply")
        except msgspec.DecodeError as error:
            return bad_call(f"invalid verify request: {error}")
        except RecursionError:
            return bad_call("invalid verify request: nested too deeply")
        if (
            call.client_ip is not None
            and self._client_ip_from is not None
            and call.client_ip != caller_ip
            and not self._client_ip_from.trusts(caller_ip)
        ):
            return bad_call(
                "client_ip is taken only from a caller with the verify token (KEYPLANE_VERIFY_TOKEN) "
                "or from a trusted proxy (KEYPLANE_TRUSTED_PROXIES)"
            )
        signed = _signed_request(call, caller_ip)
        if isinstance(signed, str):
            return bad_call(signed)
        scheme: Scheme | None
        if call.scheme:
            try:
                scheme = Scheme(call.scheme)
            except ValueError:
                return bad_call("scheme must be 'bitget' or 'whitebit'")
        else:
            # no signing headers at all: the table says whose API the path is, and so whose error to answer
            scheme = detect_scheme(signed.headers) or self.verifier.endpoints.dialect_of(signed.path)
        # no Requirement: the endpoint table decides, among the rules of the key's dialect only
        result = await self.verifier.verify_async(signed, None, scheme)
        self.metrics.verified(signed, result, VIA_VERIFY, scheme)
        if result.reason is _VALID:
            valid_body = self._valid_answer(result)
            if valid_body is not None:
                return Response(200, valid_body, list(_JSON))
        state = result.rate_limit
        out: dict[str, Any] = {
            "valid": result.valid,
            "code": result.reason.value,
            "scheme": result.scheme.value if result.scheme else (scheme.value if scheme else None),
            "identity": self._identity(result),
            "secret": result.secret if result.key is not None else None,
            "ratelimit": None
            if state is None
            else {"limit": state.limit, "remaining": state.remaining, "reset": state.reset_ms},
        }
        if result.reason is not Reason.VALID:
            found = self.verifier.endpoints.requirement_for(scheme, signed.method, signed.path)
            requirement = found if isinstance(found, Requirement) else Requirement()
            answer = dialect_error(result.scheme or scheme, signed.path, result, requirement)
            content_type = next((v for k, v in answer.headers if k == b"content-type"), b"application/json")
            out["error"] = {
                "status": answer.status,
                "content_type": content_type.decode("latin-1"),
                "body": answer.body.decode("utf-8", "replace"),
            }
        return Response(200, _ENCODER.encode(out), list(_JSON))


def _unauthorized(message: str) -> Response:
    return json_response(
        401, {"valid": False, "code": "UNAUTHORIZED", "message": message}, {"WWW-Authenticate": "Bearer"}
    )


def _signed_request(call: VerifyCall, caller_ip: str) -> SignedRequest | str:
    if call.uri is not None:
        path, _, query = call.uri.partition("?")
    elif call.path is not None:
        path, query = call.path, call.query
    else:
        return "give 'uri', or 'path' (and 'query')"
    if not path.startswith("/"):
        return "the path must start with '/'"
    # the path and method are verified exactly as given, never decoded or upper-cased: a target an
    # upstream could read otherwise (%-encoding, dot segments, "get") is BAD_TARGET (domain/target.py)
    if call.body_base64 is not None:
        try:
            body = base64.b64decode(call.body_base64, validate=True)
        except (binascii.Error, ValueError):
            return "body_base64 is not base64"
    else:
        body = (call.body or "").encode()
    headers: dict[str, str]
    if isinstance(call, _PlainHeadersCall) and "".join(call.headers).islower():
        # the gateway sends lower-case names (nginx's own form): one C call says so, no copy needed
        headers = call.headers
    else:
        # A header sent more than once (nginx hands its values over as a list) or under names that differ
        # only in case is one header whose values are joined with ", ", as RFC 9110 (5.3) reads them and
        # as keyplane's own routes do (http.decode_headers): a signing header given twice never verifies,
        # so no upstream can read another of its values than the one verified.
        headers = {}
        for name, value in call.headers.items():
            text = ", ".join(value) if isinstance(value, list) else value
            lower = name.lower()
            headers[lower] = f"{headers[lower]}, {text}" if lower in headers else text
    return SignedRequest(call.method, path, query, headers, body, call.client_ip or caller_ip)


def noop(request: Request) -> Response:
    """A benchmark baseline: reads the body and answers a JSON body of ``?size=N`` bytes (default: as read).

    It does what ``/v1/verify`` does around verification (route, read, answer), so ``bench/http_verify.py``
    can compare the two and isolate the cost of verifying.
    """
    size = len(request.body)
    if request.query.startswith("size="):
        with contextlib.suppress(ValueError):
            size = min(int(request.query[5:]), 1 << 16)
    # '{"ok":true,"p":""}' is 18 bytes: pad to ``size``
    return Response(200, b'{"ok":true,"p":"' + b"x" * max(size - 18, 0) + b'"}', list(_JSON))
