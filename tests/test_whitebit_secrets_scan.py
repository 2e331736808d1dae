"""No WhiteBIT API secret in plaintext: not in the SQLite database or its WAL, not in the server log, not in
the audit log, not in any response body except the ones that show a new secret once (the operator's
``keyplane keys create``, ``sub-account/api-key/create`` and ``sub-account/api-key/reset``).

This module runs its own server through every WhiteBIT route, success and refusal, including refusals
whose requests carry a secret in a field, then scans."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients.whitebit_http import Operator, WhitebitClient, compact
from conftest import Server, make_server

SUB = "/api/v4/sub-account/"
KEYS = "/api/v4/sub-account/api-key/"
IPS = "/api/v4/sub-account/api-key/ip-address/"
SHOWS_SECRET = (KEYS + "create", KEYS + "reset")


@dataclass
class Recorder:
    secrets: set[str] = field(default_factory=set)
    bodies: list[tuple[str, int, bytes]] = field(default_factory=list)

    def client(self, base_url: str, api_key: str, secret: str) -> RecordingClient:
        return RecordingClient(base_url, api_key, secret, recorder=self)


@dataclass
class RecordingClient(WhitebitClient):
    recorder: Recorder = field(default_factory=Recorder)

    def post_raw(self, path: str, body: bytes, **kwargs: Any) -> httpx.Response:
        response = super().post_raw(path, body, **kwargs)
        self.recorder.bodies.append((path, response.status_code, response.content))
        if path in SHOWS_SECRET and response.status_code in (200, 201):
            self.recorder.secrets.add(response.json()["apiSecret"])
        return response


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(Path(tmp_path_factory.mktemp("whitebit-secrets-scan")))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def record(server: Server) -> Recorder:
    """Every WhiteBIT route, success and refusal, with keys made every way; what was issued and seen."""
    rec = Recorder()
    uid = server.main_account("scan")
    cli_key = server.whitebit_main_key(uid)  # the operator's command shows this secret once
    rec.secrets.add(cli_key["apiSecret"])
    operator = Operator(server.database_url)
    try:
        made = operator.whitebit_main_key(uid)
    finally:
        operator.close()
    rec.secrets.add(made["apiSecret"])
    main = rec.client(server.base_url, cli_key["apiKey"], cli_key["apiSecret"])
    other_main = rec.client(server.base_url, made["apiKey"], made["apiSecret"])

    perms = {"spotEnabled": True, "collateralEnabled": True}
    sub = main.call(
        SUB + "create", {"alias": "scan" + secrets.token_hex(4), "shareKyc": True, "permissions": perms}, 201
    )
    keys = [
        main.call(KEYS + "create", {"type": t, "subAccountId": sub["id"], "title": f"scan {t}"}, 201) for t in (1, 2, 2)
    ]
    first, second, third = keys
    main.call(
        KEYS + "edit",
        {"apiKeyId": first["id"], "title": "edited", "urls": [{"url": "/api/v4/order/new", "enable": True}]},
    )
    main.call(IPS + "create", {"apiKeyId": first["id"], "ip": "127.0.0.1"}, 201)
    main.call(IPS + "list", {"apiKeyId": first["id"]})
    reset = main.call(KEYS + "reset", {"apiKeyId": first["id"]})
    other_main.call(KEYS + "list", {})
    main.call(KEYS + "list", {"subAccountId": sub["id"]})
    main.call(SUB + "list", {"search": "scan"})
    main.call(SUB + "edit", {"id": sub["id"], "alias": sub["alias"], "permissions": perms})
    main.call(SUB + "block", {"id": sub["id"]})
    main.call(SUB + "unblock", {"id": sub["id"]})
    main.post(SUB + "balances", {"id": sub["id"]})

    # refusals, several carrying a secret where an id, an IP or an alias belongs: none may be echoed
    secret = second["apiSecret"]
    for path, fields in (
        (KEYS + "reset", {"apiKeyId": secret}),
        (KEYS + "delete", {"apiKeyId": secret}),
        (KEYS + "edit", {"apiKeyId": first["id"], "title": "t", "urls": [{"url": secret, "enable": True}]}),
        (KEYS + "edit", {"apiKeyId": first["id"], "title": secret + secret + secret, "urls": []}),
        (IPS + "create", {"apiKeyId": first["id"], "ip": secret}),
        (IPS + "delete", {"apiKeyId": first["id"], "ip": secret}),
        (KEYS + "create", {"type": 1, "subAccountId": secret, "title": "t"}),
        (SUB + "delete", {"id": secret}),
        (SUB + "create", {"alias": secret * 3, "email": secret, "permissions": perms}),
    ):
        assert main.post(path, fields).status_code >= 400, path
    body = compact(main.body(SUB + "list"))
    assert main.post_raw(SUB + "list", body, signature="00").status_code == 401  # a bad signature
    assert main.post_raw(SUB + "list", body).status_code == 200
    assert main.post_raw(SUB + "list", body).status_code == 429  # a replay
    # sub-account keys at a main-account route, with their old and new secrets
    rec.client(server.base_url, first["apiKey"], first["apiSecret"]).post(SUB + "list")
    rec.client(server.base_url, first["apiKey"], reset["apiSecret"]).post(SUB + "list")
    rec.client(server.base_url, third["apiKey"], third["apiSecret"]).post(SUB + "list")
    main.call(KEYS + "delete", {"apiKeyId": third["id"]})
    main.call(SUB + "list")
    rec.bodies.append(("cli:audit", 0, json.dumps(server.cli("audit")).encode()))
    assert len(rec.secrets) == 2 + 3 + 1
    return rec


def leaks(data: bytes, found: set[str]) -> list[str]:
    return sorted(s for s in found if s.encode() in data or s.upper().encode() in data)


def test_the_creation_responses_showed_each_secret(record: Recorder) -> None:
    shown = [body for path, status, body in record.bodies if path in SHOWS_SECRET and status in (200, 201)]
    assert len(shown) == 4
    assert all(len(leaks(body, record.secrets)) == 1 for body in shown)


def test_no_other_response_body_carries_a_secret(record: Recorder) -> None:
    scanned = 0
    for path, status, body in record.bodies:
        if path in SHOWS_SECRET and status in (200, 201):
            continue
        assert leaks(body, record.secrets) == [], (path, status, body[:300])
        scanned += 1
    assert scanned >= 25


def test_no_secret_in_the_database_its_wal_or_the_server_log(server: Server, record: Recorder) -> None:
    files = [server.workdir / name for name in ("keyplane.db", "keyplane.db-wal", "server.log")]
    present = [path for path in files if path.exists()]
    assert server.workdir / "keyplane.db" in present and server.log_path in present
    for path in present:
        assert leaks(path.read_bytes(), record.secrets) == [], path
    # the database holds the keys (sealed), so the scan looked at the right file
    database = (server.workdir / "keyplane.db").read_bytes() + (
        (server.workdir / "keyplane.db-wal").read_bytes() if (server.workdir / "keyplane.db-wal").exists() else b""
    )
    listed = [json.loads(body) for path, status, body in record.bodies if path == KEYS + "list" and status == 200]
    api_keys = {key["apiKey"] for page in listed for key in page["data"]}
    assert api_keys and all(key.encode() in database for key in api_keys)
