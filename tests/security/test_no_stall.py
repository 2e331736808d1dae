"""No stall (issue 8, item 7): the argon2id passphrase check and cache-miss lookups never block the event
loop; failed passphrases are throttled per key; unknown API keys are remembered briefly.

The in-process tests use the real verifier over a real SQLite (and PostgreSQL) store; the stall test runs
a real ``keyplane serve`` and measures a cached key's answers while fresh keys are verified.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import bitget_helpers as h
from conftest import PROBE_RATE, Server, make_server
from keyplane import Reason, SignedRequest
from keyplane.auth import cache as cache_module
from keyplane.auth.request import WOULD_BLOCK
from keyplane.config import Settings
from keyplane.domain.model import Scheme
from keyplane.domain.policy import Policy
from keyplane.endpoints import EndpointTable
from keyplane.runtime import Runtime, build_runtime
from keyplane.services import Actor, NewKeySpec

MASTER_KEY = "12" * 32
PASSPHRASE = "Passphrase123"
TOKEN = "no-stall-verify-token-0123456789"
INFO = "/api/v2/spot/account/info"


def bitget_request(api_key: str, secret: str, passphrase: str, ip: str = "127.0.0.1") -> SignedRequest:
    ts = h.now_ms()
    headers = {"access-key": api_key, "access-sign": h.sign(secret, ts, "GET", INFO, "", b""),
               "access-timestamp": ts, "access-passphrase": passphrase}
    return SignedRequest("GET", INFO, "", headers, b"", ip)


@pytest.fixture()
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    # account info, this module's probe, is 1/s per UID by default: lifted, as for the suite's servers
    policy = Policy.from_overrides(PROBE_RATE)
    rt = build_runtime(Settings(database_url=f"sqlite:///{tmp_path / 'keyplane.db'}", master_key=MASTER_KEY,
                                policy=policy, endpoints=EndpointTable.defaults(policy)))
    yield rt
    rt.close()


def sub_key(runtime: Runtime, passphrase: str = PASSPHRASE) -> tuple[str, str]:
    service = runtime.service
    main = service.accounts.create_main_account("stall-" + str(time.monotonic_ns()))
    actor = Actor(account=main)
    sub = service.subaccounts.create_sub_account(actor, Scheme.BITGET, name="s" + str(time.monotonic_ns())[-7:],
                                     permissions=("spot_trade",))
    issued = service.keys.create_sub_key(actor, Scheme.BITGET, NewKeySpec(
        label="k", passphrase=passphrase, permissions=("spot_trade", "read")), uid=sub.uid)
    assert issued.secret is not None
    return issued.key.api_key, issued.secret


class Counting:
    """Counts calls of a real function and passes them on (a spy, not a stand-in)."""

    def __init__(self, function: Any) -> None:
        self.function = function
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.function(*args)


def test_a_cache_miss_and_the_first_passphrase_would_block_and_change_nothing(runtime: Runtime) -> None:
    verifier = runtime.verifier
    api_key, secret = sub_key(runtime)
    request = bitget_request(api_key, secret, PASSPHRASE)
    assert verifier.verify(request, may_block=False) is WOULD_BLOCK  # not cached: a store lookup
    assert verifier.cache.peek(api_key) is None  # nothing was loaded
    verifier.cache.get(api_key)  # loaded (as the thread pool's pass does), passphrase not yet checked
    assert verifier.verify(request, may_block=False) is WOULD_BLOCK  # argon2id would run
    cached = verifier.cache.peek(api_key)
    assert cached is not None and cached.passphrase_digest is None and cached.failures == 0
    assert verifier.verify(request).reason is Reason.VALID  # the blocking pass
    assert verifier.verify(request, may_block=False).reason is Reason.VALID  # now inline


def test_verify_async_answers_every_case(runtime: Runtime) -> None:
    verifier = runtime.verifier
    api_key, secret = sub_key(runtime)

    async def run() -> list[Reason]:
        return [(await verifier.verify_async(request)).reason for request in (
            bitget_request(api_key, secret, PASSPHRASE),  # miss + argon2id: the pool
            bitget_request(api_key, secret, PASSPHRASE),  # inline
            bitget_request(api_key, secret, "Wrongpass12"),  # a digest compare: inline
            bitget_request("bg_" + "0" * 32, secret, PASSPHRASE),  # unknown: the pool, then remembered
            bitget_request("bg_" + "0" * 32, secret, PASSPHRASE),
        )]

    assert asyncio.run(run()) == [Reason.VALID, Reason.VALID, Reason.BAD_PASSPHRASE, Reason.UNKNOWN_KEY,
                                  Reason.UNKNOWN_KEY]


@pytest.mark.postgres
def test_a_postgres_nonce_is_left_to_its_batch_unspent(pg_url: str) -> None:
    """On PostgreSQL the nonce ledger is a transaction (``blocking``): the inline pass stops before it and
    answers a deferred claim (not valid, nothing spent), which ``verify_async`` awaits in a batch on the
    loop (store/nonce_batch.py); the nonce is still unspent until then."""
    rt = build_runtime(Settings(database_url=pg_url, master_key=MASTER_KEY))
    try:
        verifier = rt.verifier
        assert verifier.nonces.blocking
        main = rt.service.accounts.create_main_account("pg-stall")
        issued = rt.service.keys.issue_main_key(main.uid, Scheme.WHITEBIT)
        assert issued.secret is not None
        body = json.dumps({"request": "/api/v4/trade-account/balance", "nonce": str(h.now_ms())},
                          separators=(",", ":")).encode()
        payload = base64.b64encode(body).decode()
        headers = {"x-txc-apikey": issued.key.api_key, "x-txc-payload": payload,
                   "x-txc-signature": hmac.new(issued.secret.encode(), payload.encode(), hashlib.sha512).hexdigest()}
        request = SignedRequest("POST", "/api/v4/trade-account/balance", "", headers, body, "127.0.0.1")
        verifier.cache.get(issued.key.api_key)
        for _ in range(2):
            deferred = verifier.verify(request, may_block=False)
            assert deferred.reason is Reason.WOULD_BLOCK and not deferred.valid
        assert asyncio.run(verifier.verify_async(request)).reason is Reason.VALID  # not spent by the inline passes
        assert verifier.verify(request).reason is Reason.NONCE_TOO_LOW
        assert asyncio.run(verifier.verify_async(request)).reason is Reason.NONCE_TOO_LOW
    finally:
        rt.close()


def test_failed_passphrases_are_throttled_without_argon2(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = runtime.verifier
    api_key, secret = sub_key(runtime)
    spy = Counting(cache_module.crypto.verify_passphrase)
    monkeypatch.setattr(cache_module.crypto, "verify_passphrase", spy)
    for attempt in range(cache_module.PASSPHRASE_FAILURES):
        assert verifier.verify(bitget_request(api_key, secret, f"Wrongpass{attempt:02d}")).reason \
            is Reason.BAD_PASSPHRASE
    assert spy.calls == cache_module.PASSPHRASE_FAILURES
    started = time.perf_counter()
    for attempt in range(200):
        assert verifier.verify(bitget_request(api_key, secret, f"Guess{attempt:04d}x")).reason is Reason.BAD_PASSPHRASE
    # throttled: refused without argon2id (200 runs would take seconds), even the right passphrase
    assert spy.calls == cache_module.PASSPHRASE_FAILURES
    assert time.perf_counter() - started < 1.0
    assert verifier.verify(bitget_request(api_key, secret, PASSPHRASE)).reason is Reason.BAD_PASSPHRASE
    assert verifier.verify(bitget_request(api_key, secret, PASSPHRASE), may_block=False).reason \
        is Reason.BAD_PASSPHRASE  # and without leaving the event loop
    # the window ends: the right passphrase passes again
    cached = verifier.cache.peek(api_key)
    assert cached is not None
    cached.failures_since -= cache_module.PASSPHRASE_WINDOW_S
    assert verifier.verify(bitget_request(api_key, secret, PASSPHRASE)).reason is Reason.VALID
    assert spy.calls == cache_module.PASSPHRASE_FAILURES + 1


def test_a_flood_of_unknown_keys_costs_one_lookup_each_and_new_keys_verify_at_once(runtime: Runtime) -> None:
    verifier = runtime.verifier
    spy = Counting(verifier.cache._loader)
    verifier.cache._loader = spy
    unknown = [f"bg_{index:032x}" for index in range(300)]
    for _ in range(5):
        for api_key in unknown:
            assert verifier.verify(bitget_request(api_key, "x", "x")).reason is Reason.UNKNOWN_KEY
    assert spy.calls == len(unknown)  # the four later rounds cost no lookup
    # inline too: a remembered unknown key never leaves the event loop
    assert verifier.verify(bitget_request(unknown[0], "x", "x"), may_block=False).reason is Reason.UNKNOWN_KEY
    # malformed keys cost none at all
    for api_key in ("k" * 129, "bg_\x00"):
        assert verifier.verify(bitget_request(api_key, "x", "x"), may_block=False).reason is Reason.UNKNOWN_KEY
    assert spy.calls == len(unknown)
    # a key made now verifies at once (a new key's api_key was never seen; a change notification would
    # drop a remembered one anyway)
    api_key, secret = sub_key(runtime)
    assert verifier.verify(bitget_request(api_key, secret, PASSPHRASE)).reason is Reason.VALID
    verifier.cache.invalidate([unknown[1]])
    verifier.verify(bitget_request(unknown[1], "x", "x"))
    assert spy.calls == len(unknown) + 2


def test_unknown_keys_are_remembered_in_bounded_memory_for_a_short_time(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "UNKNOWN_MAX", 100)
    verifier = runtime.verifier
    for index in range(1000):
        verifier.verify(bitget_request(f"bg_{index:032x}", "x", "x"))
    assert len(verifier.cache._unknown) == 100
    assert verifier.cache.known_unknown(f"bg_{999:032x}") and not verifier.cache.known_unknown(f"bg_{0:032x}")
    time.sleep(cache_module.UNKNOWN_TTL_S + 0.05)
    assert not verifier.cache.known_unknown(f"bg_{999:032x}")


# The stall test: a real server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # the endpoint without its rate limit: the cached key asks as fast as it is answered
    endpoints = json.dumps({"rules": [{"path": INFO, "method": "GET", "permission": "read", "rate_limit": None}]})
    srv = h.track(make_server(tmp_path_factory.mktemp("no-stall"),
                              {"KEYPLANE_VERIFY_TOKEN": TOKEN, "KEYPLANE_ENDPOINTS": endpoints}))
    srv.start()
    yield srv
    srv.stop()


def _call(key: h.MainKey) -> dict[str, Any]:
    ts = h.now_ms()
    return {"method": "GET", "uri": INFO, "client_ip": "127.0.0.1", "headers": {
        "access-key": key.api_key, "access-sign": h.sign(key.secret, ts, "GET", INFO, "", b""),
        "access-timestamp": ts, "access-passphrase": key.passphrase}}


def test_fresh_keys_never_stall_a_cached_keys_answers(server: Server) -> None:
    """20 keys seen for the first time (a store lookup and a ~25 ms argon2id run each) are verified at once
    while a cached key keeps asking: its answers stay fast, so the event loop never waited on them."""
    cached = h.main_key(server)
    fresh = [h.main_key(server, cached.uid) for _ in range(20)]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.base_url, timeout=30, headers=auth) as http:
        assert http.post("/v1/verify", json=_call(cached)).json()["valid"]  # cached, passphrase checked

        latencies: list[float] = []
        done = threading.Event()

        def keep_asking() -> None:
            with httpx.Client(base_url=server.base_url, timeout=30, headers=auth) as own:
                while not done.is_set():
                    started = time.perf_counter()
                    answer = own.post("/v1/verify", json=_call(cached)).json()
                    assert answer["valid"], answer
                    latencies.append(time.perf_counter() - started)

        async def fresh_batch() -> list[bool]:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30, headers=auth) as client:
                answers = await asyncio.gather(*(client.post("/v1/verify", json=_call(key)) for key in fresh))
            return [answer.json()["valid"] for answer in answers]

        asker = threading.Thread(target=keep_asking)
        asker.start()
        time.sleep(0.2)
        before = len(latencies)
        started = time.perf_counter()
        valid = asyncio.run(fresh_batch())
        batch_seconds = time.perf_counter() - started
        during = latencies[before:]
        done.set()
        asker.join()
    assert valid == [True] * len(fresh)
    # 20 argon2id runs on 2 cores take hundreds of ms; inline on the loop, every cached answer in that
    # time would have waited for all of them
    assert batch_seconds > 0.2, batch_seconds
    assert len(during) >= 5, (len(during), batch_seconds)
    assert statistics.median(during) < batch_seconds / 5, (statistics.median(during), batch_seconds)
    assert max(during) < batch_seconds / 2, (max(during), batch_seconds)


def test_a_key_row_that_does_not_build_is_unknown_never_an_exception(runtime: Runtime, tmp_path: Path) -> None:
    """Verifier.verify never raises: a stored secret no master key opens, or an RSA key whose public key
    does not load, make the key unknown (logged by the cache), remembered like any unknown key."""
    verifier = runtime.verifier
    broken = [sub_key(runtime), sub_key(runtime)]
    with sqlite3.connect(tmp_path / "keyplane.db") as conn:
        conn.execute("UPDATE api_keys SET sealed_secret = ? WHERE api_key = ?", (b"\x01" + b"\x00" * 40, broken[0][0]))
        conn.execute("UPDATE api_keys SET sign_type = 'rsa', public_key = 'not a PEM' WHERE api_key = ?",
                     (broken[1][0],))
    for api_key, secret in broken:
        request = bitget_request(api_key, secret, PASSPHRASE)
        assert verifier.verify(request).reason is Reason.UNKNOWN_KEY
        assert verifier.verify(request, may_block=False).reason is Reason.UNKNOWN_KEY  # remembered: inline


def test_concurrent_wrong_passphrases_cannot_outrun_the_throttle(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 attempts at once, as the thread pool would run them: argon2id runs one at a time per key, so at
    most the throttle's number of failures ever reach it."""
    verifier = runtime.verifier
    api_key, secret = sub_key(runtime)
    verifier.cache.get(api_key)
    spy = Counting(cache_module.crypto.verify_passphrase)
    monkeypatch.setattr(cache_module.crypto, "verify_passphrase", spy)
    start = threading.Barrier(40)
    reasons: list[Reason] = []

    def attempt(index: int) -> None:
        request = bitget_request(api_key, secret, f"Wrongpass{index:02d}")
        start.wait()
        reasons.append(verifier.verify(request).reason)

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert reasons == [Reason.BAD_PASSPHRASE] * 40
    assert spy.calls == cache_module.PASSPHRASE_FAILURES
