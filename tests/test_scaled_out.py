"""keyplane scaled out: the same schema and rules on real PostgreSQL, rate limits shared through Redis."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
import redis

from conftest import make_server
from keyplane import crypto
from keyplane.domain.model import Scheme
from keyplane.domain.policy import Policy
from keyplane.errors import SubAccountLimit
from keyplane.ratelimit import RateLimiter
from keyplane.services import Actor, KeyplaneService, NewKeySpec, NewSubAccountWithKey
from keyplane.store import Store

REDIS_URL = "redis://127.0.0.1:6379/0"

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def _service(url: str, policy: Policy | None = None) -> KeyplaneService:
    store = Store(url)
    store.migrate()
    return KeyplaneService(store, crypto.MasterKey(b"k" * 32), policy)


def test_postgres_schema_migrates_and_starts_uids_like_bitget(pg_url: str) -> None:
    service = _service(pg_url)
    service.store.migrate()  # idempotent
    main = service.accounts.create_main_account("venue")
    assert main.uid >= 1_000_000_001
    assert service.store.engine.dialect.name == "postgresql"


def test_postgres_parallel_batches_never_pass_the_sub_account_limit(pg_url: str) -> None:
    policy = Policy.from_overrides({"bitget": {"sub_accounts_per_main": 7}})
    service = _service(pg_url, policy)
    main = service.accounts.create_main_account("venue")
    actor = Actor(account=main)
    outcomes: list[str] = []

    def batch(worker: int) -> None:
        entries = [
            NewSubAccountWithKey(
                name="".join(chr(ord("a") + (worker * 3 + i + j) % 26) for j in range(8)),
                key=NewKeySpec(label="l", passphrase="abcd1234"),
            )
            for i in range(3)
        ]
        try:
            service.subaccounts.batch_create_sub_accounts_with_keys(actor, entries, Scheme.BITGET)
            outcomes.append("ok")
        except SubAccountLimit:
            outcomes.append("limit")

    threads = [threading.Thread(target=batch, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    count = len(service.subaccounts.list_sub_accounts(actor, limit=500))
    assert count <= 7
    assert count == 3 * outcomes.count("ok")
    assert outcomes.count("ok") == 2


def test_redis_rate_limit_is_shared_between_limiters() -> None:
    redis.Redis.from_url(REDIS_URL).ping()
    first, second = RateLimiter(REDIS_URL), RateLimiter(REDIS_URL)
    identity = uuid.uuid4().hex
    allowed = [first.hit("3/second", "t", identity)[0], second.hit("3/second", "t", identity)[0]]
    allowed += [first.hit("3/second", "t", identity)[0], second.hit("3/second", "t", identity)[0]]
    assert allowed == [True, True, True, False]


def test_server_on_postgres_and_redis_serves_ccxt(pg_url: str, tmp_path: Path) -> None:
    import ccxt

    policy = '{"bitget": {"rate_limits": {"batch-create-subaccount-and-apikey": "1/minute"}}}'
    srv = make_server(
        tmp_path, {"KEYPLANE_REDIS_URL": REDIS_URL, "KEYPLANE_POLICY": policy, "KEYPLANE_MASTER_KEY": "cd" * 32}
    )
    srv.database_url = pg_url
    srv.start()
    try:
        uid = srv.main_account()
        key = srv.bitget_main_key(uid)
        # a fresh schema reuses UIDs: forget what earlier runs counted for this one in Redis
        client = redis.Redis.from_url(REDIS_URL)
        for stale in client.keys(f"*batch-create-subaccount-and-apikey*{uid}*"):
            client.delete(stale)
        exchange = ccxt.bitget({"apiKey": key["apiKey"], "secret": key["secretKey"], "password": key["passphrase"]})
        for group in exchange.urls["api"]:
            exchange.urls["api"][group] = srv.base_url
        created = exchange.privateUserPostV2UserBatchCreateSubaccountAndApikey(
            [{"subAccountName": "pgredisa", "passphrase": "abcd1234", "label": "pg"}]
        )
        assert created["code"] == "00000"
        listed = exchange.privateUserGetV2UserVirtualSubaccountList()
        assert [s["subAccountName"] for s in listed["data"]["subAccountList"]] == ["pgredisa"]
        # the batch limit (made 1/minute by the operator here) is counted in Redis
        assert redis.Redis.from_url(REDIS_URL).keys(f"*batch-create-subaccount-and-apikey*{uid}*")
        with pytest.raises(ccxt.DDoSProtection):
            exchange.privateUserPostV2UserBatchCreateSubaccountAndApikey(
                [{"subAccountName": "pgredisb", "passphrase": "abcd1234", "label": "pg"}]
            )
    finally:
        srv.stop()


def test_a_change_on_one_instance_stops_the_key_on_another_instance_at_once(pg_url: str) -> None:
    import time

    from keyplane.auth import Requirement, SignedRequest
    from keyplane.auth.bitget import prehash, sign_hmac
    from keyplane.config import Settings
    from keyplane.domain.model import AccountStatus
    from keyplane.runtime import build_runtime

    settings = Settings(database_url=pg_url, master_key="ab" * 32, redis_url=REDIS_URL)
    first, second = build_runtime(settings), build_runtime(settings)
    try:
        main = first.service.accounts.create_main_account("venue")
        actor = Actor(account=main)
        sub = first.service.subaccounts.create_sub_account(actor, Scheme.BITGET, name="instance")
        issued = first.service.keys.create_sub_key(
            actor, Scheme.BITGET, NewKeySpec(label="k", passphrase="abcd1234", permissions=("read",)), uid=sub.uid
        )

        def request() -> SignedRequest:
            timestamp = str(int(time.time() * 1000))
            assert issued.secret is not None
            signature = sign_hmac(issued.secret.encode(), prehash(timestamp, "GET", "/api/v2/x", "", b""))
            headers = {"access-key": issued.key.api_key, "access-sign": signature,
                       "access-timestamp": timestamp, "access-passphrase": "abcd1234"}
            return SignedRequest("GET", "/api/v2/x", "", headers, b"", "127.0.0.1")

        assert second.verifier.verify(request(), Requirement()).valid  # now cached in the second instance
        first.service.subaccounts.modify_sub_account(actor, uid=sub.uid, status=AccountStatus.FREEZE)
        deadline = time.monotonic() + 2
        while second.verifier.verify(request(), Requirement()).valid and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not second.verifier.verify(request(), Requirement()).valid
    finally:
        first.close()
        second.close()


def test_postgres_keeps_whitebit_nonces_and_refuses_replays(pg_url: str) -> None:
    from keyplane.auth.nonces import NonceGuard
    from keyplane.auth.request import Reason

    service = _service(pg_url)
    main = service.accounts.create_main_account("venue")
    key = service.keys.issue_main_key(main.uid, Scheme.WHITEBIT).key
    now = 1_800_000_000_000
    first, restarted = NonceGuard(service.store), NonceGuard(service.store)
    try:
        assert first.accept(key.id, 5, False, now) is Reason.VALID
        assert restarted.accept(key.id, 5, False, now) is Reason.NONCE_TOO_LOW  # state is in the store
        assert restarted.accept(key.id, 6, False, now) is Reason.VALID
        assert first.accept(key.id, now, True, now) is Reason.VALID
        assert restarted.accept(key.id, now, True, now) is Reason.NONCE_REPLAYED
        assert first.accept(key.id, now - 6_000, True, now) is Reason.NONCE_OUT_OF_WINDOW
    finally:
        first.close()
        restarted.close()


def test_postgres_concurrent_ip_list_changes_of_one_key_never_lose_one_another(pg_url: str) -> None:
    policy = Policy.from_overrides({"bitget": {"ips_per_key": 30}})
    services = [_service(pg_url, policy) for _ in range(2)]  # two nodes' services on one schema
    main = services[0].accounts.create_main_account("venue")
    actor = Actor(account=main)
    sub = services[0].subaccounts.create_sub_account(actor, Scheme.BITGET, name="lockedip")
    key = services[0].keys.create_sub_key(
        actor, Scheme.BITGET, NewKeySpec(label="k", passphrase="abcd1234", ip_list=("10.9.9.9",)), uid=sub.uid
    ).key
    ips = [f"10.0.0.{n}" for n in range(1, 17)]
    barrier = threading.Barrier(len(ips))
    errors: list[BaseException] = []

    def change(n: int, ip: str, add: bool) -> None:
        service = services[n % 2]
        barrier.wait()
        try:
            if add:
                service.keys.add_key_ip(actor, key_id=key.id, ip=ip)
            else:
                service.keys.remove_key_ip(actor, key_id=key.id, ip=ip)
        except BaseException as error:
            errors.append(error)

    for add in (True, False):
        threads = [threading.Thread(target=change, args=(n, ip, add)) for n, ip in enumerate(ips)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        listed = services[1].keys.find_sub_key(actor, key_id=key.id).ip_list
        assert sorted(listed) == sorted(["10.9.9.9", *ips] if add else ["10.9.9.9"])
    for service in services:
        service.store.close()
