"""The native management API on two ``keyplane serve`` processes over one PostgreSQL (a private instance of
this module's, tests/outage_helpers.py): racing creates with one Idempotency-Key make one object whichever
node each request reaches, a revoked token is refused by both nodes at once, and a store outage is a 503 in
the one error shape that changes nothing (the same Idempotency-Key works once the store is back)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conftest import Server, make_server
from keyplane import crypto
from keyplane.config import Settings
from keyplane.runtime import build_runtime
from native_api_helpers import Api, assert_error, make_token, revoke_token
from outage_helpers import PrivatePostgres


@dataclass
class Nodes:
    url: str
    a: Api
    b: Api
    servers: list[Server]
    postgres: PrivatePostgres


@pytest.fixture(scope="module")
def nodes(private_postgres: PrivatePostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    master = crypto.new_master_key_text()
    url = private_postgres.new_database()
    build_runtime(Settings(database_url=url, master_key=master)).close()  # migrates once
    root = tmp_path_factory.mktemp("native-cluster")
    servers = []
    for name in ("a", "b"):
        server = make_server(root / name, {"KEYPLANE_MASTER_KEY": master})
        server.database_url = url
        servers.append(server)
    try:
        for server in servers:
            server.start()
        token, _id = make_token(url, "all", name="cluster")
        yield Nodes(url, Api(servers[0].base_url, token), Api(servers[1].base_url, token), servers, private_postgres)
    finally:
        for server in servers:
            server.stop()


def _race(calls: list[tuple[Api, str, str, Any, str]]) -> list[httpx.Response]:
    """Sends every call at once (one thread each, released together); the answers in call order."""
    answers: list[httpx.Response | None] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def send(index: int) -> None:
        api, method, path, body, key = calls[index]
        barrier.wait()
        answers[index] = api.call(method, path, body, idempotency_key=key)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def test_racing_duplicates_across_two_server_processes_create_one_object(nodes: Nodes) -> None:
    main = nodes.a.ok("POST", "/v1/accounts", {"name": "race-venue"}, status=201)
    for round_ in range(3):
        body = {"account_uid": main["uid"], "dialect": "bitget", "label": f"race{round_}"}
        answers = _race([(api, "POST", "/v1/keys", body, f"race-{round_}") for api in [nodes.a, nodes.b] * 4])
        assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
        assert len({a.json()["key"]["id"] for a in answers}) == 1
        assert sum(a.json()["secret_shown"] for a in answers) == 1
    assert len(nodes.b.pages("/v1/keys", main_uid=main["uid"])) == 3

    # sub-accounts and main accounts too
    answers = _race([(api, "POST", "/v1/sub-accounts", {"main_uid": main["uid"], "name": "racersub"}, "sub-1")
                     for api in [nodes.a, nodes.b] * 3])
    assert {a.status_code for a in answers} == {201} and len({a.json()["uid"] for a in answers}) == 1
    assert len(nodes.a.pages("/v1/sub-accounts", main_uid=main["uid"])) == 1
    # one audit event per object made, read back on PostgreSQL with the list's filters
    events = nodes.b.pages("/v1/audit-events", account_uid=main["uid"], action="apikey.create,subaccount.create",
                           limit=2)
    assert sorted(e["action"] for e in events) == ["apikey.create"] * 3 + ["subaccount.create"]

    # the same key with two bodies at once: one creates, the other body is refused (whichever came second)
    answers = _race([
        (nodes.a, "POST", "/v1/accounts", {"name": "first-body"}, "two-bodies"),
        (nodes.b, "POST", "/v1/accounts", {"name": "second-body"}, "two-bodies"),
    ])
    assert sorted(a.status_code for a in answers) == [201, 422]
    made = [a.json()["name"] for a in answers if a.status_code == 201]
    names = {a["name"] for a in nodes.a.pages("/v1/accounts", name_contains="-body")}
    assert names == set(made)


def test_a_revoked_token_is_refused_by_every_node_at_once(nodes: Nodes) -> None:
    token, token_id = make_token(nodes.url, "read")
    a, b = Api(nodes.servers[0].base_url, token), Api(nodes.servers[1].base_url, token)
    a.ok("GET", "/v1/accounts")
    b.ok("GET", "/v1/accounts")
    revoke_token(nodes.url, token_id)
    a.error("GET", "/v1/accounts", status=401, code="invalid_token")
    b.error("GET", "/v1/accounts", status=401, code="invalid_token")


def test_a_store_outage_is_503_in_the_error_shape_and_changes_nothing(nodes: Nodes) -> None:
    main = nodes.a.ok("POST", "/v1/accounts", {"name": "outage-venue"}, status=201)
    body = {"account_uid": main["uid"], "dialect": "whitebit"}
    nodes.postgres.stop()
    try:
        for api in (nodes.a, nodes.b):
            for method, path, sent in (
                ("GET", "/v1/accounts", None), ("GET", f"/v1/keys?main_uid={main['uid']}", None),
                ("POST", "/v1/keys", body), ("POST", f"/v1/accounts/{main['uid']}/freeze", None),
                ("GET", "/v1/audit-events", None),
            ):
                response = api.call(method, path, sent, idempotency_key="after-outage" if sent else None)
                assert_error(response, 503, "unavailable")
                assert response.headers["retry-after"] == "1"
    finally:
        nodes.postgres.start()
    created = nodes.b.ok("POST", "/v1/keys", body, status=201, idempotency_key="after-outage")
    assert created["secret_shown"] is True
    assert [k["id"] for k in nodes.a.pages("/v1/keys", main_uid=main["uid"])] == [created["key"]["id"]]
    assert nodes.a.ok("GET", f"/v1/accounts/{main['uid']}")["status"] == "normal"
    for server in nodes.servers:
        assert "Traceback" not in server.log_path.read_text()
