"""A minimal pure-ASGI layer: requests with their raw bytes, JSON responses, exact-path routing.

Every keyplane route is signed and must be verified over the exact bytes received, and every error
must leave in the dialect's own envelope; a framework's body parsing and error pages would have to
be bypassed on every route, and it costs 1.6-3x per request here (``docs/architecture.md``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from keyplane.auth.request import SignedRequest
from keyplane.domain.ipnet import TrustedProxies

MAX_BODY_BYTES = 64 * 1024

_ENCODER = msgspec.json.Encoder()

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


# A route receives the signed request itself: the exact bytes the verifier checks, nothing re-parsed.
Request = SignedRequest


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def json_response(status: int, content: object, headers: Mapping[str, str] | None = None) -> Response:
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Response(status, _ENCODER.encode(content), [(b"content-type", b"application/json"), *extra])


Handler = Callable[[Request], Awaitable[Response]]


async def read_body(receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def client_ip_of(scope: Scope, headers: Mapping[str, str], trusted_proxies: TrustedProxies) -> str:
    """The peer's address, or the client's a trusted proxy says it forwarded (``TrustedProxies``)."""
    client = scope.get("client")
    peer = str(client[0]) if client else ""
    if not trusted_proxies:
        return peer
    return trusted_proxies.client_ip(peer, headers.get("x-real-ip"), headers.get("x-forwarded-for"))


def decode_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    # latin-1 maps every byte to one character, so no header a client sends can fail to decode
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}
    if len(headers) == len(raw):
        return headers
    # A name sent more than once is one header whose values are joined with ", " (RFC 9110, 5.3), not the
    # last one alone: a signing header sent twice never verifies, whichever copy an upstream would read,
    # and a second X-Forwarded-For line is read as the list it is.
    headers = {}
    for name_bytes, value_bytes in raw:
        name, value = name_bytes.decode("latin-1").lower(), value_bytes.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


async def send_response(send: Send, response: Response) -> None:
    headers = [*response.headers, (b"content-length", str(len(response.body)).encode())]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
