"""Key rotation with an overlap and explicit expiry through the native management API (issue 11, items 1-3),
over a live ``keyplane serve``: both secrets sign during the grace period, the old one stops at once with a
grace of 0, the expiry is set at creation or later and shown in every key view, and a rotation is an
idempotent create (a replay answers without the new secret)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from conftest import Server, make_server
from native_api_helpers import Api, make_token
from test_cli_operator import _bitget_ok


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("native-lifecycle"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[Api]:
    client = Api(server.base_url, make_token(server.database_url, "all")[0])
    yield client
    client.close()


def _main(api: Api, name: str) -> str:
    return str(api.ok("POST", "/v1/accounts", {"name": name}, status=201)["uid"])


def test_rotation_overlaps_for_the_grace_period_and_a_replay_shows_no_secret(server: Server, api: Api) -> None:
    uid = _main(api, "rotating")
    created = api.ok("POST", "/v1/keys", {"account_uid": uid, "dialect": "bitget"}, status=201)
    key, old = created["key"], created["secret"]
    passphrase = created["passphrase"]
    body = {"grace_seconds": 600}
    rotated = api.ok("POST", f"/v1/keys/{key['id']}/rotate", body, idempotency_key="rotate-1")
    assert rotated["secret_shown"] is True and rotated["secret"] != old and rotated["passphrase"] is None
    until = datetime.fromisoformat(rotated["previous_secret_until"])
    assert timedelta(seconds=590) < until - datetime.now(UTC) <= timedelta(seconds=600)
    assert rotated["key"]["previous_secret_until"] == rotated["previous_secret_until"]
    assert _bitget_ok(server, key["api_key"], rotated["secret"], passphrase)  # the key keeps its passphrase
    assert _bitget_ok(server, key["api_key"], old, passphrase)  # and the old secret still signs

    replay = api.call("POST", f"/v1/keys/{key['id']}/rotate", body, idempotency_key="rotate-1")
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["secret"] is None and replay.json()["secret_shown"] is False
    assert _bitget_ok(server, key["api_key"], rotated["secret"], passphrase)  # not rotated again

    now = api.ok("POST", f"/v1/keys/{key['id']}/rotate", {"grace_seconds": 0, "passphrase": "NewPass123"})
    assert now["previous_secret_until"] is None and now["passphrase"] == "NewPass123"
    assert not _bitget_ok(server, key["api_key"], rotated["secret"], passphrase)
    assert _bitget_ok(server, key["api_key"], now["secret"], "NewPass123")
    events = api.pages("/v1/audit-events", api_key=key["api_key"], action="apikey.rotate")
    assert len(events) == 2 and all(e["actor_token"] for e in events)

    for bad in ({"grace_seconds": 604_801}, {"grace_seconds": -1}, {"grace_seconds": "60"}, {},
                {"grace_seconds": 1.5}, {"grace_seconds": 0, "extra": 1}):
        api.error("POST", f"/v1/keys/{key['id']}/rotate", bad, status=400, code="invalid_request")
    api.error("POST", "/v1/keys/nope/rotate", {"grace_seconds": 0}, status=404, code="key_not_found")
    api.error("POST", f"/v1/keys/{key['id']}/rotate", {"grace_seconds": 0, "passphrase": "short"}, status=400,
              code="invalid_passphrase")
    api.ok("POST", f"/v1/keys/{key['id']}/disable")
    # a key disabled (perhaps because its secret leaked) is rotated with no overlap only
    api.error("POST", f"/v1/keys/{key['id']}/rotate", {"grace_seconds": 60}, status=409, code="key_not_usable")
    assert api.ok("POST", f"/v1/keys/{key['id']}/rotate", {"grace_seconds": 0})["secret"]


def test_expiry_at_creation_and_later_is_in_every_view(api: Api) -> None:
    uid = _main(api, "expiring")
    sub = api.ok("POST", "/v1/sub-accounts", {"main_uid": uid, "name": "expiringsub"}, status=201)
    at = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    for account in (uid, sub["uid"]):
        made = api.ok("POST", "/v1/keys", {"account_uid": account, "dialect": "whitebit",
                                           "expires_at": at.isoformat()}, status=201)["key"]
        assert datetime.fromisoformat(made["expires_at"]) == at
        assert api.ok("GET", f"/v1/keys/{made['id']}")["expires_at"] == made["expires_at"]
    listed = api.pages("/v1/keys", main_uid=uid)
    assert len(listed) == 2 and all(datetime.fromisoformat(k["expires_at"]) == at for k in listed)
    later = at + timedelta(days=1)
    changed = api.ok("PATCH", f"/v1/keys/{listed[0]['id']}", {"expires_at": later.isoformat(), "label": "x"})
    assert datetime.fromisoformat(changed["expires_at"]) == later and changed["label"] == "x"
    cleared = api.ok("PATCH", f"/v1/keys/{listed[0]['id']}", {"expires_at": None})
    assert cleared["expires_at"] is None
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    api.error("POST", "/v1/keys", {"account_uid": uid, "dialect": "bitget", "expires_at": past}, status=400,
              code="invalid_request")
    api.error("PATCH", f"/v1/keys/{listed[0]['id']}", {"expires_at": "2030-01-01T00:00:00"}, status=400,
              code="invalid_request")
    api.error("PATCH", f"/v1/keys/{listed[0]['id']}", {"expires_at": "tomorrow"}, status=400,
              code="invalid_request")
    assert len(api.pages("/v1/keys", main_uid=uid)) == 2  # the refused creates made nothing
