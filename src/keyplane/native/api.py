"""The native management API's HTTP edge: operator tokens, routes, scopes, bodies, idempotent creates.

Each call, in order: its token (``Authorization: Bearer kpt_…``: missing or unknown/revoked is 401, looked
up in the store on every call, ``keyplane.services.tokens`` says why), its route (404, or 405 with
``Allow``), the route's scope (403), its query and body (400; 415 for a body that is not JSON), then the
use-case in a thread (``dialects.common.run_service``: an outage is 503). Creates honour
``Idempotency-Key`` (``keyplane.services.idempotency``). Every refusal is the one error shape
(``keyplane.native.errors``) and every call is counted by operation and outcome (``Metrics.operated``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from keyplane import errors
from keyplane.dialects.common import BadJson, decode_json, run_service
from keyplane.domain.tokens import SCOPE_FOR, Need, OperatorToken
from keyplane.http import Request, Response
from keyplane.metrics import Metrics
from keyplane.native.errors import ApiError, ManagementError, domain_error
from keyplane.native.paging import parse_query
from keyplane.openapi import Body, Operation
from keyplane.services import KeyplaneService
from keyplane.services.idempotency import Claim, IdempotencyService, Replay, check_key, request_digest
from keyplane.services.tokens import TokenService
from keyplane.store.store import in_the_same_commit

log = logging.getLogger("keyplane.native")

_ENCODER = msgspec.json.Encoder()
_JSON = (b"content-type", b"application/json")
REPLAY_HEADER = "Idempotent-Replayed"
# how long a request waits for the first request with its Idempotency-Key to answer, polling every 50 ms
IDEMPOTENCY_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated, routed call: what a handler reads."""

    request: Request
    token: OperatorToken
    params: dict[str, str]
    query: dict[str, str]
    body: Any = None

    @property
    def ip(self) -> str:
        return self.request.client_ip


Handler = Callable[["KeyplaneService", Call], Awaitable[msgspec.Struct]]


@dataclass(frozen=True, slots=True)
class Route:
    """One route: what it needs, takes and answers (the OpenAPI document is made from these)."""

    method: str
    path: str  # "/v1/keys/{id}": a ``{name}`` is one path segment, handed to the handler as a string
    name: str  # the operation, as metrics count it: "keys.create"
    need: Need
    handler: Handler
    summary: str
    answer: type[msgspec.Struct]
    status: int = 200
    body: type[msgspec.Struct] | None = None
    query: type[msgspec.Struct] | None = None  # its fields are the query parameters (read as text, checked)
    idempotent: bool = False  # a create: honours Idempotency-Key
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)
    parameters: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", re.escape(self.path).replace(r"\{", "{").replace(r"\}", "}"))
        object.__setattr__(self, "pattern", re.compile(regex + r"\Z"))
        names = () if self.query is None else tuple(f.name for f in msgspec.structs.fields(self.query))
        object.__setattr__(self, "parameters", frozenset(names))


class ManagementApi:
    """The routes of ``routes`` over the services; ``handle`` answers every ``/v1/`` management path."""

    def __init__(
        self,
        service: KeyplaneService,
        tokens: TokenService,
        idempotency: IdempotencyService,
        routes: tuple[Route, ...],
        metrics: Metrics | None = None,
    ) -> None:
        self.service = service
        self.tokens = tokens
        self.idempotency = idempotency
        self.routes = routes
        self.metrics = metrics or Metrics(counting=False)

    def operations(self) -> list[Operation]:
        """Every route for the OpenAPI document (``keyplane.openapi``), from the table ``handle`` routes by."""
        return [_operation(route) for route in self.routes]

    async def handle(self, request: Request) -> Response:
        operation = "unrouted"
        code: str | None = None
        try:
            token = await self._authenticate(request)
            route, params = self._route(request)
            operation = route.name
            if not token.grants(route.need):
                raise ApiError(
                    403, "insufficient_scope", f"{route.name} needs a token with the scope {SCOPE_FOR[route.need]}"
                )
            call = Call(request, token, params, parse_query(request.query, route.parameters))
            response = await self._run(route, call)
        except ApiError as error:
            code, response = error.code, error.response()
        except errors.KeyplaneError as error:
            api_error = domain_error(error)
            code, response = api_error.code, api_error.response()
        if operation == "unrouted" and response.status == 401:
            operation = "unauthenticated"
        self.metrics.operated(operation, request, response.status, code)
        return response

    async def _authenticate(self, request: Request) -> OperatorToken:
        header = request.headers.get("authorization")
        if not header:
            raise ApiError(401, "missing_token", "send Authorization: Bearer <operator token>",
                           headers={"WWW-Authenticate": "Bearer"})
        scheme, _, presented = header.partition(" ")
        token: OperatorToken | None = None
        if scheme.lower() == "bearer":
            token = await run_service(self.tokens.authenticate, presented.strip(" "))
        if token is None:
            raise ApiError(401, "invalid_token", "the operator token is unknown, malformed or revoked",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return token

    def _route(self, request: Request) -> tuple[Route, dict[str, str]]:
        allowed: list[str] = []
        for route in self.routes:
            match = route.pattern.match(request.path)
            if match is None:
                continue
            if route.method == request.method:
                return route, match.groupdict()
            allowed.append(route.method)
        if allowed:
            raise ApiError(405, "method_not_allowed", f"{request.path} takes {', '.join(allowed)}",
                           headers={"Allow": ", ".join(allowed)})
        raise ApiError(404, "not_found", f"no route {request.method} {request.path}")

    async def _run(self, route: Route, call: Call) -> Response:
        canonical = b""
        if route.body is not None:
            value = _json_body(call.request)
            canonical = msgspec.json.encode(value, order="sorted")
            try:
                body = msgspec.convert(value, route.body)
            except msgspec.ValidationError as error:
                raise ApiError(400, "invalid_request", str(error), field=_field_of(str(error))) from None
            call = Call(call.request, call.token, call.params, call.query, body)
        key = call.request.headers.get("idempotency-key")
        if not route.idempotent or key is None:
            return _answer(route.status, await route.handler(self.service, call))
        check_key(key)
        digest = request_digest(call.request.method, call.request.path, canonical)
        outcome = await self._begin(call.token.id, key, digest)
        if isinstance(outcome, Replay):
            return Response(outcome.status, outcome.body, [_JSON, (REPLAY_HEADER.lower().encode(), b"true")])
        return await self._first(route, call, outcome)

    async def _begin(self, token_id: str, key: str, digest: str) -> Claim | Replay:
        deadline = time.monotonic() + IDEMPOTENCY_WAIT_S
        while True:
            try:
                outcome: Claim | Replay = await run_service(self.idempotency.begin, token_id, key, digest)
                return outcome
            except errors.IdempotencyInProgress:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.05)

    async def _first(self, route: Route, call: Call, claim: Claim) -> Response:
        """Runs the create that holds ``claim`` and records its answer, without a one-time secret."""
        try:
            # the create's own commit marks the claim, so a crash before ``finish`` cannot lead to a second
            # object (services/idempotency.py)
            with in_the_same_commit(self.idempotency.provisional(claim)):
                answer = await route.handler(self.service, call)
        except (ApiError, errors.KeyplaneError) as error:
            refusal = error if isinstance(error, ApiError) else domain_error(error)
            if refusal.status >= 500:
                await _quietly(run_service(self.idempotency.abandon, claim))
                raise
            response = refusal.response()
            await run_service(self.idempotency.finish, claim, response.status, response.body)
            return response
        except BaseException:
            await _quietly(run_service(self.idempotency.abandon, claim))
            raise
        without = getattr(answer, "without_secret", None)
        recorded = _ENCODER.encode(without() if without is not None else answer)
        try:
            await run_service(self.idempotency.finish, claim, route.status, recorded)
        except errors.Unavailable:
            # the object exists and this is its only answer with the secret: give it; a retry with the key
            # finds the claim unanswered and, after idempotency.STALE_MS, runs again (the module says so)
            log.warning("the answer to an idempotent create could not be recorded (outage)")
        return _answer(route.status, answer)


_TAGS = {"accounts": "Main accounts", "sub_accounts": "Sub-accounts", "keys": "Keys", "audit": "Audit events"}


def _operation(route: Route) -> Operation:
    def refusal(text: str, **headers: str) -> Body:
        return Body(text, ManagementError, headers=headers)

    responses: dict[int, Body] = {
        route.status: Body("Done", route.answer),
        401: refusal("missing_token, or invalid_token (unknown, malformed or revoked)",
                     **{"WWW-Authenticate": "Bearer"}),
        403: refusal("insufficient_scope: the token lacks the scope this route needs"),
        404: refusal("not_found (no route), account_not_found or key_not_found"),
        405: refusal("method_not_allowed", Allow="the methods the path takes"),
        400: refusal("invalid_request, invalid_parameter, invalid_cursor, invalid_json, invalid_path, or a rule "
                     "(invalid_name, invalid_ip, invalid_permission, invalid_passphrase, invalid_label)"),
        413: refusal("payload_too_large: over 64 KiB"),
        500: refusal("internal_error: a bug, logged"),
        503: refusal("unavailable: the store cannot be reached; nothing was changed", **{"Retry-After": "seconds"}),
    }
    if route.body is not None:
        responses[415] = refusal("unsupported_media_type: send application/json")
    if route.method != "GET":
        responses[409] = refusal(
            "A conflict: name_taken, already_in_state, a limit (sub_account_limit, key_limit, ip_limit), "
            "idempotency_key_in_use, idempotent_answer_lost (a retry of a create whose object was made but whose "
            "answer was lost with its process: nothing is created again)"
        )
    headers: dict[str, str] = {}
    description = f"Needs a token with the scope {SCOPE_FOR[route.need]}."
    if route.idempotent:
        responses[422] = refusal("idempotency_key_reused: the key was sent with another request in the last 24 h")
        headers["Idempotency-Key"] = (
            "1-255 visible ASCII characters. The same key and request within 24 h answer the first answer "
            f"(header `{REPLAY_HEADER}: true`) and create nothing; a one-time secret is not shown again."
        )
        description += " Safe to retry with an Idempotency-Key."
    return Operation(
        route.method, route.path, route.name.replace(".", "_"), route.summary, _TAGS[route.name.split(".")[0]],
        responses, security=("OperatorToken",), request=route.body, query=route.query, description=description,
        request_headers=headers,
    )


async def _quietly(awaitable: Awaitable[Any]) -> None:
    with contextlib.suppress(errors.Unavailable):  # the claim goes stale and is taken over later
        await awaitable


def _answer(status: int, content: msgspec.Struct) -> Response:
    return Response(status, _ENCODER.encode(content), [_JSON])


def _json_body(request: Request) -> Any:
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in ("application/json", ""):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    if not request.body.strip():
        raise ApiError(400, "invalid_json", "this route takes a JSON object")
    try:
        return decode_json(request.body)
    except BadJson:
        raise ApiError(400, "invalid_json",
                       "the body is not JSON keyplane reads (UTF-8, nested at most 32 deep, no NUL)") from None


def _field_of(message: str) -> str | None:
    """The field msgspec names: ``… - at `$.ip_list[0]``` or ``unknown field `foo```, as ``ip_list``, ``foo``."""
    found = re.search(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*)", message) or re.search(r"field `([^`]{1,64})`", message)
    return found.group(1) if found else None
