"""What the security tests share: raw HTTP (no client library normalizing the target), requests signed
by hand over exactly the target sent, ``/v1/verify`` calls, and a snapshot of everything a request could
change in a server's store (rows and audit events; WhiteBIT's nonces are proven unspent by reuse)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from conftest import Server

TOKEN = "security-verify-token-" + "9" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_http(
    base_url: str, method: bytes, target: bytes, headers: dict[str, str], body: bytes = b"",
    extra_lines: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> Answer:
    """One HTTP/1.1 request with the request line exactly as given (httpx would normalize it);
    ``extra_lines``: header lines after ``headers``, a name possibly more than once."""
    parts = urlsplit(base_url)
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + parts.netloc.encode(), b"Connection: close"]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in [*headers.items(), *extra_lines]]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, payload = received.partition(b"\r\n\r\n")
    return Answer(int(head.split(b" ", 2)[1]), payload)


def bitget_headers(key: dict[str, Any], method: str, path: str, query: str = "", body: str = "") -> dict[str, str]:
    """ACCESS-* headers signed over exactly ``method``, ``path``, ``query`` and ``body`` as given."""
    timestamp = str(now_ms())
    message = timestamp + method + path + (f"?{query}" if query else "") + body
    sign = base64.b64encode(hmac.new(key["secretKey"].encode(), message.encode(), hashlib.sha256).digest())
    return {
        "ACCESS-KEY": key["apiKey"],
        "ACCESS-SIGN": sign.decode(),
        "ACCESS-TIMESTAMP": timestamp,
        "ACCESS-PASSPHRASE": key["passphrase"],
        "Content-Type": "application/json",
    }


_nonces = iter(range(now_ms() * 1000, 2**62))


def nonce_pair() -> tuple[int, int]:
    """Two fresh nonces, the first lower: sign a refused request with the higher and a later one with the
    lower, and the later one passes only if the refused request recorded nothing."""
    lower = next(_nonces)
    return lower, next(_nonces)


def whitebit_signed(
    key: dict[str, Any], path: str, fields: dict[str, Any] | None = None, nonce: int | None = None
) -> tuple[dict[str, str], str]:
    """(headers, body) of a WhiteBIT request whose payload names ``path`` as its ``request``."""
    nonce = next(_nonces) if nonce is None else nonce
    body = json.dumps({"request": path, "nonce": nonce, **(fields or {})}, separators=(",", ":"))
    payload = base64.b64encode(body.encode()).decode()
    signature = hmac.new(key["apiSecret"].encode(), payload.encode(), hashlib.sha512).hexdigest()
    headers = {
        "X-TXC-APIKEY": key["apiKey"],
        "X-TXC-PAYLOAD": payload,
        "X-TXC-SIGNATURE": signature,
        "Content-Type": "application/json",
    }
    return headers, body


def verify_call(
    server: Server, method: str, uri: str, headers: dict[str, str], body: str = "", **extra: Any
) -> dict[str, Any]:
    """``POST /v1/verify`` with the gateway's token; the call itself must be well-formed (200)."""
    call = {"method": method, "uri": uri, "headers": headers, "body": body, "client_ip": "127.0.0.1", **extra}
    answer = raw_http(
        server.base_url, b"POST", b"/v1/verify", {**AUTH, "Content-Type": "application/json"}, json.dumps(call).encode()
    )
    assert answer.status == 200, answer.body
    return dict(answer.json())


def dialect_error(out: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The error a /v1/verify answer carries for the gateway to return: (status, body)."""
    assert out["valid"] is False and out["identity"] is None, out
    body = json.loads(out["error"]["body"])
    body.pop("requestTime", None)
    return out["error"]["status"], body


BITGET_BAD_TARGET = (400, {"code": "40017", "msg": "Parameter verification failed", "data": None})
BITGET_NOT_FOUND = (404, {"code": "40404", "msg": "Request URL NOT FOUND", "data": None})
WHITEBIT_BAD_TARGET = (400, {"code": 9, "message": "Invalid payload.", "errors": {}})
WHITEBIT_NOT_FOUND = (404, {"message": "Not found"})


def bitget_answer(answer: Answer) -> tuple[int, dict[str, Any]]:
    body = answer.json()
    body.pop("requestTime", None)
    return answer.status, body


def store_state(server: Server) -> dict[str, Any]:
    """Every row a management request or a verification could add or change, and the audit log."""
    engine = sa.create_engine(server.database_url)
    try:
        with engine.connect() as conn:
            return {
                table: [tuple(row) for row in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1")]
                for table in ("accounts", "api_keys", "audit_events")
            }
    finally:
        engine.dispose()
