"""keyplane's HTTP API as one OpenAPI 3.1 document, built from the route tables the server routes by.

Every surface (the app's own paths, ``/v1/``, the Bitget and WhiteBIT dialects) has an ``operations()``
method that walks the table its ``handle`` routes by and returns one ``Operation`` per route, with the
bodies declared next to the route (``dialects/*_wire.py``). The document is built from those calls, so a
route cannot be served undocumented or documented unserved: ``operations()`` fails on a route without a
declaration, and tests/test_openapi.py compares the document with the tables and drives it with schemathesis.

Declaring a new surface's routes (the /v1/ management API, for instance):

1. Write each JSON body once, as a ``msgspec.Struct`` (or any type msgspec can describe: ``list[X]``,
   ``X | None``, ``Literal``, ``Annotated[str, msgspec.Meta(pattern=..., max_length=...)]``). A Struct the
   route also decodes with is the best declaration: the schema is then what the code accepts. Name each
   Struct uniquely across keyplane (it becomes ``#/components/schemas/<Name>``). A body that wraps another
   (an envelope) is a plain JSON Schema ``dict`` with ``Ref(T)`` where the wrapped type goes.
2. Give the surface an ``operations(self) -> list[Operation]`` that builds one ``Operation`` per entry of
   its route table (method and path from the table itself, never retyped), with every status the route can
   answer in ``responses`` (errors too: a response schemathesis meets that the document lacks fails CI).
   A ``{name}`` in the path is a path parameter (a string unless ``path_parameters`` gives its type);
   ``query`` is a Struct (its fields) or ``{name: type}``; ``request_headers`` names optional headers
   (``Idempotency-Key``).
3. Add the surface to ``KeyplaneApp.documented`` (app.py) and its security scheme, if new, to
   ``SECURITY_SCHEMES`` below (the management API's operator tokens are ``OperatorToken``).

``/console`` (the operators' web pages: HTML forms behind a session cookie, ``keyplane.console``) is a
user interface, not part of the HTTP API, and is not described.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol

import msgspec

from keyplane.domain.requirements import Requirement

REF = "#/components/schemas/{name}"

# How each surface authenticates (components.securitySchemes). A route's ``security`` names the schemes it
# needs, all at once: Bitget signs with four headers, WhiteBIT with three.
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "BitgetAccessKey": {
        "type": "apiKey", "in": "header", "name": "ACCESS-KEY",
        "description": "The API key (`bg_...`).",
    },
    "BitgetAccessSign": {
        "type": "apiKey", "in": "header", "name": "ACCESS-SIGN",
        "description": "Base64 of HMAC-SHA256(secret, timestamp + METHOD + path + ('?' + query if any) + body).",
    },
    "BitgetAccessTimestamp": {
        "type": "apiKey", "in": "header", "name": "ACCESS-TIMESTAMP",
        "description": "Unix time in milliseconds; refused 30 s away from the server's clock (40008).",
    },
    "BitgetAccessPassphrase": {
        "type": "apiKey", "in": "header", "name": "ACCESS-PASSPHRASE",
        "description": "The passphrase given when the key was created.",
    },
    "WhitebitApiKey": {
        "type": "apiKey", "in": "header", "name": "X-TXC-APIKEY", "description": "The API key.",
    },
    "WhitebitPayload": {
        "type": "apiKey", "in": "header", "name": "X-TXC-PAYLOAD",
        "description": "Base64 of the exact JSON body, which carries `request` (the path) and `nonce`.",
    },
    "WhitebitSignature": {
        "type": "apiKey", "in": "header", "name": "X-TXC-SIGNATURE",
        "description": "Hex of HMAC-SHA512(secret, X-TXC-PAYLOAD).",
    },
    "VerifyToken": {
        "type": "http", "scheme": "bearer",
        "description": "`KEYPLANE_VERIFY_TOKEN`: the gateway's token for /v1/verify and /metrics.",
    },
    "OperatorToken": {
        "type": "http", "scheme": "bearer",
        "description": "An operator token (`kpt_...`, `keyplane tokens create --scope ...`): the management API.",
    },
}
# what /docs says under each group of operations (an operation's ``tag``); a tag not here is shown bare
TAGS: dict[str, str] = {
    "Bitget v2": "Bitget's API v2 routes keyplane serves, in Bitget's wire form and envelope, signed with the "
                 "ACCESS-* headers; the sub-account routes need a main account's key bound to an IP allowlist.",
    "WhiteBIT v4": "WhiteBIT's API v4 sub-account routes in WhiteBIT's wire form; every one a POST whose body "
                   "carries `request` and `nonce`, signed with the X-TXC-* headers by a main account's key.",
    "Verify": "The gateway's call: is this request to the venue's API validly signed, and by whom?",
    "Main accounts": "The native management API (operator tokens).",
    "Sub-accounts": "The native management API (operator tokens).",
    "Keys": "The native management API (operator tokens): keys of either dialect.",
    "Audit events": "The native management API (operator tokens).",
    "Operations": "Liveness, readiness, metrics, and this description.",
}
BITGET_SECURITY = ("BitgetAccessKey", "BitgetAccessSign", "BitgetAccessTimestamp", "BitgetAccessPassphrase")
WHITEBIT_SECURITY = ("WhitebitApiKey", "WhitebitPayload", "WhitebitSignature")


@dataclass(frozen=True, slots=True)
class Ref:
    """Inside a hand-written schema ``dict``: the schema of ``type`` goes here (a ``$ref`` for a Struct)."""

    type: Any


@dataclass(frozen=True, slots=True)
class Body:
    """One response (or request) body: a type msgspec can describe, a JSON Schema ``dict`` (with ``Ref``s),
    or ``None`` for a body the document does not describe beyond its content type."""

    description: str
    schema: Any = None
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> description


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    responses: Mapping[int, Body]
    security: tuple[str, ...] = ()
    request: Any = None  # the JSON body's type (or schema dict); None: no body
    request_content_type: str = "application/json"
    request_required: bool = True
    request_example: Any = None  # shown by /docs, and sent as is by schemathesis (tests/test_openapi.py)
    # the query parameters: a Struct (each field one parameter) or name -> type (optional parameters)
    query: type[msgspec.Struct] | Mapping[str, Any] | None = None
    # a ``{name}`` in ``path``: its type (default: a non-empty string without "/")
    path_parameters: Mapping[str, Any] = field(default_factory=dict)
    request_headers: Mapping[str, str] = field(default_factory=dict)  # optional headers: name -> description
    description: str = ""


class Documented(Protocol):
    """A surface of the app: its routes as ``Operation``s, from the table its ``handle`` routes by."""

    def operations(self) -> list[Operation]: ...


def requirement_text(requirement: Requirement, scheme: str) -> str:
    """What a route's endpoint-table row asks of the signing key, in words (an operation's description)."""
    parts = []
    if requirement.main_only:
        parts.append("a main account's key" + (" bound to an IP allowlist" if requirement.main_needs_ip else ""))
    if scheme == "bitget" and requirement.permission:
        parts.append(f"the `{requirement.permission}` permission")
    if scheme == "whitebit":
        parts.append(f"key type {requirement.key_type} or above")
    text = "Needs " + " and ".join(parts) + "." if parts else "Any valid key."
    if requirement.rate_limit:
        text += f" Rate limit: {requirement.rate_limit} per main account (this server's policy)."
    if requirement.replay_protect and scheme == "bitget":
        text += " A signed request is accepted once (a repeat is 40004)."
    return text


def _collect(value: Any, into: list[Any]) -> None:
    if isinstance(value, Ref):
        into.append(value.type)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, into)
    elif isinstance(value, list):
        for item in value:
            _collect(item, into)


class _Schemas:
    """Every type the operations name, described by msgspec in one pass (shared components)."""

    def __init__(self, operations: Iterable[Operation]) -> None:
        types: list[Any] = []
        for op in operations:
            bodies = [b.schema for b in op.responses.values()] + [op.request]
            for schema in bodies:
                if isinstance(schema, dict):
                    _collect(schema, types)
                elif schema is not None:
                    types.append(schema)
            if isinstance(op.query, type):
                types.append(op.query)
            elif op.query is not None:
                types += [t for t in op.query.values() if not isinstance(t, dict)]
            types += [t for t in op.path_parameters.values() if not isinstance(t, dict)]
        unique = list(dict.fromkeys(types))
        described, self.components = msgspec.json.schema_components(unique, ref_template=REF)
        self._by_type = dict(zip(unique, described, strict=True))

    def of(self, schema: Any) -> dict[str, Any]:
        if isinstance(schema, dict):
            return {name: self._resolve(value) for name, value in schema.items()}
        described: dict[str, Any] = self._by_type[schema.type if isinstance(schema, Ref) else schema]
        return described

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, Ref | dict):
            return self.of(value)
        if isinstance(value, list):
            return [self._resolve(item) for item in value]
        return value

    def parameters(self, op: Operation) -> list[dict[str, Any]]:
        out = [
            {"name": name, "in": "path", "required": True,
             "schema": self.of(op.path_parameters.get(name, {"type": "string", "pattern": "^[^/]+$"}))}
            for name in re.findall(r"\{(\w+)\}", op.path)
        ]
        if isinstance(op.query, type):
            described = self.components[op.query.__name__]
            required = set(described.get("required", ()))
            out += [
                {"name": name, "in": "query", "required": name in required, "schema": _absent_not_null(schema)}
                for name, schema in described["properties"].items()
            ]
        elif op.query is not None:
            out += [
                {"name": name, "in": "query", "required": False, "schema": self.of(kind)}
                for name, kind in op.query.items()
            ]
        out += [
            {"name": name, "in": "header", "required": False, "description": text, "schema": {"type": "string"}}
            for name, text in op.request_headers.items()
        ]
        return out


def _absent_not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema from a Struct field ``X | None = None``: a URL has no null, the parameter
    is left out instead, so the null branch and the null default go."""
    schema = dict(schema)
    if schema.get("default", ...) is None:
        del schema["default"]
    branches = [b for b in schema.get("anyOf", ()) if b != {"type": "null"}]
    if "anyOf" in schema and len(branches) != len(schema["anyOf"]):
        del schema["anyOf"]
        if len(branches) == 1:
            schema = {**branches[0], **schema}
        else:
            schema["anyOf"] = branches
    return schema


def _content(body: Body, schemas: _Schemas) -> dict[str, Any]:
    media: dict[str, Any] = {}
    if body.schema is not None:
        media["schema"] = schemas.of(body.schema)
    return {body.content_type: media}


def _version() -> str:
    try:
        return metadata.version("keyplane")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def build_document(operations: Iterable[Operation], *, title: str = "keyplane") -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations``; raises ``ValueError`` on two operations for one route."""
    ops = list(operations)
    order = {tag: index for index, tag in enumerate(TAGS)}
    schemas = _Schemas(ops)
    paths: dict[str, dict[str, Any]] = {}
    seen_ids: set[str] = set()
    for op in ops:
        item = paths.setdefault(op.path, {})
        method = op.method.lower()
        if method in item or op.operation_id in seen_ids:
            raise ValueError(f"declared twice: {op.method} {op.path} ({op.operation_id})")
        seen_ids.add(op.operation_id)
        out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
        if op.description:
            out["description"] = op.description
        parameters = schemas.parameters(op)
        if parameters:
            out["parameters"] = parameters
        if op.request is not None:
            content = _content(Body("", op.request, op.request_content_type), schemas)
            if op.request_example is not None:
                content[op.request_content_type]["example"] = op.request_example
            out["requestBody"] = {"required": op.request_required, "content": content}
        out["security"] = [{name: [] for name in op.security}] if op.security else []
        responses: dict[str, Any] = {}
        for status, body in sorted(op.responses.items()):
            response: dict[str, Any] = {"description": body.description}
            if body.schema is not None or body.content_type:
                response["content"] = _content(body, schemas)
            if body.headers:
                response["headers"] = {
                    name: {"description": text, "schema": {"type": "string"}} for name, text in body.headers.items()
                }
            responses[str(status)] = response
        out["responses"] = responses
        item[method] = out
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": _version(),
            "description": (
                "The sub-account and API-key plane of a trading venue: the Bitget v2 and WhiteBIT v4 "
                "management routes in their exchanges' wire form, the gateway's verify call, and the "
                "operational endpoints. Generated from the route tables the server routes by."
            ),
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "tags": [
            {"name": tag, "description": TAGS[tag]} if tag in TAGS else {"name": tag}
            for tag in sorted({op.tag for op in ops}, key=lambda t: (order.get(t, len(order)), t))
        ],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
