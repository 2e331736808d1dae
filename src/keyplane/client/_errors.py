"""The native management API's refusals as exceptions: one class per kind, each carrying the API's machine
``code`` (stable: branch on it), its ``message`` (for people), the ``field`` at fault and the HTTP status."""

from __future__ import annotations

import httpx


class ApiError(Exception):
    """An answer of the native management API that is not a success.

    ``code`` is the API's machine code (``key_not_found``, ``idempotency_key_reused``, ...: the OpenAPI
    document at ``/openapi.json`` lists them); an answer without the API's error shape (a proxy's page)
    has the code ``unexpected_response``.
    """

    def __init__(self, status: int, code: str, message: str, field: str | None, response: httpx.Response) -> None:
        super().__init__(f"{code}: {message}" + (f" (field {field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.response = response

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"


class InvalidRequestError(ApiError):
    """400, 405, 413, 415: the call itself is wrong (a field, a parameter, a cursor, the body)."""


class AuthenticationError(ApiError):
    """401: no operator token, or one that is unknown or revoked."""


class PermissionDeniedError(ApiError):
    """403: the token lacks the scope the call needs."""


class NotFoundError(ApiError):
    """404: no such account, sub-account, key or route."""


class ConflictError(ApiError):
    """409 and 422: the call breaks a rule of the current state (a name taken, a limit reached, a state
    already set, an ``Idempotency-Key`` reused with another body or still in use)."""


class RateLimitError(ApiError):
    """429."""


class ServerError(ApiError):
    """5xx: keyplane could not answer; nothing was changed where the code is ``unavailable``."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequestError, 405: InvalidRequestError, 413: InvalidRequestError, 415: InvalidRequestError,
    401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
    409: ConflictError, 422: ConflictError, 429: RateLimitError,
}


def error_from(response: httpx.Response) -> ApiError:
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    try:
        detail = response.json()["error"]
        code, message, field = detail["code"], detail["message"], detail.get("field")
        if not isinstance(code, str) or not isinstance(message, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return cls(status, "unexpected_response", f"HTTP {status} without the API's error shape", None, response)
    return cls(status, code, message, field if isinstance(field, str) else None, response)
