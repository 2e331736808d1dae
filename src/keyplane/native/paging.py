"""Query parameters and opaque cursors of the native management API's lists.

A list answers ``{"data": [...], "next_cursor": "..."}``; ``next_cursor`` is null on the last page. A
cursor is the position after the page's last item (keyset paging: an item made or deleted meanwhile never
shifts a page), base64url-encoded with the list's kind, so a cursor of one list is refused by another.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import parse_qsl

from keyplane.native.errors import ApiError

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_MAX_QUERY = 4096
UID_DIGITS = 18
# a cursor's numbers go into SQL as 64-bit integers: a forged one outside that range is refused, not a 500
_INT64 = range(-(2**63), 2**63)


def parse_uid(text: str) -> int | None:
    """A UID written as ASCII digits, or None. At most 18 digits: it goes into SQL as a 64-bit integer (a UID
    has 10), and a longer one is refused before it could overflow there (a 500)."""
    if not text.isascii() or not text.isdigit() or len(text) > UID_DIGITS:
        return None
    return int(text)


def encode_cursor(kind: str, position: list[int | str]) -> str:
    raw = json.dumps([kind, *position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(text: str, kind: str, shape: tuple[type, ...]) -> list[int | str]:
    """The position of a cursor this API gave for ``kind``, its items of the types ``shape`` names."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        value = None
    if (
        not isinstance(value, list) or len(value) != len(shape) + 1 or value[0] != kind
        or not all(type(item) is expected for item, expected in zip(value[1:], shape, strict=True))
        or any(type(item) is int and item not in _INT64 for item in value[1:])
    ):
        raise ApiError(400, "invalid_cursor", "the cursor is not one this list gave", field="cursor")
    return list(value[1:])


def parse_query(query: str, allowed: frozenset[str]) -> dict[str, str]:
    """The query's parameters: each at most once, each one the route names."""
    if len(query) > _MAX_QUERY:
        raise ApiError(400, "invalid_parameter", "the query is too long")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_parameter", "the query is not name=value pairs of UTF-8 text") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ApiError(400, "invalid_parameter", f"unknown query parameter {name!r} (known: {known})", field=name)
        if name in out:
            raise ApiError(400, "invalid_parameter", f"{name} given twice", field=name)
        if "\x00" in value:
            raise ApiError(400, "invalid_parameter", f"{name} holds a NUL character", field=name)
        out[name] = value
    return out


def limit_of(params: Mapping[str, str]) -> int:
    text = params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not text.isascii() or not text.isdigit() or len(text) > 4 or not 1 <= int(text) <= MAX_LIMIT:
        raise ApiError(400, "invalid_parameter", f"limit must be 1 to {MAX_LIMIT}", field="limit")
    return int(text)


def uid_param(params: Mapping[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    uid = parse_uid(text)
    if uid is None:
        raise ApiError(400, "invalid_parameter", f"{name} must be a UID (up to {UID_DIGITS} digits)", field=name)
    return uid


def bool_param(params: Mapping[str, str], name: str) -> bool | None:
    text = params.get(name)
    if text is None:
        return None
    if text not in ("true", "false"):
        raise ApiError(400, "invalid_parameter", f"{name} must be true or false", field=name)
    return text == "true"


def choice_param(params: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    text = params.get(name)
    if text is None:
        return None
    if text not in choices:
        raise ApiError(400, "invalid_parameter", f"{name} must be one of {', '.join(choices)}", field=name)
    return text


def time_param(params: Mapping[str, str], name: str) -> int | None:
    """An RFC 3339 time with its offset (``2026-11-30T07:00:00Z``), as Unix milliseconds."""
    text = params.get(name)
    if text is None:
        return None
    try:
        if len(text) > 40:
            raise ValueError
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError
    except ValueError:
        raise ApiError(
            400, "invalid_parameter", f"{name} must be an RFC 3339 time with an offset, e.g. 2026-11-30T07:00:00Z",
            field=name,
        ) from None
    return int(moment.timestamp() * 1000)


def text_param(params: Mapping[str, str], name: str, max_length: int = 64) -> str | None:
    text = params.get(name)
    if text is None:
        return None
    if not 1 <= len(text) <= max_length:
        raise ApiError(400, "invalid_parameter", f"{name} must be 1 to {max_length} characters", field=name)
    return text
