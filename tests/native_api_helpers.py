"""Calling the native management API over HTTP with real operator tokens (tests/test_native_api_*.py)."""

from __future__ import annotations

from typing import Any

import httpx

from keyplane.services.tokens import TokenService
from keyplane.store import Store


def make_token(database_url: str, *scopes: str, name: str = "") -> tuple[str, str]:
    """A real operator token made in the server's store: (token, its id)."""
    store = Store(database_url)
    try:
        issued = TokenService(store).create(list(scopes), name=name)
    finally:
        store.close()
    return issued.secret, issued.token.id


def revoke_token(database_url: str, token_id: str) -> None:
    store = Store(database_url)
    try:
        TokenService(store).revoke(token_id)
    finally:
        store.close()


class Api:
    """An operator's HTTP client for ``/v1/``: JSON in, the response out."""

    def __init__(self, base_url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=30)

    def call(
        self, method: str, path: str, body: Any = None, *, idempotency_key: str | None = None,
        headers: dict[str, str] | None = None, params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        extra = dict(headers or {})
        if idempotency_key is not None:
            extra["Idempotency-Key"] = idempotency_key
        return self.http.request(method, path, json=body, headers=extra, params=params)

    def ok(self, method: str, path: str, body: Any = None, *, status: int = 200, **kwargs: Any) -> Any:
        response = self.call(method, path, body, **kwargs)
        assert response.status_code == status, (method, path, response.status_code, response.text)
        return response.json()

    def error(self, method: str, path: str, body: Any = None, *, status: int, code: str, **kwargs: Any) -> Any:
        response = self.call(method, path, body, **kwargs)
        assert_error(response, status, code)
        return response.json()["error"]

    def pages(self, path: str, **params: Any) -> list[Any]:
        """Every item of a list, following next_cursor."""
        items: list[Any] = []
        cursor = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            page = self.ok("GET", path, params=query)
            items += page["data"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    def close(self) -> None:
        self.http.close()


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """The one error shape: ``{"error": {"code": ..., "message": ...}}`` with the expected status and code."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) <= {"code", "message", "field"} and body["error"]["message"], body
    assert body["error"]["code"] == code, body
