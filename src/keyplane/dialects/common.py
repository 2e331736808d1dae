"""What every dialect's routes share: who the verified caller is, how a service call is made, and the
one check every JSON body passes at the edge."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec

from keyplane.auth import SignedRequest, VerifyResult
from keyplane.outages import unavailable, warn
from keyplane.services import Actor

# No route's documented body nests deeper than 3; 32 leaves room and bounds every later walk.
MAX_JSON_DEPTH = 32

_DECODER = msgspec.json.Decoder()


class BadJson(Exception):
    """A body no route can read: each dialect answers it with its own 400."""


def decode_json(raw: bytes) -> Any:
    """The body as JSON, or ``BadJson``. msgspec itself refuses invalid UTF-8, a BOM, NaN/Infinity, lone
    surrogates and integers past 4300 digits (Python's int/str conversion limit); its recursion limit
    raises ``RecursionError`` (not a DecodeError) on deep nesting, so that is caught here too."""
    try:
        value = _DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        raise BadJson from None
    check_json(value)
    return value


def check_json(value: object) -> None:
    """Refuses nesting deeper than ``MAX_JSON_DEPTH`` and NUL characters in any string or name (PostgreSQL
    text cannot hold them: they would fail in the store instead of at the edge). Iterative: no recursion."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise BadJson
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise BadJson
            if isinstance(item, dict):
                for name, entry in item.items():
                    if "\x00" in name:
                        raise BadJson
                    stack.append((entry, depth + 1))
            else:
                stack.extend((entry, depth + 1) for entry in item)


def actor_of(request: SignedRequest, result: VerifyResult) -> Actor:
    """The caller of a verified request, as the service's audit events record it."""
    assert result.account is not None and result.key is not None
    return Actor(account=result.account, api_key=result.key.api_key, ip=request.client_ip, secret=result.secret)


async def run_service(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Runs a use-case in a thread: they hash passphrases and wait on database locks, which must not
    block the event loop that verifies every other request.

    An outage of the store raises ``errors.Unavailable`` (each dialect's 503-class answer) instead of the
    driver's error. A use-case is one transaction, so it failed before its commit and changed nothing;
    a commit whose acknowledgement is lost with the connection is the one case that cannot be told.
    """
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except Exception as error:
        outage = unavailable(error)
        if outage is None:
            raise
        warn("management call refused (outage)", error)
        raise outage from None
