"""Sub-account WhiteBIT keys are enforced: a type 1 key cannot use what needs type 2, an endpoint allowlist
restricts its key, a blocked sub-account's keys stop, IP allowlists apply, a reset or deleted key's old
secret stops.

Every WhiteBIT route of keyplane itself needs a main-account key, so a sub-account key is checked where a
gateway checks it: with the one ``Verifier`` (``Verifier.verify(SignedRequest, Requirement, WHITEBIT)``)
over the running server's real store, in this process. Changes are made through the server's HTTP API;
the in-process verifier learns of them from the store's key-change feed, as every other process does. The
same rules seen through HTTP on the server itself are in test_whitebit_auth.py."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from clients.whitebit_http import Operator, WhitebitClient, compact, now_ms, sign
from conftest import Server
from keyplane.auth import Reason, Requirement, SignedRequest
from keyplane.config import Settings
from keyplane.domain.model import Scheme
from keyplane.runtime import Runtime, build_runtime

KEYS = "/api/v4/sub-account/api-key/"
BALANCE = "/api/v4/main-account/balance"
WITHDRAW = "/api/v4/main-account/withdraw"
ORDER = "/api/v4/order/new"


@pytest.fixture(scope="module")
def gateway(server: Server) -> Iterator[Runtime]:
    """Another process's view of the same store: its own verifier, cache and key-change feed."""
    runtime = build_runtime(Settings(database_url=server.database_url), follow_changes=True)
    yield runtime
    runtime.close()


class SubKey:
    """A sub-account key, and requests signed with it as a gateway would receive them."""

    def __init__(self, gateway: Runtime, created: dict[str, Any], secret: str | None = None) -> None:
        self.gateway = gateway
        self.api_key = created["apiKey"]
        self.secret = secret or created["apiSecret"]
        self.nonce = now_ms()

    def verify(self, path: str, key_type: int = 1, ip: str = "127.0.0.1", secret: str | None = None) -> Reason:
        assert self.gateway.feed is not None
        self.gateway.feed.poll()  # what the feed's thread does every 0.25 s
        self.nonce += 1
        body = compact({"request": path, "nonce": self.nonce, "nonceWindow": False})
        payload = base64.b64encode(body).decode()
        request = SignedRequest(
            method="POST",
            path=path,
            query="",
            headers={
                "content-type": "application/json",
                "x-txc-apikey": self.api_key,
                "x-txc-payload": payload,
                "x-txc-signature": sign(secret or self.secret, payload),
            },
            body=body,
            client_ip=ip,
        )
        return self.gateway.verifier.verify(request, Requirement(key_type=key_type), Scheme.WHITEBIT).reason


@pytest.fixture
def main(server: Server, operator: Operator) -> WhitebitClient:
    return operator.client(server.base_url, "scopes")


def new_sub(main: WhitebitClient) -> dict[str, Any]:
    fields = {
        "alias": "scope" + secrets.token_hex(4),
        "shareKyc": True,
        "permissions": {"spotEnabled": True, "collateralEnabled": True},
    }
    return dict(main.call("/api/v4/sub-account/create", fields, expect=201))


def new_key(main: WhitebitClient, sub: dict[str, Any], key_type: int) -> dict[str, Any]:
    fields = {"type": key_type, "subAccountId": sub["id"], "title": f"type {key_type}"}
    return dict(main.call(KEYS + "create", fields, expect=201))


def test_a_type_1_key_cannot_use_what_needs_type_2(main: WhitebitClient, gateway: Runtime) -> None:
    sub = new_sub(main)
    info_and_trading = SubKey(gateway, new_key(main, sub, 1))
    everything = SubKey(gateway, new_key(main, sub, 2))
    assert info_and_trading.verify(ORDER, key_type=1) is Reason.VALID
    assert info_and_trading.verify(WITHDRAW, key_type=2) is Reason.PERMISSION_DENIED
    assert everything.verify(ORDER, key_type=1) is Reason.VALID
    assert everything.verify(WITHDRAW, key_type=2) is Reason.VALID


def test_an_endpoint_allowlist_restricts_its_key(main: WhitebitClient, gateway: Runtime) -> None:
    sub = new_sub(main)
    created = new_key(main, sub, 2)
    key = SubKey(gateway, created)
    assert key.verify(ORDER) is Reason.VALID  # no allowlist: every endpoint of its type

    urls = [{"url": BALANCE, "enable": True}, {"url": WITHDRAW, "enable": False}]
    main.call(KEYS + "edit", {"apiKeyId": created["id"], "title": "balance only", "urls": urls})
    assert key.verify(BALANCE) is Reason.VALID
    assert key.verify(ORDER) is Reason.PERMISSION_DENIED
    assert key.verify(WITHDRAW, key_type=2) is Reason.PERMISSION_DENIED  # listed, but not enabled

    main.call(KEYS + "edit", {"apiKeyId": created["id"], "title": "open again", "urls": []})
    assert key.verify(ORDER) is Reason.VALID


def test_a_blocked_sub_accounts_keys_stop_and_start_again_when_unblocked(
    main: WhitebitClient, gateway: Runtime
) -> None:
    sub = new_sub(main)
    keys = [SubKey(gateway, new_key(main, sub, 1)), SubKey(gateway, new_key(main, sub, 2))]
    assert [k.verify(ORDER) for k in keys] == [Reason.VALID, Reason.VALID]
    main.call("/api/v4/sub-account/block", {"id": sub["id"]})
    assert [k.verify(ORDER) for k in keys] == [Reason.ACCOUNT_FROZEN, Reason.ACCOUNT_FROZEN]
    main.call("/api/v4/sub-account/unblock", {"id": sub["id"]})
    assert [k.verify(ORDER) for k in keys] == [Reason.VALID, Reason.VALID]


def test_an_ip_allowlist_applies(main: WhitebitClient, gateway: Runtime) -> None:
    sub = new_sub(main)
    created = new_key(main, sub, 1)
    key = SubKey(gateway, created)
    assert key.verify(ORDER, ip="203.0.113.9") is Reason.VALID  # no allowlist: any address
    main.call(KEYS + "ip-address/create", {"apiKeyId": created["id"], "ip": "203.0.113.7"}, expect=201)
    assert key.verify(ORDER, ip="203.0.113.9") is Reason.IP_NOT_ALLOWED
    assert key.verify(ORDER, ip="203.0.113.7") is Reason.VALID
    main.call(KEYS + "ip-address/delete", {"apiKeyId": created["id"], "ip": "203.0.113.7"})
    assert key.verify(ORDER, ip="203.0.113.9") is Reason.VALID


def test_a_reset_key_takes_only_its_new_secret_and_a_deleted_key_is_unknown(
    main: WhitebitClient, gateway: Runtime
) -> None:
    sub = new_sub(main)
    created = new_key(main, sub, 1)
    key = SubKey(gateway, created)
    assert key.verify(ORDER) is Reason.VALID
    reset = main.call(KEYS + "reset", {"apiKeyId": created["id"]})
    assert key.verify(ORDER) is Reason.BAD_SIGNATURE
    assert key.verify(ORDER, secret=reset["apiSecret"]) is Reason.VALID
    main.call(KEYS + "delete", {"apiKeyId": created["id"]})
    assert key.verify(ORDER, secret=reset["apiSecret"]) is Reason.UNKNOWN_KEY


def test_deleting_a_sub_account_deletes_its_keys(main: WhitebitClient, gateway: Runtime) -> None:
    sub = new_sub(main)
    key = SubKey(gateway, new_key(main, sub, 2))
    assert key.verify(ORDER) is Reason.VALID
    main.call("/api/v4/sub-account/delete", {"id": sub["id"]})
    assert key.verify(ORDER) is Reason.UNKNOWN_KEY
    assert main.call(KEYS + "list", {})["data"] == []
