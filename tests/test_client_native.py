"""The SDK's ``Client`` and ``AsyncClient`` drive a live ``keyplane serve`` through every resource of the native
management API with real operator tokens: accounts, sub-accounts and keys through their whole life,
idempotent creates, paging as iterators, the audit log, and refusals as exceptions carrying the API's
machine code. The keys it makes sign real requests with the SDK's own signers."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import httpx
import msgspec
import pytest

import bitget_helpers as h
from conftest import Server, make_server
from keyplane.client import (
    ApiError,
    AsyncClient,
    AuthenticationError,
    BitgetAuth,
    Client,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    WhiteBITAuth,
)

INFO = "/api/v2/spot/account/info"
T = TypeVar("T")


@dataclass
class Live:
    server: Server
    token: str  # scope all
    read_token: str  # scope read


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    server = h.track(make_server(tmp_path_factory.mktemp("client-native")))
    server.start()
    try:
        token = server.cli("tokens", "create", "--scope", "all", "--name", "sdk tests")["token"]
        read_token = server.cli("tokens", "create", "--scope", "read", "--name", "sdk reader")["token"]
        h.RECORD.secret(token, read_token)
        yield Live(server, token, read_token)
    finally:
        server.stop()


@pytest.fixture
def client(live: Live) -> Iterator[Client]:
    with Client(live.server.base_url, live.token) as kp:
        yield kp


def _eventually(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 10.0) -> T:
    """``read()`` again until ``done`` holds: last use is written in batches, a few seconds behind."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def test_accounts_through_their_life_with_idempotent_creates_and_paging(client: Client) -> None:
    tag = _name("acme")
    idem = str(uuid.uuid4())
    first = client.accounts.create(f"{tag}-0", idempotency_key=idem)
    again = client.accounts.create(f"{tag}-0", idempotency_key=idem)
    assert again == first and first.status == "normal" and first.uid.isdigit()
    with pytest.raises(ConflictError) as reused:
        client.accounts.create(f"{tag}-other", idempotency_key=idem)
    assert reused.value.code == "idempotency_key_reused" and reused.value.status == 422
    made = [first] + [client.accounts.create(f"{tag}-{i}") for i in range(1, 5)]

    # five accounts, two a page: the iterator follows the cursors, oldest first, each once
    listed = client.accounts.list(name_contains=tag, page_size=2)
    assert [a.uid for a in listed] == [a.uid for a in made]
    assert client.accounts.get(int(first.uid)) == first

    frozen = client.accounts.freeze(first.uid)
    assert frozen.status == "freeze" and frozen.updated_at >= first.updated_at
    assert [a.uid for a in client.accounts.list(name_contains=tag, status="freeze")] == [first.uid]
    with pytest.raises(ConflictError) as twice:
        client.accounts.freeze(first.uid)
    assert twice.value.code == "already_in_state"
    assert client.accounts.unfreeze(first.uid).status == "normal"

    client.accounts.delete(first.uid)
    with pytest.raises(NotFoundError) as gone:
        client.accounts.get(first.uid)
    assert gone.value.code == "account_not_found" and gone.value.status == 404
    with pytest.raises(ConflictError) as taken:
        client.accounts.create(f"{tag}-1")
    assert taken.value.code == "name_taken"


def test_sub_accounts_through_their_life(client: Client) -> None:
    main = client.accounts.create(_name("desk-main"))
    subs = [client.sub_accounts.create(main.uid, _name("desk"), label="bots", permissions=["spot_trade"])
            for _ in range(3)]
    assert all(s.main_uid == main.uid and s.status == "normal" for s in subs)
    assert [s.uid for s in client.sub_accounts.list(main_uid=main.uid, page_size=1)] == [s.uid for s in subs]
    assert client.sub_accounts.get(subs[0].uid) == subs[0]

    renamed = client.sub_accounts.update(subs[0].uid, name=_name("renamed"))
    assert renamed.name != subs[0].name and renamed.permissions == subs[0].permissions
    assert client.sub_accounts.freeze(subs[1].uid).status == "freeze"
    assert [s.uid for s in client.sub_accounts.list(main_uid=main.uid, status="freeze")] == [subs[1].uid]
    assert client.sub_accounts.unfreeze(subs[1].uid).status == "normal"

    client.sub_accounts.delete(subs[2].uid)
    with pytest.raises(NotFoundError):
        client.sub_accounts.get(subs[2].uid)
    with pytest.raises(InvalidRequestError) as bad:
        client.sub_accounts.create(main.uid, " spaced ")
    assert bad.value.field == "name" and bad.value.code in ("invalid_request", "invalid_name")


def test_keys_through_their_life_and_they_sign_with_the_sdk(client: Client, live: Live) -> None:
    main = client.accounts.create(_name("keys-main"))
    idem = str(uuid.uuid4())
    created = client.keys.create(main.uid, "bitget", label="desk", permissions=["read"], ip_list=["127.0.0.1"],
                                 idempotency_key=idem)
    assert created.secret and created.passphrase and created.secret_shown
    h.RECORD.secret(created.secret, created.passphrase)
    key = created.key
    assert key.dialect == "bitget" and key.sign_type == "hmac" and key.account_uid == main.uid and key.enabled
    assert key.expires_at is None and key.previous_secret_until is None and key.last_used_at is None
    assert created.secret not in repr(created) and created.passphrase not in repr(created)

    replay = client.keys.create(main.uid, "bitget", label="desk", permissions=["read"], ip_list=["127.0.0.1"],
                                idempotency_key=idem)
    assert replay.key.id == key.id and replay.secret is None and replay.passphrase is None
    assert not replay.secret_shown

    auth = BitgetAuth(key.api_key, created.secret, created.passphrase)
    with httpx.Client(base_url=live.server.base_url, auth=auth) as signed:
        assert signed.get(INFO).json()["data"]["userId"] == main.uid
        updated = client.keys.update(key.id, label="renamed", ip_list=["127.0.0.1", "10.0.0.0/8"])
        assert updated.label == "renamed" and updated.ip_list == ["127.0.0.1", "10.0.0.0/8"]
        assert client.keys.disable(key.id).enabled is False
        refused = signed.get(INFO)
        assert refused.status_code == 400 and refused.json()["code"] != "00000"
        assert client.keys.enable(key.id).enabled is True
        assert signed.get(INFO).json()["code"] == "00000"
    used = _eventually(lambda: client.keys.get(key.id), lambda k: k.last_used_at is not None)
    assert used.last_used_ip == "127.0.0.1" and used.last_used_at is not None
    assert used.last_used_at > key.created_at

    sub = client.sub_accounts.create(main.uid, _name("wb"), dialect="whitebit")
    wb = client.keys.create(sub.uid, "whitebit", key_type=1)
    assert wb.secret and wb.key.key_type == 1 and wb.key.main_uid == main.uid
    h.RECORD.secret(wb.secret)
    more = [client.keys.create(main.uid, "bitget", ip_list=["127.0.0.1"]) for _ in range(2)]
    for extra in more:
        h.RECORD.secret(extra.secret, extra.passphrase)
    every = list(client.keys.list(main_uid=main.uid, page_size=1))
    assert {k.id for k in every} == {key.id, wb.key.id, *(m.key.id for m in more)} and len(every) == 4
    assert [k.id for k in client.keys.list(account_uid=sub.uid)] == [wb.key.id]
    assert {k.id for k in client.keys.list(main_uid=main.uid, dialect="whitebit")} == {wb.key.id}
    client.keys.disable(more[0].key.id)
    assert [k.id for k in client.keys.list(main_uid=main.uid, enabled=False)] == [more[0].key.id]

    client.keys.delete(key.id)
    with pytest.raises(NotFoundError) as gone:
        client.keys.get(key.id)
    assert gone.value.code == "key_not_found"
    with httpx.Client(base_url=live.server.base_url, auth=auth) as signed:
        assert signed.get(INFO).json()["code"] == "40037"  # "Apikey does not exist"


def _info_code(base_url: str, auth: BitgetAuth) -> str:
    with httpx.Client(base_url=base_url, auth=auth) as signed:
        return str(signed.get(INFO).json()["code"])


def test_key_rotation_with_a_grace_period_and_expiry(client: Client, live: Live) -> None:
    base = live.server.base_url
    main = client.accounts.create(_name("rotating"))
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    created = client.keys.create(main.uid, "bitget", permissions=["read"], ip_list=["127.0.0.1"], expires_at=expires)
    assert created.secret and created.passphrase
    h.RECORD.secret(created.secret, created.passphrase)
    key = created.key
    assert key.expires_at == expires
    first = BitgetAuth(key.api_key, created.secret, created.passphrase)
    assert _info_code(base, first) == "00000"

    idem = str(uuid.uuid4())
    rotated = client.keys.rotate(key.id, grace_seconds=600, idempotency_key=idem)
    assert rotated.secret and rotated.secret != created.secret and rotated.secret_shown
    h.RECORD.secret(rotated.secret, rotated.passphrase)
    assert rotated.secret not in repr(rotated)
    until = rotated.previous_secret_until
    assert until is not None and timedelta(seconds=590) < until - datetime.now(UTC) <= timedelta(seconds=600)
    assert rotated.key.previous_secret_until == until and client.keys.get(key.id).previous_secret_until == until
    second = BitgetAuth(key.api_key, rotated.secret, rotated.passphrase or created.passphrase)
    assert _info_code(base, second) == "00000" and _info_code(base, first) == "00000"  # both, in the grace
    again = client.keys.rotate(key.id, grace_seconds=600, idempotency_key=idem)
    assert again.secret is None and not again.secret_shown and again.key.id == key.id

    # a rotation with no grace: only its own secret verifies from now on
    third_rotation = client.keys.rotate(key.id, grace_seconds=0)
    assert third_rotation.secret and third_rotation.previous_secret_until is None
    h.RECORD.secret(third_rotation.secret, third_rotation.passphrase)
    third = BitgetAuth(key.api_key, third_rotation.secret, third_rotation.passphrase or created.passphrase)
    assert _info_code(base, third) == "00000"
    assert _info_code(base, first) == _info_code(base, second) == "40009"  # "sign signature error"
    with pytest.raises(InvalidRequestError) as bad_grace:
        client.keys.rotate(key.id, grace_seconds=8 * 86_400)
    assert bad_grace.value.field == "grace_seconds"

    assert client.keys.set_expiry(key.id, None).expires_at is None
    later = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    assert client.keys.set_expiry(key.id, later).expires_at == later
    with pytest.raises(InvalidRequestError):
        client.keys.set_expiry(key.id, datetime.now(UTC) - timedelta(days=1))  # not in the future
    with pytest.raises(ValueError, match="aware datetime"):
        client.keys.set_expiry(key.id, datetime.now())  # naive: refused before any request
    assert client.keys.get(key.id).expires_at == later
    actions = [e.action for e in client.audit.list(account_uid=main.uid, api_key=key.api_key)]
    assert sum("rotate" in action for action in actions) == 2 and any("expir" in a for a in actions)


def test_audit_lists_what_the_client_did_with_filters_and_paging(client: Client) -> None:
    start = datetime.now(UTC) - timedelta(seconds=5)
    main = client.accounts.create(_name("audited"))
    client.accounts.freeze(main.uid)
    client.accounts.unfreeze(main.uid)
    created = client.keys.create(main.uid, "whitebit")
    h.RECORD.secret(created.secret)
    events = list(client.audit.list(account_uid=main.uid, page_size=1))
    assert len(events) >= 4 and all(e.account_uid == main.uid for e in events)
    assert [e.at for e in events] == sorted((e.at for e in events), reverse=True)  # newest first
    actions = [e.action for e in events]
    assert len(set(actions)) >= 3
    one = actions[0]
    assert {e.action for e in client.audit.list(account_uid=main.uid, action=one)} == {one}
    assert all(e.actor_token for e in events)
    assert list(client.audit.list(account_uid=main.uid, until=start)) == []
    assert len(list(client.audit.list(account_uid=main.uid, since=start))) == len(events)
    with pytest.raises(ValueError, match="aware datetime"):
        list(client.audit.list(since=datetime.now()))  # a naive time: refused before any request


def test_refusals_carry_the_api_code(live: Live) -> None:
    base = live.server.base_url
    with Client(base, "kpt_" + secrets.token_hex(20)) as wrong, pytest.raises(AuthenticationError) as raised:
        wrong.accounts.get(1)
    assert raised.value.code == "invalid_token" and raised.value.status == 401
    with Client(base, live.read_token) as reader:
        assert isinstance(list(reader.accounts.list(page_size=1)), list)
        with pytest.raises(PermissionDeniedError) as denied:
            reader.accounts.create(_name("nope"))
        assert denied.value.code == "insufficient_scope"
        assert live.read_token not in repr(reader) and live.read_token not in repr(denied.value)
    with Client(base, live.token) as kp:
        with pytest.raises(InvalidRequestError) as bad:
            kp.keys.create("1", "bitget", label="x" * 200)
        assert bad.value.status == 400 and bad.value.field == "label"
        # one path segment, whatever it holds: escaped, which the API refuses rather than reads elsewhere
        with pytest.raises(InvalidRequestError) as escaped:
            kp.keys.get("../accounts")
        assert escaped.value.code == "invalid_path" and escaped.value.response.request.url.path == (
            "/v1/keys/../accounts") and b"%2F" in escaped.value.response.request.url.raw_path
        with pytest.raises(TypeError):
            kp.keys.create("1", "bitget", permissions="read")
    with pytest.raises(ValueError):
        Client(base, "")
    # an answer that is not the API's (here the Bitget dialect's envelope): still an ApiError, with its status
    with Client(base + "/api/v2", live.token) as astray, pytest.raises(ApiError) as foreign:
        astray.accounts.get(1)
    assert foreign.value.code == "unexpected_response" and foreign.value.status >= 400
    assert b'"code"' in foreign.value.response.content


def test_async_client_walks_the_same_resources(live: Live) -> None:
    async def run() -> None:
        async with AsyncClient(live.server.base_url, live.token) as kp:
            tag = _name("async")
            accounts = await asyncio.gather(*(kp.accounts.create(f"{tag}-{i}") for i in range(3)))
            listed = [a.uid async for a in kp.accounts.list(name_contains=tag, page_size=2)]
            assert sorted(listed) == sorted(a.uid for a in accounts)
            main = accounts[0]
            sub = await kp.sub_accounts.create(main.uid, _name("sub"))
            assert (await kp.sub_accounts.update(sub.uid, permissions=["spot_trade"])).permissions == ["spot_trade"]
            created = await kp.keys.create(main.uid, "whitebit", label="async")
            assert created.secret
            h.RECORD.secret(created.secret)
            assert (await kp.keys.get(created.key.id)).label == "async"
            rotated = await kp.keys.rotate(created.key.id, grace_seconds=0)
            assert rotated.secret and rotated.previous_secret_until is None
            h.RECORD.secret(rotated.secret)
            soon = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
            assert (await kp.keys.set_expiry(created.key.id, soon)).expires_at == soon
            created = msgspec.structs.replace(created, secret=rotated.secret)
            keys = [k.id async for k in kp.keys.list(main_uid=main.uid)]
            assert keys == [created.key.id]
            async with httpx.AsyncClient(base_url=live.server.base_url,
                                         auth=WhiteBITAuth(created.key.api_key, created.secret)) as signed:
                answer = await signed.post("/api/v4/sub-account/list", json={"limit": 5})
                assert answer.status_code == 200 and [s["id"] for s in answer.json()["data"]] != []
            await kp.keys.disable(created.key.id)
            await kp.keys.enable(created.key.id)
            await kp.keys.delete(created.key.id)
            await kp.sub_accounts.freeze(sub.uid)
            await kp.sub_accounts.unfreeze(sub.uid)
            assert (await kp.sub_accounts.get(sub.uid)).status == "normal"
            await kp.sub_accounts.delete(sub.uid)
            await kp.accounts.freeze(main.uid)
            assert (await kp.accounts.unfreeze(main.uid)).status == "normal"
            assert (await kp.accounts.get(main.uid)).uid == main.uid
            events = [e async for e in kp.audit.list(account_uid=main.uid, page_size=2)]
            assert len(events) >= 8
            with pytest.raises(NotFoundError):
                await kp.keys.get(created.key.id)
            for account in accounts[1:]:
                await kp.accounts.delete(account.uid)

    asyncio.run(run())
