"""The native management API (``/v1/``) attacked over HTTP on one live ``keyplane serve``: every route of the
route table called by every token that lacks its scope, near-miss and misplaced tokens, forged cursors,
hostile filters and bodies, idempotency keys abused. Each refusal is the one error shape, never a 5xx, and
changes nothing in the store (the rows are compared before and after)."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from conftest import Server, make_server
from keyplane.domain.tokens import Scope
from keyplane.native.api import Route
from keyplane.native.routes import ROUTES
from keyplane.services.tokens import TokenService
from keyplane.store import Store
from native_api_helpers import Api, assert_error, make_token, revoke_token

VERIFY_TOKEN = "native-attacks-verify-token-0123456789"
TABLES = ("accounts", "api_keys", "audit_events", "operator_tokens", "idempotency_keys")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("native-attacks"), {"KEYPLANE_VERIFY_TOKEN": VERIFY_TOKEN})
    srv.serve_args = ("--workers", "2")  # racing duplicates and a revocation reach two processes
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tokens(server: Server) -> dict[str, str]:
    return {scope.value: make_token(server.database_url, scope.value, name=f"{scope.value}-tok")[0] for scope in Scope}


@pytest.fixture(scope="module")
def admin(server: Server, tokens: dict[str, str]) -> Iterator[Api]:
    api = Api(server.base_url, tokens["all"])
    yield api
    api.close()


@pytest.fixture(scope="module")
def world(admin: Api) -> dict[str, Any]:
    """Two main accounts, a sub-account of each, a key of each."""
    made: dict[str, Any] = {}
    for side in ("a", "b"):
        main = admin.ok("POST", "/v1/accounts", {"name": f"victim-{side}"}, status=201)
        sub = admin.ok("POST", "/v1/sub-accounts", {"main_uid": main["uid"], "dialect": "bitget",
                                                    "name": f"victim{side}sub"}, status=201)
        key = admin.ok("POST", "/v1/keys", {"account_uid": main["uid"], "dialect": "bitget"}, status=201)
        made[side] = {"main": main, "sub": sub, "key": key["key"], "secret": key["secret"]}
    return made


def snapshot(server: Server) -> dict[str, list[tuple[Any, ...]]]:
    path = server.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}


def fill(route: Route, world: dict[str, Any]) -> str:
    a = world["a"]
    uid = a["sub"]["uid"] if route.path.startswith("/v1/sub-accounts") else a["main"]["uid"]
    return route.path.replace("{uid}", uid).replace("{id}", a["key"]["id"])


def body_of(route: Route, world: dict[str, Any]) -> Any:
    a = world["a"]
    return {
        "accounts.create": {"name": "escalated"},
        "sub_accounts.create": {"main_uid": a["main"]["uid"], "dialect": "bitget", "name": "escalatedsub"},
        "sub_accounts.update": {"name": "renamedsub"},
        "keys.create": {"account_uid": a["main"]["uid"], "dialect": "bitget"},
        "keys.update": {"label": "pwned"},
    }.get(route.name)


def test_every_route_refuses_every_token_without_its_scope_and_changes_nothing(
    server: Server, tokens: dict[str, str], world: dict[str, Any]
) -> None:
    from keyplane.domain.tokens import _GRANTS

    checked = 0
    before = snapshot(server)
    for scope in Scope:
        api = Api(server.base_url, tokens[scope.value])
        for route in ROUTES:
            if route.need in _GRANTS[scope]:
                continue
            response = api.call(route.method, fill(route, world), body_of(route, world), idempotency_key="k-esc")
            assert_error(response, 403, "insufficient_scope")
            assert tokens[scope.value] not in response.text
            checked += 1
        api.close()
    after = snapshot(server)
    # only the audit of nothing: a refused call writes no row anywhere
    assert after == before
    # read: 9 writes + audit; accounts: 6 keys routes + audit; keys: 11 accounts routes + audit; audit: 19
    assert checked == sum(1 for s in Scope for r in ROUTES if r.need not in _GRANTS[s])
    assert checked >= 40


@pytest.mark.parametrize("header", [
    "Bearer kpt_" + "A" * 42,  # one short
    "Bearer kpt_" + "A" * 44,  # one long
    "Bearer kpx_" + "A" * 43,  # another prefix
    "Bearer KPT_" + "A" * 43,
    "Bearer  kpt_" + "A" * 43 + " x",
    "Bearer kpt_" + "Ä" * 43,
    "Bearer kpt_" + "A" * 100_000,  # very long (the server may refuse the header itself)
    "Bearer " + "%00" * 20,
    "Token kpt_" + "A" * 43,
    "kpt_" + "A" * 43,
])
def test_near_miss_tokens_are_401(server: Server, header: str) -> None:
    raw = header.encode("utf-8")
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        response = http.get("/v1/accounts", headers=[(b"Authorization", raw)])
    assert response.status_code in (401, 431, 400), response.status_code
    if response.status_code == 401:
        assert response.json()["error"]["code"] == "invalid_token"


def test_a_token_differing_in_its_last_character_or_case_is_refused(server: Server, tokens: dict[str, str]) -> None:
    real = tokens["all"]
    for wrong in (real[:-1] + ("a" if real[-1] != "a" else "b"), real.swapcase(), real[:-1], real + "0"):
        assert_error(Api(server.base_url, wrong).call("GET", "/v1/accounts"), 401, "invalid_token")


def test_a_token_anywhere_but_the_authorization_header_is_ignored(server: Server, tokens: dict[str, str]) -> None:
    token = tokens["all"]
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        assert_error(http.get("/v1/accounts", params={"access_token": token}), 401, "missing_token")
        assert_error(http.get("/v1/accounts", params={"token": token}), 401, "missing_token")
        assert_error(http.get("/v1/accounts", headers={"Cookie": f"access_token={token}; keyplane_console={token}"}),
                     401, "missing_token")
        assert_error(http.get("/v1/accounts", headers={"X-Api-Key": token}), 401, "missing_token")
        assert_error(http.get("/v1/accounts", headers={"Authorization": f"Basic {token}"}), 401, "invalid_token")


def test_a_revoked_token_racing_calls_stops_at_its_revocation(server: Server) -> None:
    token, token_id = make_token(server.database_url, "accounts")
    api = Api(server.base_url, token)
    api.ok("GET", "/v1/accounts")
    revoke_token(server.database_url, token_id)
    before = snapshot(server)
    for _ in range(5):
        api.error("POST", "/v1/accounts", {"name": "after-revoke"}, status=401, code="invalid_token")
    assert snapshot(server) == before


def test_no_token_text_in_the_log_the_audit_or_an_answer(server: Server, tokens: dict[str, str],
                                                         world: dict[str, Any]) -> None:
    admin = Api(server.base_url, tokens["all"])
    admin.error("GET", "/v1/keys/nope", status=404, code="key_not_found")
    admin.http.post("/v1/accounts", content=b"{", headers={"content-type": "application/json"})
    for event in admin.pages("/v1/audit-events"):
        assert not any(t in json.dumps(event) for t in tokens.values())
    dump = repr(snapshot(server))
    log = server.log_path.read_text()
    for token in tokens.values():
        assert token not in dump and token[4:] not in dump
        assert token not in log
    assert world["a"]["secret"] not in log and world["a"]["secret"] not in dump
    store = Store(server.database_url)
    issued = TokenService(store).create(["read"], name="repr")
    store.close()
    assert issued.secret not in repr(issued) and issued.secret not in repr(issued.token)


# IDOR: an id of one kind where another is expected -------------------------------------------------------


def test_ids_of_the_wrong_kind_are_not_found_and_change_nothing(server: Server, admin: Api,
                                                                world: dict[str, Any]) -> None:
    a, b = world["a"], world["b"]
    before = snapshot(server)
    # a main account's UID on sub-account routes, a sub-account's on main-account routes
    admin.error("PATCH", f"/v1/sub-accounts/{a['main']['uid']}", {"name": "x1"}, status=404, code="account_not_found")
    admin.error("DELETE", f"/v1/sub-accounts/{b['main']['uid']}", status=404, code="account_not_found")
    admin.error("POST", f"/v1/sub-accounts/{a['main']['uid']}/freeze", status=404, code="account_not_found")
    admin.error("POST", f"/v1/accounts/{a['sub']['uid']}/freeze", status=404, code="account_not_found")
    admin.error("DELETE", f"/v1/accounts/{b['sub']['uid']}", status=404, code="account_not_found")
    # a sub-account as the main account of a new sub-account
    admin.error("POST", "/v1/sub-accounts", {"main_uid": a["sub"]["uid"], "dialect": "bitget", "name": "nested"},
                status=404, code="account_not_found")
    # key ids that are account ids, api keys, or paths
    for key_id in (a["main"]["uid"], a["key"].get("api_key", "apikey"),
                   "..", "%2e%2e", a["key"]["id"] + "%00", a["key"]["id"].upper()):
        response = admin.call("DELETE", f"/v1/keys/{key_id}")
        assert response.status_code in (400, 404), (key_id, response.text)
    # uids that are not uids
    for uid in ("-1", "0", "1e3", "9" * 40, "%20" + a["main"]["uid"], a["main"]["uid"] + ".0", "٣"):
        response = admin.call("POST", f"/v1/accounts/{uid}/freeze")
        assert response.status_code in (400, 404), (uid, response.text)
    assert snapshot(server) == before


# paging ---------------------------------------------------------------------------------------------------


def cursor(*items: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(items)).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(("path", "forged"), [
    ("/v1/accounts", cursor("sub-accounts", 1)),  # another list's
    ("/v1/sub-accounts", cursor("accounts", 1)),
    ("/v1/keys", cursor("accounts", 1)),
    ("/v1/accounts", cursor("accounts", -1)),
    ("/v1/accounts", cursor("accounts", 2**63)),
    ("/v1/accounts", cursor("accounts", 10**40)),
    ("/v1/sub-accounts", cursor("sub-accounts", -(10**40))),
    ("/v1/accounts", cursor("accounts", 1.5)),
    ("/v1/accounts", cursor("accounts", True)),
    ("/v1/accounts", cursor("accounts", "1")),
    ("/v1/keys", cursor("keys", 10**40, "k")),
    ("/v1/keys", cursor("keys", -(2**63) - 1, "k")),
    ("/v1/keys", cursor("keys", 1, "x" * 5000)),
    ("/v1/keys", cursor("keys", 1, "\u0000")),
    ("/v1/audit-events", cursor("audit", 10**40)),
    ("/v1/audit-events", cursor("audit-events", 10**40)),
    ("/v1/accounts", "!!!"),
    ("/v1/accounts", "W10"),
    ("/v1/accounts", cursor({"a": 1})),
    ("/v1/accounts", base64.urlsafe_b64encode(b"\xff\xfe").decode()),
    ("/v1/accounts", "[" * 3000),
])
def test_forged_cursors_are_400_never_5xx(admin: Api, world: dict[str, Any], path: str, forged: str) -> None:
    response = admin.call("GET", path, params={"cursor": forged})
    assert response.status_code in (200, 400), (path, forged[:80], response.status_code, response.text)
    if response.status_code == 400:
        assert response.json()["error"]["code"] in ("invalid_cursor", "invalid_parameter")


@pytest.mark.parametrize("value", ["%", "_", "%' OR 1=1 --", "\\", "' OR ''='", "*", "a%b", "\u202e", "x" * 65])
def test_filters_with_injection_like_values(admin: Api, world: dict[str, Any], value: str) -> None:
    response = admin.call("GET", "/v1/accounts", params={"name_contains": value})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        # a LIKE wildcard is a character, not a pattern: nothing here is in any name
        assert response.json()["data"] == [], (value, response.json())
    for path, name in (("/v1/keys", "account_uid"), ("/v1/sub-accounts", "main_uid"), ("/v1/keys", "dialect"),
                       ("/v1/audit-events", "action"), ("/v1/audit-events", "target")):
        response = admin.call("GET", path, params={name: value})
        assert response.status_code in (200, 400), (path, name, response.text)


# bodies ---------------------------------------------------------------------------------------------------


def raw(admin: Api, method: str, path: str, content: bytes, content_type: str | None = "application/json",
        **headers: str) -> httpx.Response:
    extra = {**headers, **({"content-type": content_type} if content_type else {})}
    return admin.http.request(method, path, content=content, headers=extra)


@pytest.mark.parametrize(("content", "content_type", "status", "code"), [
    (b'{"name": "x", "admin": true}', "application/json", 400, "invalid_request"),
    (b'{"name": 5}', "application/json", 400, "invalid_request"),
    (b'{"name": null}', "application/json", 400, "invalid_request"),
    (b'{"name": ["a"]}', "application/json", 400, "invalid_request"),
    (b"[]", "application/json", 400, "invalid_request"),
    (b'"name"', "application/json", 400, "invalid_request"),
    (b"{", "application/json", 400, "invalid_json"),
    (b'{"name": "a\\u0000b"}', "application/json", 400, "invalid_json"),
    (b'{"name": "\xff"}', "application/json", 400, "invalid_json"),
    (b"[" * 100 + b"]" * 100, "application/json", 400, "invalid_json"),
    (b'{"a":' * 5000 + b"1" + b"}" * 5000, "application/json", 400, "invalid_json"),
    (b"name=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    (b"<a/>", "text/xml", 415, "unsupported_media_type"),
    (b'{"name": "x"}', "text/plain", 415, "unsupported_media_type"),
    (b'{"name": "' + b"x" * 70_000 + b'"}', "application/json", 413, "payload_too_large"),
    (b"", "application/json", 400, "invalid_json"),
])
def test_hostile_bodies_are_refused_and_change_nothing(server: Server, admin: Api, content: bytes,
                                                       content_type: str, status: int, code: str) -> None:
    before = snapshot(server)
    assert_error(raw(admin, "POST", "/v1/accounts", content, content_type), status, code)
    assert snapshot(server) == before


def test_duplicate_json_keys_do_not_smuggle_a_value(server: Server, admin: Api, world: dict[str, Any]) -> None:
    """Two ``name`` keys: the one that is checked is the one that is stored (the last, as msgspec reads)."""
    response = raw(admin, "POST", "/v1/accounts", b'{"name": "dup-first", "name": "dup-second"}')
    if response.status_code == 201:
        assert response.json()["name"] == "dup-second"
        got = admin.ok("GET", f"/v1/accounts/{response.json()['uid']}")
        assert got["name"] == "dup-second"
    else:
        assert_error(response, 400, response.json()["error"]["code"])
    key = world["a"]["key"]
    before = snapshot(server)
    response = raw(admin, "PATCH", f"/v1/keys/{key['id']}", b'{"ip_list": [], "ip_list": ["not an ip"]}')
    assert response.status_code == 400, response.text
    assert snapshot(server) == before


def test_methods_not_allowed_name_the_allowed_ones(server: Server, admin: Api, world: dict[str, Any]) -> None:
    before = snapshot(server)
    for method, path in (("PUT", "/v1/accounts"), ("DELETE", "/v1/accounts"), ("PATCH", "/v1/audit-events"),
                         ("POST", f"/v1/keys/{world['a']['key']['id']}"), ("TRACE", "/v1/keys"),
                         ("OPTIONS", "/v1/accounts")):
        response = admin.http.request(method, path)
        assert response.status_code == 405, (method, path, response.status_code)
        assert response.headers["allow"]
    for path in ("/v1/accounts/", "/v1//accounts", "/v1/accounts/1/2/3", "/v1/ACCOUNTS", "/v1/", "/v1/tokens"):
        # outside the management prefixes /v1/ is the verification plane's (its own token): 401 there
        assert admin.call("GET", path).status_code in (400, 401, 404, 405), path
    assert snapshot(server) == before


def test_query_parameters_abused(admin: Api) -> None:
    for query in ("limit=0", "limit=-1", "limit=201", "limit=1e2", "limit=%00", "limit=1&limit=2", "nope=1",
                  "cursor=", "status=normal%00", "a" * 5000, "%ff=1", "limit=" + "9" * 1000):
        response = admin.http.get("/v1/accounts?" + query)
        assert response.status_code == 400, (query, response.status_code, response.text)
        assert response.json()["error"]["code"] in ("invalid_parameter", "invalid_cursor")


# idempotency ----------------------------------------------------------------------------------------------


def test_idempotency_key_reused_with_another_body_or_route(server: Server, admin: Api,
                                                         world: dict[str, Any]) -> None:
    main = world["b"]["main"]["uid"]
    first = admin.ok("POST", "/v1/keys", {"account_uid": main, "dialect": "bitget"}, status=201,
                     idempotency_key="idem-attack-1")
    assert first["secret"]
    before = snapshot(server)
    # the same request again: the first answer, without its secret
    again = admin.call("POST", "/v1/keys", {"account_uid": main, "dialect": "bitget"},
                       idempotency_key="idem-attack-1")
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert first["secret"] not in again.text and (first.get("passphrase") or "\0") not in again.text
    assert again.json()["key"]["id"] == first["key"]["id"] and again.json()["secret_shown"] is False
    # another body, another route
    admin.error("POST", "/v1/keys", {"account_uid": main, "dialect": "whitebit"}, status=422,
                code="idempotency_key_reused", idempotency_key="idem-attack-1")
    admin.error("POST", "/v1/accounts", {"name": "other-route"}, status=422, code="idempotency_key_reused",
                idempotency_key="idem-attack-1")
    after = snapshot(server)
    assert {t: after[t] for t in TABLES if t != "idempotency_keys"} == \
        {t: before[t] for t in TABLES if t != "idempotency_keys"}


def test_another_token_cannot_read_an_answer_through_a_guessed_idempotency_key(
    server: Server, tokens: dict[str, str], world: dict[str, Any]
) -> None:
    """Keys are per token: another token with the same key and body runs its own create, never replays the
    first token's answer (which would hand it the object made by another operator)."""
    body = {"account_uid": world["b"]["main"]["uid"], "dialect": "bitget"}
    first = Api(server.base_url, tokens["all"]).ok("POST", "/v1/keys", body, status=201,
                                                    idempotency_key="idem-shared")
    other = Api(server.base_url, tokens["keys"]).call("POST", "/v1/keys", body, idempotency_key="idem-shared")
    assert other.status_code == 201 and "idempotent-replayed" not in other.headers
    assert other.json()["key"]["id"] != first["key"]["id"]


@pytest.mark.parametrize("key", ["", "k" * 256, "é", "a b", "a\tb", "\u202e"])
def test_idempotency_keys_out_of_bounds_are_400(server: Server, admin: Api, key: str) -> None:
    before = snapshot(server)
    response = admin.http.post("/v1/accounts", json={"name": "idem-bounds"},
                               headers=[(b"Idempotency-Key", key.encode("utf-8"))])
    assert response.status_code == 400, (key, response.status_code, response.text)
    assert snapshot(server) == before


def test_racing_duplicates_make_one_key_and_show_its_secret_once(server: Server, admin: Api, tokens: dict[str, str],
                                                                world: dict[str, Any]) -> None:
    body = {"account_uid": world["b"]["sub"]["uid"], "dialect": "whitebit"}
    barrier = threading.Barrier(8)

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.base_url, timeout=30,
                          headers={"Authorization": f"Bearer {tokens['all']}"}) as http:
            barrier.wait()
            return http.post("/v1/keys", json=body, headers={"Idempotency-Key": "idem-race"})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
    assert len({a.json()["key"]["id"] for a in answers}) == 1
    shown = [a for a in answers if a.json()["secret_shown"]]
    assert len(shown) == 1 and all(a.headers.get("idempotent-replayed") == "true" for a in answers if a not in shown)
    secret = shown[0].json()["secret"]
    assert all(secret not in a.text for a in answers if a is not shown[0])
    assert secret not in repr(snapshot(server))  # the recorded answer holds no secret either
    keys = admin.ok("GET", "/v1/keys", params={"account_uid": world["b"]["sub"]["uid"], "dialect": "whitebit"})
    assert len(keys["data"]) == 1


def test_the_longest_idempotency_key_works(admin: Api) -> None:
    key = "".join(chr(33 + i % 94) for i in range(255))
    first = admin.ok("POST", "/v1/accounts", {"name": "idem-longest"}, status=201, idempotency_key=key)
    again = admin.call("POST", "/v1/accounts", {"name": "idem-longest"}, idempotency_key=key)
    assert again.json()["uid"] == first["uid"]


# /openapi.json and /docs ----------------------------------------------------------------------------------


def test_the_document_and_docs_hold_no_secret_token_or_address(server: Server, admin: Api, tokens: dict[str, str],
                                                               world: dict[str, Any]) -> None:
    """Served without a token, so it must say nothing a caller could not learn from the code: no key,
    secret, passphrase, operator or verify token, master key, store path or the server's own address."""
    master = (server.workdir / "keyplane.db.master-key").read_text().strip()
    secrets_ = [*tokens.values(), VERIFY_TOKEN, master, world["a"]["secret"], world["b"]["secret"],
                world["a"]["key"]["api_key"], server.database_url, str(server.workdir)]
    port = server.base_url.rsplit(":", 1)[1]
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for path in ("/openapi.json", "/docs"):
            response = http.get(path, follow_redirects=True)
            assert response.status_code == 200, (path, response.status_code)
            for secret in secrets_:
                assert secret not in response.text, (path, secret[:12])
            assert f":{port}" not in response.text and "127.0.0.1" not in response.text, path
        document = http.get("/openapi.json").json()
        # every management route names the operator-token scheme: none is documented as open
        for path, item in document["paths"].items():
            for method, operation in item.items():
                if path.startswith(("/v1/accounts", "/v1/sub-accounts", "/v1/keys", "/v1/audit-events")):
                    assert operation.get("security") == [{"OperatorToken": []}], (method, path)


@pytest.mark.parametrize("extra", [
    {"public_key_pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
    {"public_key_pem": "-----BEGIN PUBLIC KEY-----\n" + "A" * 60_000 + "\n-----END PUBLIC KEY-----\n"},
    {"public_key_pem": "\ud800"},
    {"public_key_pem": ""},
    {"passphrase": "\ud800" * 4},
    {"passphrase": "p" * 10_000},
    {"passphrase": ""},
    {"ip_list": ["1.2.3.4/999"]},
    {"ip_list": ["::ffff:1.2.3.4/129"]},
    {"ip_list": ["0.0.0.0/0"] * 500},
    {"ip_list": ["1.2.3.4%eth0"]},
    {"ip_list": "1.2.3.4"},
    {"permissions": ["admin"]},
    {"permissions": ["read", "read,admin"]},
    {"permissions": "read"},
    {"key_type": 3},
    {"key_type": 2**70},
    {"label": "\u0000"},
    {"account_uid": "1" * 19},
    {"account_uid": "-1"},
    {"account_uid": 1},
    {"dialect": "BITGET"},
])
def test_hostile_key_creates_are_4xx_and_change_nothing(server: Server, admin: Api, world: dict[str, Any],
                                                        extra: dict[str, Any]) -> None:
    body = {"account_uid": world["a"]["main"]["uid"], "dialect": "bitget", **extra}
    before = snapshot(server)
    response = admin.http.post("/v1/keys", content=json.dumps(body).encode(),
                               headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, (extra, response.status_code, response.text[:300])
    assert snapshot(server) == before


def test_the_sdk_sends_a_dot_id_as_one_segment_never_a_level_up(server: Server, tokens: dict[str, str]) -> None:
    """The server refuses the escaped dots as a non-canonical path: the id reaches no other route."""
    from keyplane.client import ApiError, Client

    with Client(server.base_url, token=tokens["all"]) as client:
        for call in (lambda: client.keys.delete(".."), lambda: client.keys.get("."),
                     lambda: client.accounts.delete(".."), lambda: client.sub_accounts.freeze(".")):
            with pytest.raises(ApiError) as refused:
                call()
            assert refused.value.code == "invalid_path", refused.value
