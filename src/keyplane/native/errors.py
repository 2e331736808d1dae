"""The native management API's one error shape: ``{"error": {"code": "...", "message": "...", "field": ...}}``.

``code`` is a stable machine code (clients branch on it; the message is for people); ``field`` names the
request field at fault, where there is one. Every refusal of a ``/v1/`` management route, from a missing
token to an outage, leaves in this shape.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from keyplane import errors
from keyplane.http import Response


class ManagementErrorDetail(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    field: str | None = None


class ManagementError(msgspec.Struct):
    """Every refusal of the native management API."""

    error: ManagementErrorDetail


class ApiError(Exception):
    """A refusal on its way out: the route's status, its machine code and a message for people."""

    def __init__(
        self, status: int, code: str, message: str, *, field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return error_response(self.status, self.code, self.message, field=self.field, headers=self.headers)


_ENCODER = msgspec.json.Encoder()


def error_response(
    status: int, code: str, message: str, *, field: str | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    body = _ENCODER.encode(ManagementError(ManagementErrorDetail(code=code, message=message, field=field)))
    extra = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    return Response(status, body, [(b"content-type", b"application/json"), *extra])


# The domain's error tree (keyplane.errors) on the wire: the most specific class listed wins.
DOMAIN_ERRORS: dict[type[errors.KeyplaneError], tuple[int, str]] = {
    errors.InvalidName: (400, "invalid_name"),
    errors.InvalidPassphrase: (400, "invalid_passphrase"),
    errors.InvalidLabel: (400, "invalid_label"),
    errors.InvalidIp: (400, "invalid_ip"),
    errors.InvalidPermission: (400, "invalid_permission"),
    errors.InvalidEndpoint: (400, "invalid_endpoint"),
    errors.InvalidInput: (400, "invalid_request"),
    errors.AccountNotFound: (404, "account_not_found"),
    errors.ApiKeyNotFound: (404, "key_not_found"),
    errors.TokenNotFound: (404, "token_not_found"),
    errors.NotFound: (404, "not_found"),
    errors.NameTaken: (409, "name_taken"),
    errors.DuplicateInRequest: (409, "duplicate_in_request"),
    errors.IpAlreadyListed: (409, "ip_already_listed"),
    errors.IpNotListed: (409, "ip_not_listed"),
    errors.AlreadyInState: (409, "already_in_state"),
    errors.KeyNotUsable: (409, "key_not_usable"),
    errors.IdempotencyKeyReused: (422, "idempotency_key_reused"),
    errors.IdempotencyInProgress: (409, "idempotency_key_in_use"),
    errors.Conflict: (409, "conflict"),
    errors.SubAccountLimit: (409, "sub_account_limit"),
    errors.ApiKeyLimit: (409, "key_limit"),
    errors.IpLimit: (409, "ip_limit"),
    errors.BatchTooLarge: (409, "batch_too_large"),
    errors.LimitReached: (409, "limit_reached"),
    errors.NotMainAccount: (409, "not_main_account"),
    errors.Forbidden: (403, "forbidden"),
    errors.Unavailable: (503, "unavailable"),
}


def domain_error(error: errors.KeyplaneError) -> ApiError:
    for cls in type(error).__mro__:
        found = DOMAIN_ERRORS.get(cls)
        if found is not None:
            status, code = found
            break
    else:
        status, code = 400, "invalid_request"
    if status == 503:
        return ApiError(503, code, "the store is unavailable; nothing was changed, try again",
                        headers={"Retry-After": "1"})
    return ApiError(status, code, error.message, field=error.field)


# Every code this API answers outside the domain table, for the OpenAPI document and clients.
EDGE_ERRORS: dict[str, tuple[int, str]] = {
    "missing_token": (401, "no Authorization: Bearer <operator token> header"),
    "invalid_token": (401, "the operator token is unknown, malformed or revoked"),
    "insufficient_scope": (403, "the operator token lacks the scope this route needs"),
    "not_found": (404, "no such route"),
    "method_not_allowed": (405, "the route does not take this method"),
    "invalid_json": (400, "the body is not a JSON value keyplane reads"),
    "invalid_request": (400, "a field is missing, unknown, of the wrong type or out of range"),
    "invalid_parameter": (400, "a query parameter is unknown, repeated or out of range"),
    "invalid_cursor": (400, "the cursor is not one this API gave"),
    "invalid_path": (400, "the request target is not in canonical form"),
    "unsupported_media_type": (415, "a body must be application/json"),
    "payload_too_large": (413, "the body is over 64 KiB"),
    "unavailable": (503, "the store cannot be reached; nothing was changed"),
    "internal_error": (500, "a bug; logged"),
}
