"""The answers of ``/v1/verify`` and ``/v1/noop`` (``dialects/native.py``) for the OpenAPI document. The
request is ``native.VerifyCall`` itself, the Struct the route decodes with."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from keyplane.auth import Reason

Code = Annotated[str, msgspec.Meta(description="VALID, or why not: " + ", ".join(r.value for r in Reason))]


class VerifyIdentity(msgspec.Struct):
    account_uid: str
    main_account_uid: str
    is_main: bool
    account_id: str
    key_id: str
    api_key: str
    permissions: list[str]
    key_type: int | None


class VerifyRateLimit(msgspec.Struct):
    limit: int
    remaining: int
    reset: Annotated[int, msgspec.Meta(description="Unix ms when the window resets")]


class VerifyDialectError(msgspec.Struct):
    """The answer the venue's own API gives the client: Bitget's or WhiteBIT's status and error body."""

    status: int
    content_type: str
    body: str


class VerifyAnswer(msgspec.Struct):
    valid: bool
    code: Code
    scheme: Literal["bitget", "whitebit"] | None
    identity: VerifyIdentity | None
    secret: Annotated[
        Literal["current", "previous"] | None,
        msgspec.Meta(description='which secret signed: "previous" is one a rotation replaced, in its grace period'),
    ]
    ratelimit: VerifyRateLimit | None
    error: VerifyDialectError | msgspec.UnsetType = msgspec.UNSET


class NativeError(msgspec.Struct):
    valid: Literal[False]
    code: Literal["BAD_REQUEST", "UNAUTHORIZED", "INTERNAL_ERROR"]
    message: str


class NoopAnswer(msgspec.Struct):
    ok: Literal[True]
    p: str


class NoopQuery(msgspec.Struct):
    size: Annotated[int, msgspec.Meta(ge=0, le=65536, description="the answer's size in bytes")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET
