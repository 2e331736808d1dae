"""The native management API (issue 11, item 1) over HTTP against a live ``keyplane serve`` (granian), with
real operator tokens: scopes refused and granted, every lifecycle step, paging and filters, idempotent
creates, the audit trail naming the token, bad input answered in the one error shape and never a 5xx."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from conftest import Server, make_server
from native_api_helpers import Api, assert_error, make_token, revoke_token
from test_cli_operator import _bitget_ok

VERIFY_TOKEN = "metrics-and-verify-token-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("native-api"), {
        "KEYPLANE_VERIFY_TOKEN": VERIFY_TOKEN, "KEYPLANE_LAST_USED_FLUSH": "0.2",
    })
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[Api]:
    token, _id = make_token(server.database_url, "all", name="admin")
    api = Api(server.base_url, token)
    yield api
    api.close()


_names = iter(range(10_000))


def name(prefix: str = "acct") -> str:
    return f"{prefix}{next(_names):04d}{int(time.time() * 1000) % 100_000}"


def sub_name() -> str:
    return "".join(chr(ord("a") + int(d)) for d in f"{next(_names):04d}{time.time_ns() % 10_000:04d}")


# tokens and scopes ----------------------------------------------------------------------------------------


def test_missing_malformed_unknown_and_revoked_tokens_are_401(server: Server) -> None:
    anonymous = Api(server.base_url, None)
    assert_error(anonymous.call("GET", "/v1/accounts"), 401, "missing_token")
    response = anonymous.call("GET", "/v1/keys", headers={"Authorization": "Basic YWxhZGRpbjpvcGVu"})
    assert_error(response, 401, "invalid_token")
    assert response.headers["www-authenticate"].startswith("Bearer")
    for wrong in ("Bearer", "Bearer kpt_short", "Bearer " + "kpt_" + "A" * 43, f"Bearer {VERIFY_TOKEN}"):
        assert_error(anonymous.call("GET", "/v1/accounts", headers={"Authorization": wrong}), 401, "invalid_token")

    token, token_id = make_token(server.database_url, "all")
    api = Api(server.base_url, token)
    api.ok("GET", "/v1/accounts")
    revoke_token(server.database_url, token_id)
    # every node sees it at once: the token is looked up in the store on every call
    api.error("GET", "/v1/accounts", status=401, code="invalid_token")
    api.error("POST", "/v1/accounts", {"name": name()}, status=401, code="invalid_token")
    # a bearer token is never written to the log
    assert token not in server.log_path.read_text()


def test_scopes_grant_what_they_name_and_refuse_the_rest_with_403(server: Server, admin: Api) -> None:
    main = admin.ok("POST", "/v1/accounts", {"name": name()}, status=201)
    key = admin.ok("POST", "/v1/keys", {"account_uid": main["uid"], "dialect": "bitget"}, status=201)["key"]
    apis = {scope: Api(server.base_url, make_token(server.database_url, scope)[0])
            for scope in ("read", "accounts", "keys", "audit")}
    calls = {
        "read accounts": ("GET", f"/v1/accounts/{main['uid']}", None),
        "read keys": ("GET", f"/v1/keys/{key['id']}", None),
        "write accounts": ("POST", "/v1/accounts", {"name": name()}),
        "write keys": ("PATCH", f"/v1/keys/{key['id']}", {"label": "scoped"}),
        "read audit": ("GET", "/v1/audit-events", None),
    }
    granted = {
        "read": {"read accounts", "read keys"},
        "accounts": {"read accounts", "write accounts"},
        "keys": {"read keys", "write keys"},
        "audit": {"read audit"},
    }
    for scope, api in apis.items():
        for what, (method, path, body) in calls.items():
            response = api.call(method, path, body)
            if what in granted[scope]:
                assert response.status_code < 300, (scope, what, response.text)
            else:
                assert_error(response, 403, "insufficient_scope")
                assert "scope" in response.json()["error"]["message"]
        api.close()


# lifecycle ------------------------------------------------------------------------------------------------


def test_main_account_lifecycle(admin: Api) -> None:
    made = admin.ok("POST", "/v1/accounts", {"name": name("Life")}, status=201)
    assert re.fullmatch(r"\d{10}", made["uid"]) and made["status"] == "normal"
    assert admin.ok("GET", f"/v1/accounts/{made['uid']}") == made
    admin.error("POST", "/v1/accounts", {"name": made["name"].upper()}, status=409, code="name_taken")
    frozen = admin.ok("POST", f"/v1/accounts/{made['uid']}/freeze")
    assert frozen["status"] == "freeze"
    admin.error("POST", f"/v1/accounts/{made['uid']}/freeze", status=409, code="already_in_state")
    assert admin.ok("POST", f"/v1/accounts/{made['uid']}/unfreeze")["status"] == "normal"
    key = admin.ok("POST", "/v1/keys", {"account_uid": made["uid"], "dialect": "whitebit"}, status=201)["key"]
    admin.error("DELETE", f"/v1/accounts/{made['uid']}", status=409, code="already_in_state")
    admin.ok("DELETE", f"/v1/keys/{key['id']}")
    assert admin.ok("DELETE", f"/v1/accounts/{made['uid']}") == {"id": made["uid"], "deleted": True}
    admin.error("GET", f"/v1/accounts/{made['uid']}", status=404, code="account_not_found")
    for bad in ("abc", "1" * 25, "0", "9" * 19):
        admin.error("GET", f"/v1/accounts/{bad}", status=404, code="account_not_found")
        admin.error("POST", f"/v1/sub-accounts/{bad}/freeze", status=404, code="account_not_found")
    big = "9" * 19  # past 64 bits: refused at the edge, never an overflow in SQL
    for path in ("/v1/keys", "/v1/sub-accounts", "/v1/audit-events"):
        admin.error("GET", path, params={"main_uid" if "audit" not in path else "account_uid": big}, status=400,
                    code="invalid_parameter")
    admin.error("POST", "/v1/keys", {"account_uid": big, "dialect": "bitget"}, status=400, code="invalid_request")
    admin.error("POST", "/v1/sub-accounts", {"main_uid": big, "name": "bigparent"}, status=400,
                code="invalid_request")


def test_sub_account_lifecycle(admin: Api) -> None:
    main = admin.ok("POST", "/v1/accounts", {"name": name()}, status=201)
    sub_name_ = sub_name()
    sub = admin.ok("POST", "/v1/sub-accounts", {"main_uid": main["uid"], "name": sub_name_, "label": "desk",
                                                 "email": "desk@example.com", "permissions": ["spot_trade"]},
                   status=201)
    assert sub["main_uid"] == main["uid"] and sub["permissions"] == ["spot_trade"] and sub["email"]
    assert admin.ok("GET", f"/v1/sub-accounts/{sub['uid']}") == sub
    admin.error("POST", "/v1/sub-accounts", {"main_uid": main["uid"], "name": sub_name_.upper()},
                status=409, code="name_taken")
    admin.error("POST", "/v1/sub-accounts", {"main_uid": sub["uid"], "name": sub_name()},
                status=404, code="account_not_found")
    admin.error("GET", f"/v1/sub-accounts/{main['uid']}", status=404, code="account_not_found")
    admin.error("GET", f"/v1/accounts/{sub['uid']}", status=404, code="account_not_found")
    renamed = admin.ok("PATCH", f"/v1/sub-accounts/{sub['uid']}", {"name": sub_name(),
                                                                   "permissions": ["spot_trade", "transfer"]})
    assert renamed["permissions"] == ["spot_trade", "transfer"] and renamed["name"] != sub_name_
    admin.error("PATCH", f"/v1/sub-accounts/{sub['uid']}", {}, status=400, code="invalid_request")
    admin.error("PATCH", f"/v1/sub-accounts/{sub['uid']}", {"permissions": ["withdraw"]}, status=400,
                code="invalid_permission")
    assert admin.ok("POST", f"/v1/sub-accounts/{sub['uid']}/freeze")["status"] == "freeze"
    admin.error("POST", f"/v1/sub-accounts/{sub['uid']}/freeze", status=409, code="already_in_state")
    assert admin.ok("POST", f"/v1/sub-accounts/{sub['uid']}/unfreeze")["status"] == "normal"
    key = admin.ok("POST", "/v1/keys", {"account_uid": sub["uid"], "dialect": "bitget"}, status=201)["key"]
    admin.ok("DELETE", f"/v1/sub-accounts/{sub['uid']}")
    admin.error("GET", f"/v1/sub-accounts/{sub['uid']}", status=404, code="account_not_found")
    admin.error("GET", f"/v1/keys/{key['id']}", status=404, code="key_not_found")  # gone with its account


def test_key_lifecycle_over_real_signatures(server: Server, admin: Api) -> None:
    main = admin.ok("POST", "/v1/accounts", {"name": name()}, status=201)
    created = admin.ok("POST", "/v1/keys", {"account_uid": main["uid"], "dialect": "bitget", "label": "bot",
                                            "permissions": ["read", "spot_trade"]}, status=201)
    key = created["key"]
    assert created["secret_shown"] is True and re.fullmatch(r"[0-9a-f]{64}", created["secret"])
    assert key["permissions"] == ["read", "spot_trade"] and key["main_uid"] == main["uid"] and key["enabled"]
    assert key["last_used_at"] is None and key["expires_at"] is None and key["previous_secret_until"] is None
    secret, passphrase = created["secret"], created["passphrase"]
    assert _bitget_ok(server, key["api_key"], secret, passphrase)
    deadline = time.monotonic() + 10
    while (shown := admin.ok("GET", f"/v1/keys/{key['id']}"))["last_used_at"] is None:  # written in batches
        assert time.monotonic() < deadline, shown
        time.sleep(0.1)
    assert shown["last_used_ip"] == "127.0.0.1" and shown["last_used_at"] >= key["created_at"]
    assert secret not in json.dumps(shown)
    listed = admin.pages("/v1/keys", main_uid=main["uid"])
    assert listed == [shown]

    updated = admin.ok("PATCH", f"/v1/keys/{key['id']}", {"label": "bot2", "ip_list": ["10.1.0.0/16"]})
    assert updated["label"] == "bot2" and updated["ip_list"] == ["10.1.0.0/16"]
    assert not _bitget_ok(server, key["api_key"], secret, passphrase)  # 127.0.0.1 is not listed any more
    updated = admin.ok("PATCH", f"/v1/keys/{key['id']}", {"ip_list": [], "permissions": ["read"]})
    assert updated["permissions"] == ["read"] and updated["ip_list"] == []
    assert _bitget_ok(server, key["api_key"], secret, passphrase)

    assert admin.ok("POST", f"/v1/keys/{key['id']}/disable")["enabled"] is False
    admin.error("POST", f"/v1/keys/{key['id']}/disable", status=409, code="already_in_state")
    assert not _bitget_ok(server, key["api_key"], secret, passphrase)
    assert admin.ok("POST", f"/v1/keys/{key['id']}/enable")["enabled"] is True
    assert _bitget_ok(server, key["api_key"], secret, passphrase)
    assert admin.ok("DELETE", f"/v1/keys/{key['id']}") == {"id": key["id"], "deleted": True}
    assert not _bitget_ok(server, key["api_key"], secret, passphrase)
    admin.error("GET", f"/v1/keys/{key['id']}", status=404, code="key_not_found")
    admin.error("DELETE", f"/v1/keys/{key['id']}", status=404, code="key_not_found")


def test_keys_of_either_dialect_on_main_and_sub_accounts(admin: Api) -> None:
    main = admin.ok("POST", "/v1/accounts", {"name": name()}, status=201)
    sub = admin.ok("POST", "/v1/sub-accounts", {"main_uid": main["uid"], "name": sub_name()}, status=201)
    wb_main = admin.ok("POST", "/v1/keys", {"account_uid": main["uid"], "dialect": "whitebit", "key_type": 1},
                       status=201)
    assert wb_main["key"]["key_type"] == 1 and wb_main["passphrase"] is None and len(wb_main["secret"]) == 32
    wb_sub = admin.ok("POST", "/v1/keys", {"account_uid": sub["uid"], "dialect": "whitebit",
                                           "permissions": ["spot_trade"]}, status=201)
    assert wb_sub["key"]["account_uid"] == sub["uid"] and wb_sub["key"]["main_uid"] == main["uid"]
    bg_sub = admin.ok("POST", "/v1/keys", {"account_uid": sub["uid"], "dialect": "bitget",
                                           "passphrase": "Passphrase1"}, status=201)
    assert bg_sub["passphrase"] == "Passphrase1" and bg_sub["key"]["permissions"] == ["read"]
    admin.error("POST", "/v1/keys", {"account_uid": main["uid"], "dialect": "bitget", "key_type": 1},
                status=400, code="invalid_request")
    admin.error("POST", "/v1/keys", {"account_uid": main["uid"], "dialect": "bitget", "passphrase": "short"},
                status=400, code="invalid_passphrase")
    admin.error("POST", "/v1/keys", {"account_uid": main["uid"], "dialect": "whitebit", "ip_list": ["nope"]},
                status=400, code="invalid_ip")
    admin.error("POST", "/v1/keys", {"account_uid": "9999999999", "dialect": "bitget"},
                status=404, code="account_not_found")
    admin.error("POST", "/v1/keys", {"account_uid": sub["uid"], "dialect": "bitget", "public_key_pem": "x"},
                status=400, code="invalid_request")


# paging and filters ---------------------------------------------------------------------------------------


def test_key_pages_walk_every_key_once_while_keys_are_added(admin: Api) -> None:
    main = admin.ok("POST", "/v1/accounts", {"name": name()}, status=201)
    made = [admin.ok("POST", "/v1/keys", {"account_uid": main["uid"], "dialect": d}, status=201)["key"]["id"]
            for d in ("bitget", "whitebit", "bitget", "whitebit", "bitget")]
    first = admin.ok("GET", "/v1/keys", params={"main_uid": main["uid"], "limit": 2})
    assert [k["id"] for k in first["data"]] == made[::-1][:2] and first["next_cursor"]
    admin.ok("POST", "/v1/keys", {"account_uid": main["uid"], "dialect": "bitget"}, status=201)  # a newer one
    rest = admin.pages("/v1/keys", main_uid=main["uid"], limit=2, cursor=first["next_cursor"])
    assert [k["id"] for k in first["data"] + rest] == made[::-1]  # the newer key shifts nothing
    whitebit = admin.pages("/v1/keys", main_uid=main["uid"], dialect="whitebit", limit=1)
    assert [k["id"] for k in whitebit] == [made[3], made[1]]
    admin.ok("POST", f"/v1/keys/{made[0]}/disable")
    assert [k["id"] for k in admin.pages("/v1/keys", main_uid=main["uid"], enabled="false")] == [made[0]]
    assert len(admin.pages("/v1/keys", account_uid=main["uid"], enabled="true")) == 5

    for params, field in (({"limit": 0}, "limit"), ({"limit": 201}, "limit"), ({"limit": "x"}, "limit"),
                          ({"dialect": "ftx"}, "dialect"), ({"enabled": "yes"}, "enabled"),
                          ({"main_uid": "-1"}, "main_uid"), ({"owner": "me"}, "owner")):
        error = admin.error("GET", "/v1/keys", params=params, status=400, code="invalid_parameter")
        assert error["field"] == field
    admin.error("GET", "/v1/keys?limit=1&limit=2", status=400, code="invalid_parameter")
    accounts_cursor = admin.ok("GET", "/v1/accounts", params={"limit": 1})["next_cursor"]
    for cursor in ("garbage", accounts_cursor, "W10", "eyJ4IjoxfQ", "%%%"):
        admin.error("GET", "/v1/keys", params={"cursor": cursor}, status=400, code="invalid_cursor")


def test_account_and_sub_account_lists_filter_and_page(admin: Api) -> None:
    tag = name("Filt")
    mains = [admin.ok("POST", "/v1/accounts", {"name": f"{tag}-{i}"}, status=201) for i in range(3)]
    admin.ok("POST", f"/v1/accounts/{mains[1]['uid']}/freeze")
    listed = admin.pages("/v1/accounts", name_contains=tag.lower(), limit=1)
    assert [a["uid"] for a in listed] == [a["uid"] for a in mains]
    frozen = admin.pages("/v1/accounts", name_contains=tag, status="freeze")
    assert [a["uid"] for a in frozen] == [mains[1]["uid"]]
    subs = [admin.ok("POST", "/v1/sub-accounts", {"main_uid": mains[0]["uid"], "name": sub_name()}, status=201)
            for _ in range(3)]
    assert [s["uid"] for s in admin.pages("/v1/sub-accounts", main_uid=mains[0]["uid"], limit=2)] == [
        s["uid"] for s in subs]
    assert admin.pages("/v1/sub-accounts", main_uid=mains[2]["uid"]) == []
    admin.error("GET", "/v1/accounts", params={"status": "gone"}, status=400, code="invalid_parameter")


def test_audit_events_name_the_token_and_filter_by_account_key_action_and_time(server: Server) -> None:
    token, token_id = make_token(server.database_url, "all", name="auditor")
    api = Api(server.base_url, token)
    started = datetime.now(UTC) - timedelta(seconds=1)
    main = api.ok("POST", "/v1/accounts", {"name": name()}, status=201)
    sub = api.ok("POST", "/v1/sub-accounts", {"main_uid": main["uid"], "name": sub_name()}, status=201)
    key = api.ok("POST", "/v1/keys", {"account_uid": sub["uid"], "dialect": "bitget"}, status=201)["key"]
    api.ok("PATCH", f"/v1/keys/{key['id']}", {"label": "audited"})
    api.ok("POST", f"/v1/keys/{key['id']}/disable")
    api.ok("DELETE", f"/v1/keys/{key['id']}")

    events = api.pages("/v1/audit-events", account_uid=main["uid"], limit=2)
    assert [e["action"] for e in events] == [
        "apikey.revoke", "apikey.disable", "apikey.modify", "apikey.create", "subaccount.create", "account.create"]
    for event in events:
        assert event["actor_token"] == token_id and event["ip"] == "127.0.0.1" and event["actor_uid"] is None
        assert token not in json.dumps(event)
    about_key = api.pages("/v1/audit-events", api_key=key["api_key"])
    assert {e["action"] for e in about_key} == {"apikey.create", "apikey.modify", "apikey.disable", "apikey.revoke"}
    actions = api.pages("/v1/audit-events", account_uid=main["uid"], action="apikey.create,account.create")
    assert [e["action"] for e in actions] == ["apikey.create", "account.create"]
    assert len(api.pages("/v1/audit-events", actor_token=token_id)) == 6
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert api.pages("/v1/audit-events", account_uid=main["uid"], since=later) == []
    assert len(api.pages("/v1/audit-events", account_uid=main["uid"], since=started.isoformat(), until=later)) == 6
    assert api.pages("/v1/audit-events", account_uid=main["uid"], until=started.isoformat()) == []
    api.error("GET", "/v1/audit-events", params={"since": "yesterday"}, status=400, code="invalid_parameter")
    api.error("GET", "/v1/audit-events", params={"since": "2026-11-30T07:00:00"}, status=400,
              code="invalid_parameter")  # no offset: which day is that?
    api.close()


# idempotent creates ---------------------------------------------------------------------------------------


def test_same_idempotency_key_and_body_answer_the_first_create_without_its_secret(admin: Api) -> None:
    main = admin.ok("POST", "/v1/accounts", {"name": name()}, status=201)
    body = {"account_uid": main["uid"], "dialect": "bitget", "permissions": ["read"]}
    first = admin.call("POST", "/v1/keys", body, idempotency_key="create-1")
    assert first.status_code == 201 and first.json()["secret"] and "idempotent-replayed" not in first.headers
    # the same body in another key order and spacing is the same request
    again = admin.call("POST", "/v1/keys", {"permissions": ["read"], "dialect": "bitget",
                                            "account_uid": main["uid"]}, idempotency_key="create-1")
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    replay = again.json()
    assert replay["key"] == first.json()["key"]
    assert replay["secret"] is None and replay["passphrase"] is None and replay["secret_shown"] is False
    assert len(admin.pages("/v1/keys", main_uid=main["uid"])) == 1

    other = admin.call("POST", "/v1/keys", {**body, "label": "other"}, idempotency_key="create-1")
    assert_error(other, 422, "idempotency_key_reused")
    assert_error(admin.call("POST", "/v1/accounts", {"name": name()}, idempotency_key="create-1"), 422,
                 "idempotency_key_reused")  # another path is another request
    assert len(admin.pages("/v1/keys", main_uid=main["uid"])) == 1

    # a refusal is an answer too: replayed, not run again
    taken = {"name": main["name"]}
    assert_error(admin.call("POST", "/v1/accounts", taken, idempotency_key="dup-name"), 409, "name_taken")
    replayed = admin.call("POST", "/v1/accounts", taken, idempotency_key="dup-name")
    assert_error(replayed, 409, "name_taken")
    assert replayed.headers["idempotent-replayed"] == "true"

    for bad in (b"", b"x" * 256, b"with space", "é".encode()):
        response = admin.http.post("/v1/accounts", json={"name": name()}, headers={"Idempotency-Key": bad})
        assert_error(response, 400, "invalid_request")


def test_idempotency_keys_belong_to_their_token(server: Server, admin: Api) -> None:
    other = Api(server.base_url, make_token(server.database_url, "accounts")[0])
    first = admin.ok("POST", "/v1/accounts", {"name": name()}, status=201, idempotency_key="shared-key")
    second = other.ok("POST", "/v1/accounts", {"name": name()}, status=201, idempotency_key="shared-key")
    assert first["uid"] != second["uid"]
    other.close()


def test_racing_duplicates_on_one_server_create_one_object(admin: Api) -> None:
    main = admin.ok("POST", "/v1/accounts", {"name": name()}, status=201)
    body = {"account_uid": main["uid"], "dialect": "whitebit"}
    answers: list[httpx.Response] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        answers.append(admin.call("POST", "/v1/keys", body, idempotency_key="race-1"))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [201] * 8
    assert len({a.json()["key"]["id"] for a in answers}) == 1
    assert sum(a.json()["secret_shown"] for a in answers) == 1  # the secret once, to the request that made it
    assert len(admin.pages("/v1/keys", main_uid=main["uid"])) == 1


# bad input ------------------------------------------------------------------------------------------------


def _raw(admin: Api, method: str, path: str, content: bytes, content_type: str = "application/json") -> httpx.Response:
    return admin.http.request(method, path, content=content, headers={"Content-Type": content_type})


def test_bad_bodies_are_400_in_the_error_shape_and_change_nothing(server: Server, admin: Api) -> None:
    before = len(admin.pages("/v1/accounts"))
    cases: list[tuple[bytes, str, int, str]] = [
        (b"", "application/json", 400, "invalid_json"),
        (b"{", "application/json", 400, "invalid_json"),
        (b'{"name": "a"}\x00', "application/json", 400, "invalid_json"),
        (b'{"name": "a\\u0000b"}', "application/json", 400, "invalid_json"),
        (b"[" * 40 + b"]" * 40, "application/json", 400, "invalid_json"),
        (b'{"name": "\xff"}', "application/json", 400, "invalid_json"),
        (b"\xef\xbb\xbf{}", "application/json", 400, "invalid_json"),
        (b'{"name": NaN}', "application/json", 400, "invalid_json"),
        (b'["name"]', "application/json", 400, "invalid_request"),
        (b'"name"', "application/json", 400, "invalid_request"),
        (b"{}", "application/json", 400, "invalid_request"),
        (b'{"name": 5}', "application/json", 400, "invalid_request"),
        (b'{"name": ""}', "application/json", 400, "invalid_request"),
        (b'{"name": " padded "}', "application/json", 400, "invalid_request"),
        (b'{"name": "' + b"x" * 65 + b'"}', "application/json", 400, "invalid_request"),
        (b'{"name": "ok", "admin": true}', "application/json", 400, "invalid_request"),
        (b'{"name": "ok"}', "text/plain", 415, "unsupported_media_type"),
        (b"name=ok", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b'{"name": "' + b"x" * 70_000 + b'"}', "application/json", 413, "payload_too_large"),
    ]
    for content, content_type, status, code in cases:
        assert_error(_raw(admin, "POST", "/v1/accounts", content, content_type), status, code)
    unknown = _raw(admin, "POST", "/v1/accounts", b'{"name": "ok", "admin": true}').json()["error"]
    assert unknown["field"] == "admin"
    wrong = _raw(admin, "POST", "/v1/keys", b'{"account_uid": "1", "dialect": "bitget", "ip_list": [1]}')
    assert_error(wrong, 400, "invalid_request")
    assert wrong.json()["error"]["field"] == "ip_list"
    assert_error(_raw(admin, "POST", "/v1/keys", b'{"account_uid": "1", "dialect": "bitget", "key_type": true}'),
                 400, "invalid_request")
    assert len(admin.pages("/v1/accounts")) == before
    assert "Traceback" not in server.log_path.read_text()


def test_routes_methods_and_targets(admin: Api) -> None:
    assert_error(admin.call("GET", "/v1/keys/a/b"), 404, "not_found")
    assert_error(admin.call("GET", "/v1/accountsx"), 404, "not_found")
    response = admin.call("PUT", "/v1/keys")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST, GET"
    port = int(str(admin.http.base_url).rstrip("/").rsplit(":", 1)[1])
    for target in (b"/v1/keys/%2e%2e/x", b"/v1/keys//x", b"/v1/accounts/../keys", b"/v1/keys/a;b"):
        # sent byte for byte: httpx would normalize the target
        head = b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        head += b"Authorization: " + admin.http.headers["authorization"].encode() + b"\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head)
            answer = http.client.HTTPResponse(sock)
            answer.begin()
            assert answer.status == 400, (target, answer.status)
            assert json.loads(answer.read())["error"]["code"] == "invalid_path"
    admin.error("GET", "/v1/keys/not-a-key", status=404, code="key_not_found")
    # /v1/verify stays the gateway's: an operator token opens nothing there
    verify = admin.call("POST", "/v1/verify", {"method": "GET", "uri": "/api/v2/spot/account/info"})
    assert verify.status_code == 401 and verify.json()["code"] == "UNAUTHORIZED"


def test_management_calls_are_counted_by_operation_and_outcome(server: Server, admin: Api) -> None:
    admin.ok("GET", "/v1/accounts")
    admin.error("GET", "/v1/accounts/1", status=404, code="account_not_found")
    metrics = httpx.get(server.base_url + "/metrics", headers={"Authorization": f"Bearer {VERIFY_TOKEN}"}).text
    counted = {
        (m.group(1), m.group(2)): float(m.group(3))
        for m in re.finditer(
            r'keyplane_management_operations_total\{dialect="native",operation="([^"]+)",outcome="([^"]+)"\} (\S+)',
            metrics,
        )
    }
    assert counted[("accounts.list", "ok")] >= 1 and counted[("accounts.get", "rejected")] >= 1
    assert counted[("unauthenticated", "rejected")] >= 1
    assert not any("/" in operation for operation, _ in counted)  # operations, never paths with ids


def test_no_answer_was_a_5xx(server: Server) -> None:
    log = server.log_path.read_text()
    assert not re.search(r" 5\d\d \d", log.replace(" 503 ", " ")), log[-2000:]
    assert "Traceback" not in log
