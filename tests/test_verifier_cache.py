"""The key cache never serves a stale key: a modified, frozen, reset or deleted key stops verifying on the
very next request. The service and the in-process verifier share one real SQLite store, as in
``keyplane serve``; a second verifier (``keyplane.open_verifier``, as a venue's own process) hears of the
same changes through the store's change feed."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import httpx
import pytest

import keyplane
from keyplane import Reason, SignedRequest, Verifier
from keyplane.config import Settings
from keyplane.domain.model import AccountStatus, Scheme
from keyplane.runtime import Runtime, build_runtime
from keyplane.services import Actor, NewKeySpec

MASTER_KEY = "11" * 32
PASSPHRASE = "passphrase123"
ORDER = {"symbol": "BTCUSDT", "side": "buy", "orderType": "market", "size": "1"}


@pytest.fixture()
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = build_runtime(Settings(database_url=f"sqlite:///{tmp_path / 'keyplane.db'}", master_key=MASTER_KEY))
    yield rt
    rt.close()


class Plane:
    """A main account with a Bitget and a WhiteBIT sub-account, each with one key."""

    def __init__(self, runtime: Runtime) -> None:
        service = runtime.service
        self.runtime = runtime
        main = service.accounts.create_main_account("venue")
        self.actor = Actor(account=main)
        self.sub = service.subaccounts.create_sub_account(
            self.actor, Scheme.BITGET, name="cachesub", permissions=("spot_trade",)
        )
        issued = service.keys.create_sub_key(
            self.actor,
            Scheme.BITGET,
            NewKeySpec(label="k", passphrase=PASSPHRASE, permissions=("spot_trade", "read")),
            uid=self.sub.uid,
        )
        self.bitget_key, self.bitget_secret = issued.key, issued.secret
        self.wb_sub = service.subaccounts.create_sub_account(self.actor, Scheme.WHITEBIT, name="cachewbs")
        issued = service.keys.create_sub_key(
            self.actor, Scheme.WHITEBIT, NewKeySpec(label="w", key_type=1), uid=self.wb_sub.uid
        )
        self.whitebit_key, self.whitebit_secret = issued.key, issued.secret

    def bitget(
        self,
        path: str = "v2/spot/trade/place-order",
        secret: str | None = None,
        method: str = "POST",
        params: dict[str, str] | None = None,
    ) -> SignedRequest:
        client = ccxt.bitget(
            {"apiKey": self.bitget_key.api_key, "secret": secret or self.bitget_secret, "password": PASSPHRASE}
        )
        return as_signed(client.sign(path, ["private", "spot"], method, ORDER if params is None else params))

    def whitebit(self, secret: str | None = None) -> SignedRequest:
        client = ccxt.whitebit({"apiKey": self.whitebit_key.api_key, "secret": secret or self.whitebit_secret})
        return as_signed(client.sign("trade-account/balance", ["v4", "private"], "POST", {}))


def as_signed(signed: dict[str, Any], client_ip: str = "127.0.0.1") -> SignedRequest:
    url = httpx.URL(signed["url"])
    headers = {k.lower(): v for k, v in signed["headers"].items()}
    body = (signed["body"] or "").encode()
    return SignedRequest(signed["method"], url.path, url.query.decode(), headers, body, client_ip)


@pytest.fixture()
def plane(runtime: Runtime) -> Plane:
    return Plane(runtime)


def verify(verifier: Verifier, request: SignedRequest) -> Reason:
    return verifier.verify(request).reason


def test_modified_permissions_stop_verifying_on_the_next_request(plane: Plane) -> None:
    verifier = plane.runtime.verifier
    assert verify(verifier, plane.bitget()) is Reason.VALID
    plane.runtime.service.keys.modify_sub_key(
        plane.actor, key_id=plane.bitget_key.id, passphrase=PASSPHRASE, permissions=("read",)
    )
    assert verify(verifier, plane.bitget()) is Reason.PERMISSION_DENIED


def test_modified_ip_list_stops_verifying_on_the_next_request(plane: Plane) -> None:
    verifier = plane.runtime.verifier
    assert verify(verifier, plane.bitget()) is Reason.VALID
    plane.runtime.service.keys.modify_sub_key(
        plane.actor, key_id=plane.bitget_key.id, passphrase=PASSPHRASE, ip_list=["10.9.9.9"]
    )
    assert verify(verifier, plane.bitget()) is Reason.IP_NOT_ALLOWED


def test_frozen_sub_account_stops_verifying_on_the_next_request(plane: Plane) -> None:
    verifier = plane.runtime.verifier
    assert verify(verifier, plane.bitget()) is Reason.VALID
    assert verify(verifier, plane.whitebit()) is Reason.VALID
    plane.runtime.service.subaccounts.set_sub_account_status(plane.actor, AccountStatus.FREEZE, uid=plane.sub.uid)
    plane.runtime.service.subaccounts.modify_sub_account(plane.actor, uid=plane.wb_sub.uid, status=AccountStatus.FREEZE)
    assert verify(verifier, plane.bitget()) is Reason.ACCOUNT_FROZEN
    assert verify(verifier, plane.whitebit()) is Reason.ACCOUNT_FROZEN
    plane.runtime.service.subaccounts.set_sub_account_status(plane.actor, AccountStatus.NORMAL, uid=plane.sub.uid)
    assert verify(verifier, plane.bitget()) is Reason.VALID


def test_reset_secret_stops_verifying_on_the_next_request(plane: Plane) -> None:
    verifier = plane.runtime.verifier
    assert verify(verifier, plane.bitget()) is Reason.VALID
    assert verify(verifier, plane.whitebit()) is Reason.VALID
    new_bitget = plane.runtime.service.keys.reset_sub_key(plane.actor, key_id=plane.bitget_key.id).secret
    new_whitebit = plane.runtime.service.keys.reset_sub_key(plane.actor, key_id=plane.whitebit_key.id).secret
    assert verify(verifier, plane.bitget()) is Reason.BAD_SIGNATURE
    assert verify(verifier, plane.whitebit()) is Reason.BAD_SIGNATURE
    assert verify(verifier, plane.bitget(secret=new_bitget)) is Reason.VALID
    assert verify(verifier, plane.whitebit(secret=new_whitebit)) is Reason.VALID


def test_deleted_key_stops_verifying_on_the_next_request(plane: Plane) -> None:
    verifier = plane.runtime.verifier
    assert verify(verifier, plane.bitget()) is Reason.VALID
    assert verify(verifier, plane.whitebit()) is Reason.VALID
    plane.runtime.service.keys.delete_sub_key(plane.actor, key_id=plane.bitget_key.id)
    plane.runtime.service.subaccounts.delete_sub_account(plane.actor, uid=plane.wb_sub.uid)
    assert verify(verifier, plane.bitget()) is Reason.UNKNOWN_KEY
    assert verify(verifier, plane.whitebit()) is Reason.UNKNOWN_KEY


def test_revoked_main_key_stops_verifying_on_the_next_request(runtime: Runtime) -> None:
    main = runtime.service.accounts.create_main_account("main")
    issued = runtime.service.keys.issue_main_key(main.uid, Scheme.WHITEBIT)
    client = ccxt.whitebit({"apiKey": issued.key.api_key, "secret": issued.secret})

    def request() -> SignedRequest:
        return as_signed(client.sign("trade-account/balance", ["v4", "private"], "POST", {}))

    assert verify(runtime.verifier, request()) is Reason.VALID
    runtime.service.keys.revoke_key(issued.key.api_key)
    assert verify(runtime.verifier, request()) is Reason.UNKNOWN_KEY


def test_a_miss_loads_once_then_hits(plane: Plane) -> None:
    verifier = plane.runtime.verifier
    verifier.cache.clear()
    loads: list[str] = []
    original = verifier.cache._loader

    def counting(api_key: str) -> Any:
        loads.append(api_key)
        return original(api_key)

    verifier.cache._loader = counting
    for _ in range(3):
        assert verify(verifier, plane.whitebit()) is Reason.VALID
    assert loads == [plane.whitebit_key.api_key]


def test_open_verifier_in_another_process_role_hears_of_changes(plane: Plane, tmp_path: Path) -> None:
    """A venue's own process verifying from the same store: a change made by the service reaches it."""
    url = f"sqlite:///{tmp_path / 'keyplane.db'}"
    with keyplane.open_verifier(url, master_key=MASTER_KEY) as verifier:
        assert verify(verifier, plane.bitget()) is Reason.VALID
        plane.runtime.service.keys.modify_sub_key(
            plane.actor, key_id=plane.bitget_key.id, passphrase=PASSPHRASE, permissions=("read",)
        )
        deadline = time.monotonic() + 3
        reason = verify(verifier, plane.bitget())
        while reason is Reason.VALID and time.monotonic() < deadline:
            time.sleep(0.05)
            reason = verify(verifier, plane.bitget())
        assert reason is Reason.PERMISSION_DENIED


def test_verify_without_requirement_uses_the_endpoint_table(plane: Plane) -> None:
    verifier = plane.runtime.verifier
    plane.runtime.service.keys.modify_sub_key(
        plane.actor, key_id=plane.bitget_key.id, passphrase=PASSPHRASE, permissions=("read",)
    )
    result = verifier.verify(plane.bitget())
    assert result.reason is Reason.PERMISSION_DENIED and result.detail == "spot_trade"
    result = verifier.verify(plane.bitget("v2/spot/account/assets", method="GET", params={"coin": "BTC"}))
    assert result.valid and result.account is not None and result.account.uid == plane.sub.uid
    assert result.rate_limit is not None and result.rate_limit.limit == 10 and result.rate_limit.remaining == 9


def test_remembered_verdicts_follow_the_address_and_the_endpoint(plane: Plane) -> None:
    """The entry remembers its last verdict and a few more: alternating addresses and endpoints must
    each get their own answer, never the previous call's."""
    verifier = plane.runtime.verifier
    plane.runtime.service.keys.modify_sub_key(
        plane.actor, key_id=plane.bitget_key.id, passphrase=PASSPHRASE, permissions=("read",), ip_list=["10.1.1.1"]
    )
    order = plane.bitget()  # needs spot_trade, which the key no longer has
    assets = plane.bitget("v2/spot/account/assets", method="GET", params={"coin": "BTC"})  # needs read
    for _ in range(3):
        for request, client_ip, expected in [
            (assets, "10.1.1.1", Reason.VALID),
            (assets, "10.2.2.2", Reason.IP_NOT_ALLOWED),
            (order, "10.1.1.1", Reason.PERMISSION_DENIED),
            (assets, "10.1.1.1", Reason.VALID),
            (order, "10.2.2.2", Reason.IP_NOT_ALLOWED),
        ]:
            request.client_ip = client_ip
            assert verify(verifier, request) is expected, (request.path, client_ip)


def test_a_replay_record_holds_the_first_64_bits_of_the_signature(plane: Plane, tmp_path: Path) -> None:
    """The verifier takes a replay record's token from the signature's first 12 base64 characters; it is the
    first 8 bytes of the whole signature decoded, the token records written before held. So a record another
    process (or an earlier version) wrote refuses the request, and the verifier's own record reads the same."""
    import base64

    from keyplane.store.replay_ledger import ledger_directory, read_ledger

    verifier = plane.runtime.verifier
    directory = ledger_directory(str(tmp_path / "keyplane.db"))
    first, second = plane.bitget(), plane.bitget(params={**ORDER, "size": "2"})
    tokens = []
    for request in (first, second):
        signature, sent = request.headers["access-sign"], int(request.headers["access-timestamp"])
        tokens.append((int.from_bytes(base64.b64decode(signature)[:8], "big", signed=True), sent + 60_000))
    # another process records the first request's token the way records were always written
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        assert pool.apply(_record_elsewhere, (directory, *tokens[0])) is True
    assert verify(verifier, first) is Reason.REQUEST_REPLAYED
    assert verify(verifier, second) is Reason.VALID
    assert verify(verifier, second) is Reason.REQUEST_REPLAYED
    with context.Pool(1) as pool:  # and the verifier's own record refuses the second one there
        assert pool.apply(_record_elsewhere, (directory, *tokens[1])) is False
    ledger = read_ledger(directory)
    assert [record for bucket in sorted(ledger) for record in ledger[bucket]][:2] == tokens


def _record_elsewhere(directory: str, token: int, expires_at: int) -> bool:
    from keyplane.store.replay_ledger import ReplayLedger

    ledger = ReplayLedger(directory)
    try:
        return ledger.record("k", token, expires_at, int(time.time() * 1000))
    finally:
        ledger.close()


_RACE_RULES = {
    "rules": [
        {"path": "/api/v2/spot/trade/place-order", "method": "POST", "permission": "spot_trade",
         "rate_limit": "1000000000/minute", "rate_name": "race"}
    ]
}


def _race_verifier(url: str) -> Verifier:
    endpoints = keyplane.EndpointTable.from_overrides(_RACE_RULES)
    return keyplane.open_verifier(url, master_key=MASTER_KEY, endpoints=endpoints, follow_changes=False)


def _race_verify(url: str, numbered: list[tuple[int, dict[str, Any]]], start: Any, out: Any) -> None:
    verifier = _race_verifier(url)
    start.wait()
    answers = [(i, verifier.verify(SignedRequest(**request)).reason.value) for i, request in numbered]
    verifier.close()
    out.put(answers)


def test_processes_racing_the_same_signed_orders_accept_each_once(plane: Plane, tmp_path: Path) -> None:
    """Three spawned processes, each with its own verifier on the one SQLite store (as the workers of
    ``keyplane serve``), verify the same signed Bitget orders at once, two in one order and one backwards:
    each order is accepted by exactly one of them, every other answer is REQUEST_REPLAYED, and a verifier
    opened afterwards (a restart) refuses them all."""
    import multiprocessing

    from keyplane.auth import bitget as bitget_auth

    path, count = "/api/v2/spot/trade/place-order", 300
    timestamp = str(int(time.time() * 1000))
    requests = []
    for i in range(count):
        body = f'{{"symbol":"BTCUSDT","side":"buy","orderType":"market","size":"1","clientOid":"race-{i}"}}'.encode()
        message = bitget_auth.prehash(timestamp, "POST", path, "", body)
        headers = {
            "access-key": plane.bitget_key.api_key,
            "access-sign": bitget_auth.sign_hmac(plane.bitget_secret.encode(), message),
            "access-timestamp": timestamp,
            "access-passphrase": PASSPHRASE,
            "content-type": "application/json",
        }
        requests.append(
            {"method": "POST", "path": path, "query": "", "headers": headers, "body": body, "client_ip": "127.0.0.1"}
        )
    url = f"sqlite:///{tmp_path / 'keyplane.db'}"
    numbered = list(enumerate(requests))
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(3), context.Queue()
    workers = [
        context.Process(target=_race_verify, args=(url, order, start, out))
        for order in (numbered, numbered[::-1], numbered)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=180) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    valid = [0] * count
    for answers in results:
        assert len(answers) == count
        for i, reason in answers:
            assert reason in ("VALID", "REQUEST_REPLAYED"), reason
            valid[i] += reason == "VALID"
    assert valid == [1] * count
    restarted = _race_verifier(url)
    try:
        assert {restarted.verify(SignedRequest(**r)).reason for r in requests} == {Reason.REQUEST_REPLAYED}
    finally:
        restarted.close()


def _hold_the_replay_ledger(directory: str, ready: Any, release: Any) -> None:
    import fcntl
    import os

    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, "owner"), os.O_RDWR | os.O_CREAT)
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)  # an owner that never hands over (stopped, say)
    ready.set()
    release.wait(60)


def test_a_first_replay_record_that_waits_for_another_process_never_blocks_the_event_loop(
    plane: Plane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a POST's replay record is made on the event loop, except the process's first: it may wait
    for the ledger's owner to hand over, so it runs in the verifier's thread pool. An owner that never
    does is an outage answer after the wait, while the loop goes on serving."""
    import asyncio

    from keyplane.store import replay_ledger
    from keyplane.store.replay_ledger import ledger_directory

    monkeypatch.setattr(replay_ledger, "JOIN_TIMEOUT_S", 1.0)
    monkeypatch.setattr(replay_ledger, "JOIN_BACKOFF_S", 0.2)
    verifier = plane.runtime.verifier
    assert verify(verifier, plane.bitget(method="GET", path="v2/spot/account/assets", params={})) is Reason.VALID
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(
        target=_hold_the_replay_ledger, args=(ledger_directory(str(tmp_path / "keyplane.db")), ready, release)
    )
    holder.start()
    try:
        assert ready.wait(60)

        async def verify_while_ticking() -> tuple[Reason, int, float]:
            ticks = 0
            longest = 0.0

            async def tick() -> None:
                nonlocal ticks, longest
                while True:
                    started = time.monotonic()
                    await asyncio.sleep(0.01)
                    longest = max(longest, time.monotonic() - started)
                    ticks += 1

            ticker = asyncio.create_task(tick())
            result = await verifier.verify_async(plane.bitget())
            ticker.cancel()
            return result.reason, ticks, longest

        reason, ticks, longest = asyncio.run(verify_while_ticking())
        assert reason is Reason.UNAVAILABLE
        assert ticks >= 40 and longest < 0.5, (ticks, longest)  # the loop ran on through the ~1 s wait
    finally:
        release.set()
        holder.join(30)
    time.sleep(0.3)  # the back-off after the failed wait
    assert asyncio.run(verifier.verify_async(plane.bitget(params={**ORDER, "size": "3"}))).reason is Reason.VALID


def test_a_ledger_that_cannot_decide_is_an_outage_logged_once_a_second_not_an_error_per_request(
    plane: Plane, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A replay-ledger bucket that is not whole records fails closed: UNAVAILABLE, logged as an outage (one
    warning a second), not as an error line per request a client could multiply."""
    import logging

    from keyplane.errors import Unavailable
    from keyplane.outages import unavailable
    from keyplane.store.replay_ledger import BUCKET_MS, LedgerError, ledger_directory

    assert isinstance(unavailable(LedgerError("not handed over")), Unavailable)
    assert isinstance(unavailable(OSError(28, "No space left on device")), Unavailable)
    assert unavailable(OSError(2, "No such file")) is None  # not an outage: stays a bug
    verifier = plane.runtime.verifier
    requests = [plane.bitget(params={**ORDER, "size": str(n)}) for n in range(30)]
    directory = Path(ledger_directory(str(tmp_path / "keyplane.db")))
    directory.mkdir(exist_ok=True)
    for request in requests:  # every bucket these requests could land in, cut to an odd length
        bucket = (int(request.headers["access-timestamp"]) + 60_000) // BUCKET_MS
        (directory / str(bucket)).write_bytes(b"\x01" * 19)
    with caplog.at_level(logging.WARNING):
        reasons = {verify(verifier, request) for request in requests}
    assert reasons == {Reason.UNAVAILABLE}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert len([r for r in caplog.records if "UNAVAILABLE" in r.getMessage()]) <= 2  # throttled (0: within the second)
