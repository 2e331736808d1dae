"""Issue 10, items 5 and 6 on a real ``keyplane serve``: ``/metrics`` counts known traffic exactly (both
dialects' routes, ``/v1/verify``, refusals, a management call, one scrape for several workers), refusal
log lines say why without a secret (text and JSON), a flood of them is sampled, and ``/ready`` fails
while a private PostgreSQL or Redis is stopped and recovers when it is back."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from clients.whitebit_http import WhitebitClient, compact
from conftest import Server, make_server
from keyplane import crypto
from keyplane.readiness import Readiness
from keyplane.store import Store
from keyplane.store.nonce_journal import HEADER_SIZE, RECORD_SIZE

TOKEN = "observability-token-" + "7" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITED = "/api/v2/spot/account/limited"  # a rule of this test's own: 2 calls a minute
ENDPOINTS = {
    "rules": [
        {"path": LIMITED, "method": "GET", "permission": "read", "rate_limit": "2/minute", "rate_name": "limited"}
    ]
}
ASSETS = "/api/v2/spot/account/assets"
SUB_LIST = "/api/v2/user/virtual-subaccount-list"
SUB_CREATE = "/api/v2/user/create-virtual-subaccount"
WB_LIST = "/api/v4/sub-account/list"
WB_BALANCE = "/api/v4/trade-account/balance"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: Server) -> Samples:
    response = httpx.get(server.base_url + "/metrics", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def changed(before: Samples, after: Samples, prefix: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the metrics named ``prefix...`` that moved, and by how much."""
    keys = {key for key in (*before, *after) if key[0].startswith(prefix)}
    return {key: after.get(key, 0.0) - before.get(key, 0.0) for key in keys if after.get(key) != before.get(key)}


def label_set(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (name, frozenset(labels.items()))


# signing ------------------------------------------------------------------------------------------------


def bitget_headers(key: dict[str, Any], method: str, path: str, query: str = "", body: bytes = b"",
                   *, secret: str | None = None, passphrase: str | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() * 1000))
    prehash = (timestamp + method + path + ("?" + query if query else "")).encode() + body
    signature = base64.b64encode(
        hmac.new((secret or key["secretKey"]).encode(), prehash, hashlib.sha256).digest()
    ).decode()
    return {
        "ACCESS-KEY": key["apiKey"], "ACCESS-SIGN": signature, "ACCESS-TIMESTAMP": timestamp,
        "ACCESS-PASSPHRASE": passphrase or key["passphrase"], "Content-Type": "application/json",
    }


def bitget_call(server: Server, key: dict[str, Any], method: str, path: str, query: str = "",
                body: bytes = b"", **bend: str) -> httpx.Response:
    headers = bitget_headers(key, method, path, query, body, **bend)
    url = server.base_url + path + ("?" + query if query else "")
    return httpx.request(method, url, headers=headers, content=body, timeout=10)


def verify_bitget(server: Server, key: dict[str, Any], path: str, **bend: str) -> dict[str, Any]:
    headers = {k.lower(): v for k, v in bitget_headers(key, "GET", path, **bend).items()}
    call = {"method": "GET", "uri": path, "headers": headers, "body": "", "client_ip": "127.0.0.1"}
    answer = httpx.post(server.base_url + "/v1/verify", json=call, headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def verify_whitebit(server: Server, body: bytes, client: WhitebitClient) -> dict[str, Any]:
    payload = base64.b64encode(body).decode()
    signature = hmac.new(client.secret.encode(), payload.encode(), hashlib.sha512).hexdigest()
    call = {
        "method": "POST", "uri": WB_BALANCE, "body": body.decode(), "client_ip": "127.0.0.1",
        "headers": {"x-txc-apikey": client.api_key, "x-txc-payload": payload, "x-txc-signature": signature},
    }
    answer = httpx.post(server.base_url + "/v1/verify", json=call, headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


# servers ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Plain-text log at the default level (INFO), a verify token, a rate-limited rule of the test's own."""
    srv = make_server(
        tmp_path_factory.mktemp("observability"),
        {"KEYPLANE_VERIFY_TOKEN": TOKEN, "KEYPLANE_ENDPOINTS": json.dumps(ENDPOINTS)},
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, Any]:
    uid = server.main_account("observed")
    return {"bitget": server.bitget_main_key(uid), "whitebit": server.whitebit_main_key(uid)}


def journal_bytes(server: Server) -> int:
    path = Path(server.database_url.removeprefix("sqlite:///") + ".nonces")
    return path.stat().st_size if path.exists() else 0


def test_metrics_count_known_traffic_exactly(server: Server, keys: dict[str, Any]) -> None:
    bitget, wb = keys["bitget"], keys["whitebit"]
    client = WhitebitClient(server.base_url, wb["apiKey"], wb["apiSecret"])
    before = scrape(server)
    journal_before = journal_bytes(server) or HEADER_SIZE  # made, with its header, at the first record

    # Bitget's own routes: a valid list (the key's first use: a cache miss), a bad signature, a management
    # call the service refuses (an invalid sub-account name, after a valid, replay-recorded verification)
    assert bitget_call(server, bitget, "GET", SUB_LIST).json()["code"] == "00000"
    assert bitget_call(server, bitget, "GET", SUB_LIST, secret="x" * 32).json()["code"] == "40009"
    refused = bitget_call(server, bitget, "POST", SUB_CREATE, body=b'{"subAccountList":["no"]}')
    assert refused.status_code == 400 and refused.json()["code"] == "40055"
    # WhiteBIT's own routes: a valid list (a nonce recorded), a bad signature
    assert client.post(WB_LIST, {}).status_code == 200
    bad = client.post_raw(WB_LIST, compact(client.body(WB_LIST)), signature="0" * 128)
    assert bad.status_code == 401
    # /v1/verify: Bitget valid, Bitget over the rule's rate limit (2 a minute), WhiteBIT valid then replayed
    assert verify_bitget(server, bitget, ASSETS)["code"] == "VALID"
    assert [verify_bitget(server, bitget, LIMITED)["code"] for _ in range(3)] == ["VALID", "VALID", "RATE_LIMITED"]
    body = compact(client.body(WB_BALANCE))
    assert verify_whitebit(server, body, client)["code"] == "VALID"
    assert verify_whitebit(server, body, client)["code"] == "NONCE_TOO_LOW"
    # refused before any verification: no token, an unknown path of each dialect
    assert httpx.post(server.base_url + "/v1/verify", json={}, timeout=10).status_code == 401
    assert httpx.get(server.base_url + "/api/v2/no/such/route", timeout=10).status_code == 404
    assert httpx.post(server.base_url + "/api/v4/no/such/route", timeout=10).status_code == 404

    after = scrape(server)
    assert changed(before, after, "keyplane_verifications_total") == {
        label_set("keyplane_verifications_total", via="management", dialect="bitget", reason="VALID"): 2,
        label_set("keyplane_verifications_total", via="management", dialect="bitget", reason="BAD_SIGNATURE"): 1,
        label_set("keyplane_verifications_total", via="management", dialect="whitebit", reason="VALID"): 1,
        label_set("keyplane_verifications_total", via="management", dialect="whitebit", reason="BAD_SIGNATURE"): 1,
        label_set("keyplane_verifications_total", via="verify", dialect="bitget", reason="VALID"): 3,
        label_set("keyplane_verifications_total", via="verify", dialect="bitget", reason="RATE_LIMITED"): 1,
        label_set("keyplane_verifications_total", via="verify", dialect="whitebit", reason="VALID"): 1,
        label_set("keyplane_verifications_total", via="verify", dialect="whitebit", reason="NONCE_TOO_LOW"): 1,
    }
    assert changed(before, after, "keyplane_rate_limited_total") == {
        label_set("keyplane_rate_limited_total", via="verify", dialect="bitget"): 1
    }
    assert changed(before, after, "keyplane_management_operations_total") == {
        label_set("keyplane_management_operations_total", dialect="bitget", operation=SUB_LIST, outcome="ok"): 1,
        label_set("keyplane_management_operations_total", dialect="bitget", operation=SUB_CREATE,
                  outcome="rejected"): 1,
        label_set("keyplane_management_operations_total", dialect="whitebit", operation=WB_LIST, outcome="ok"): 1,
    }
    assert changed(before, after, "keyplane_requests_refused_total") == {
        label_set("keyplane_requests_refused_total", route="native", reason="UNAUTHORIZED"): 1,
        label_set("keyplane_requests_refused_total", route="bitget", reason="NOT_FOUND"): 1,
        label_set("keyplane_requests_refused_total", route="whitebit", reason="NOT_FOUND"): 1,
    }
    # every request in the histogram: 4 Bitget, 3 WhiteBIT, 7 on /v1/, and the first scrape ("other")
    for route, count in (("bitget", 4), ("whitebit", 3), ("native", 7), ("other", 1)):
        assert delta(before, after, "keyplane_request_duration_seconds_count", route=route) == count, route
        assert delta(before, after, "keyplane_request_duration_seconds_bucket", route=route, le="+Inf") == count
        assert delta(before, after, "keyplane_request_duration_seconds_sum", route=route) > 0
    # both keys were new to the cache: one miss each; every other lookup (all but the 2 unknown paths and
    # the call without a token) found its key
    assert delta(before, after, "keyplane_key_cache_misses_total") == 2
    assert delta(before, after, "keyplane_key_cache_hits_total") == 11 - 2
    assert delta(before, after, "keyplane_key_cache_entries") == 2
    # nonce journal: the WhiteBIT list's nonce and the verified WhiteBIT nonce (Bitget's replay records
    # have a ledger of their own: store/replay_ledger.py)
    assert journal_bytes(server) - journal_before == 2 * RECORD_SIZE
    assert value(after, "keyplane_nonce_journal_bytes") == journal_bytes(server)
    # one server process recorded a replay-protected POST: it owns the SQLite replay ledger
    assert value(after, "keyplane_replay_ledger_owner") == 1
    assert value(after, "keyplane_metrics_workers") == 1


def test_metrics_need_the_verify_token(server: Server) -> None:
    url = server.base_url + "/metrics"
    assert httpx.get(url, timeout=10).status_code == 401
    wrong = httpx.get(url, headers={"Authorization": "Bearer " + "x" * len(TOKEN)}, timeout=10)
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert "keyplane_verifications_total" not in wrong.text
    assert httpx.get(url, headers=AUTH, timeout=10).status_code == 200


def test_metrics_off_closed_and_open(tmp_path: Path) -> None:
    # KEYPLANE_METRICS=0: no /metrics at all; no token: closed as /v1/ is; KEYPLANE_VERIFY_OPEN=1: open
    for env, status in (
        ({"KEYPLANE_VERIFY_TOKEN": TOKEN, "KEYPLANE_METRICS": "0"}, 404),
        ({}, 401),
        ({"KEYPLANE_VERIFY_OPEN": "1"}, 200),
    ):
        srv = make_server(tmp_path / str(status), env)
        srv.start()
        try:
            assert httpx.get(srv.base_url + "/metrics", headers=AUTH, timeout=10).status_code == status
            ready = httpx.get(srv.base_url + "/ready", timeout=10)
            assert (ready.status_code, ready.json()) == (200, {"status": "ready", "checks": {"store": "ok"}})
        finally:
            srv.stop()


def log_lines(server: Server, start: int = 0) -> list[str]:
    return server.log_path.read_text(errors="replace").splitlines()[start:]


def test_refusal_lines_in_text_say_why(server: Server, keys: dict[str, Any]) -> None:
    start = len(log_lines(server))
    bitget = keys["bitget"]
    bitget_call(server, bitget, "GET", SUB_LIST, passphrase="WrongPass123")
    assert bitget_call(server, bitget, "GET", SUB_LIST).status_code == 200  # valid: no refusal line
    time.sleep(0.3)
    lines = [line for line in log_lines(server, start) if "keyplane.refusals" in line]
    assert len(lines) == 1, lines
    line = lines[0]
    for part in ("refused BAD_PASSPHRASE", f"GET {SUB_LIST}", f"key={bitget['apiKey']}", "ip=127.0.0.1"):
        assert part in line, line
    assert "WrongPass123" not in line and bitget["secretKey"] not in line


def test_refusal_lines_cannot_be_forged_or_flooded_by_what_a_client_sends(server: Server) -> None:
    """A /v1/verify call names any path and key it likes: a text line shows them escaped and cut short."""
    start = len(log_lines(server))
    forged = "\n2026-01-01 00:00:00,000 INFO keyplane.refusals refused NOTHING"
    call = {
        "method": "GET", "uri": "/api/v2/spot/account/assets" + forged, "body": "", "client_ip": "127.0.0.1",
        "headers": {"access-key": "bg_" + "k" * 50_000 + forged, "access-sign": "c2ln",
                    "access-timestamp": str(int(time.time() * 1000)), "access-passphrase": "SecretPass99"},
    }
    answer = httpx.post(server.base_url + "/v1/verify", json=call, headers=AUTH, timeout=10)
    assert answer.status_code == 200 and answer.json()["code"] == "BAD_TARGET"
    time.sleep(0.3)
    new = log_lines(server, start)
    refusals = [line for line in new if "keyplane.refusals" in line]
    assert len(refusals) == 1 and "refused BAD_TARGET" in refusals[0]
    assert not any("refused NOTHING" in line and "keyplane.refusals refused NOTHING" in line[:80] for line in new)
    assert all(len(line) < 1000 for line in new)
    assert "SecretPass99" not in "\n".join(new)


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # a master key from the environment: no key file is made, so no "created a new master key" line either
    srv = make_server(tmp_path_factory.mktemp("json-log"), {
        "KEYPLANE_VERIFY_TOKEN": TOKEN, "KEYPLANE_LOG_FORMAT": "json", "KEYPLANE_LOG_REFUSALS_PER_SECOND": "5",
        "KEYPLANE_MASTER_KEY": crypto.new_master_key_text(),
    })
    srv.start()
    yield srv
    srv.stop()


def records(server: Server) -> list[dict[str, Any]]:
    """Every line of the server's output, each one JSON object (the CLI's own lines are not in it)."""
    return [json.loads(line) for line in log_lines(server)]


def test_json_refusal_lines_carry_reason_key_ip_method_path_and_no_secret(json_server: Server) -> None:
    uid = json_server.main_account("jsonlog")
    bitget, wb = json_server.bitget_main_key(uid), json_server.whitebit_main_key(uid)
    client = WhitebitClient(json_server.base_url, wb["apiKey"], wb["apiSecret"])
    sent: list[str] = []  # every signature sent, valid or not: none may reach the log

    def spy(headers: dict[str, str]) -> dict[str, str]:
        sent.append(headers["ACCESS-SIGN"])
        return headers

    # Bitget: a wrong passphrase, a wrong signature, and a valid call (which is not logged)
    for bend in ({"passphrase": "NotThePass42"}, {"secret": "y" * 32}, {}):
        headers = spy(bitget_headers(bitget, "GET", SUB_LIST, **bend))
        httpx.get(json_server.base_url + SUB_LIST, headers=headers, timeout=10)
    # a client that sends its secret in the key header: an unknown key, shown by its first 8 characters only
    confused = {**bitget, "apiKey": bitget["secretKey"]}
    httpx.get(json_server.base_url + SUB_LIST, headers=spy(bitget_headers(confused, "GET", SUB_LIST)), timeout=10)
    # WhiteBIT: a wrong signature; /v1/verify: a WhiteBIT call with a bad signature
    bad_signature = "ab" * 64
    client.post_raw(WB_LIST, compact(client.body(WB_LIST)), signature=bad_signature)
    body = compact(client.body(WB_BALANCE))
    call = {
        "method": "POST", "uri": WB_BALANCE, "body": body.decode(), "client_ip": "198.51.100.7",
        "headers": {"x-txc-apikey": wb["apiKey"], "x-txc-payload": base64.b64encode(body).decode(),
                    "x-txc-signature": bad_signature},
    }
    assert httpx.post(json_server.base_url + "/v1/verify", json=call, headers=AUTH, timeout=10).json()["valid"] is False
    time.sleep(0.3)

    all_records = records(json_server)  # every line parses as one JSON object
    refusals = [r for r in all_records if r["logger"] == "keyplane.refusals" and "reason" in r]
    shape = [(r["reason"], r["route"], r["dialect"], r["method"], r["path"], r["api_key"], r["client_ip"])
             for r in refusals]
    assert shape == [
        ("BAD_PASSPHRASE", "management", "bitget", "GET", SUB_LIST, bitget["apiKey"], "127.0.0.1"),
        ("BAD_SIGNATURE", "management", "bitget", "GET", SUB_LIST, bitget["apiKey"], "127.0.0.1"),
        ("UNKNOWN_KEY", "management", "bitget", "GET", SUB_LIST, bitget["secretKey"][:8] + "…", "127.0.0.1"),
        ("BAD_SIGNATURE", "management", "whitebit", "POST", WB_LIST, wb["apiKey"], "127.0.0.1"),
        # /v1/verify logs the request it was asked about: its client, not the gateway's address
        ("BAD_SIGNATURE", "verify", "whitebit", "POST", WB_BALANCE, wb["apiKey"], "198.51.100.7"),
    ]
    assert all(r["level"] == "INFO" and r["message"].startswith("refused ") for r in refusals)
    text = json_server.log_path.read_text()
    for secret in (bitget["secretKey"], bitget["passphrase"], "NotThePass42", wb["apiSecret"], bad_signature, *sent):
        assert secret not in text
    # the start-up line says refusal lines are rate-limited
    assert any("at most 5 lines a second per reason" in r["message"] for r in all_records)


def test_a_flood_of_refusals_is_sampled_and_counted(json_server: Server) -> None:
    start = len(log_lines(json_server))
    before = scrape(json_server)
    flood = 600
    headers = {"ACCESS-KEY": "bg_unknown_flood_key", "ACCESS-SIGN": "c2ln", "ACCESS-TIMESTAMP": "1",
               "ACCESS-PASSPHRASE": "pass"}
    started = time.monotonic()

    def burst(count: int) -> None:
        with httpx.Client(base_url=json_server.base_url, timeout=10) as http:
            for _ in range(count):
                assert http.get(SUB_LIST, headers=headers).json()["code"] == "40008"  # an expired timestamp

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(burst, [flood // 6] * 6))
    elapsed = time.monotonic() - started
    time.sleep(1.5)  # the last second's summary line is written by a timer

    new = [json.loads(line) for line in log_lines(json_server, start)]
    lines = [r for r in new if r.get("reason") == "EXPIRED_TIMESTAMP"]
    summaries = [r for r in new if "suppressed" in r]
    suppressed = sum(r["by_reason"].get("EXPIRED_TIMESTAMP", 0) for r in summaries)
    assert summaries and all(r["message"].startswith(f"suppressed {r['suppressed']} refusals") for r in summaries)
    assert len(lines) + suppressed == flood  # every refusal is a line or counted in a summary
    assert len(lines) <= 5 * (int(elapsed) + 2)  # at most 5 a second (each second a window of its own)
    after = scrape(json_server)
    assert delta(before, after, "keyplane_refusal_log_suppressed_total") == suppressed
    assert delta(before, after, "keyplane_verifications_total", via="management", dialect="bitget",
                 reason="EXPIRED_TIMESTAMP") == flood


def test_log_level_warning_hides_refusals_and_bad_settings_are_one_line(tmp_path: Path) -> None:
    quiet = make_server(tmp_path / "quiet", {"KEYPLANE_LOG_LEVEL": "WARNING"})
    quiet.start()
    try:
        assert httpx.get(quiet.base_url + "/api/v2/nope", timeout=10).status_code == 404
        time.sleep(0.3)
        assert "keyplane.refusals" not in quiet.log_path.read_text()
    finally:
        quiet.stop()
    bad = make_server(tmp_path / "bad", {"KEYPLANE_LOG_FORMAT": "xml"})
    with pytest.raises(RuntimeError) as failed:
        bad.start()
    assert "KEYPLANE_LOG_FORMAT must be 'text' or 'json'" in str(failed.value)
    assert "Traceback" not in str(failed.value)


def test_two_workers_answer_one_scrape_for_both(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "workers", {"KEYPLANE_VERIFY_TOKEN": TOKEN})
    srv.serve_args = ("--workers", "2")
    srv.start()
    try:
        uid = srv.main_account("workers")
        key = srv.bitget_main_key(uid)
        time.sleep(1.5)
        before = scrape(srv)
        assert value(before, "keyplane_metrics_workers") == 2

        def call(_: int) -> str:
            return str(verify_bitget(srv, key, ASSETS)["code"])

        # each call on its own connection: granian spreads them over both workers
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(call, range(40)))
        assert set(codes) <= {"VALID", "RATE_LIMITED"}  # the route's default limit may refuse some
        time.sleep(1.5)  # another worker's counters reach the directory within a second
        after = scrape(srv)
        for code in ("VALID", "RATE_LIMITED"):
            assert delta(before, after, "keyplane_verifications_total", via="verify", dialect="bitget",
                         reason=code) == codes.count(code)
        # every call looked its key up at least once (a call re-run off the event loop, for its first argon2id
        # check, looks it up again), and each worker that served one loaded the key
        lookups = delta(before, after, "keyplane_key_cache_hits_total") + delta(
            before, after, "keyplane_key_cache_misses_total")
        assert lookups >= 40
        assert 1 <= delta(before, after, "keyplane_key_cache_misses_total") <= 8
        assert 1 <= delta(before, after, "keyplane_key_cache_entries") <= 2
        # the scrape itself counts in the histogram of the worker that answered it
        assert delta(before, after, "keyplane_request_duration_seconds_count", route="native") == 40
    finally:
        srv.stop()


# readiness ------------------------------------------------------------------------------------------------


def test_ready_times_out_on_a_redis_that_never_answers(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        store = Store(f"sqlite:///{tmp_path / 'ready.db'}")
        readiness = Readiness(store, f"redis://127.0.0.1:{port}/0", timeout=0.3)
        try:
            started = time.monotonic()
            ready, checks = asyncio.run(readiness.check())
            assert time.monotonic() - started < 0.9
            assert (ready, checks) == (False, {"store": "ok", "redis": "timed out after 0.3 s"})
            # the hanging check is not started again while it runs: the next probe waits on the same one
            ready, checks = asyncio.run(readiness.check())
            assert checks["redis"] in ("timed out after 0.3 s", "unavailable (TimeoutError)")
        finally:
            readiness.close()
            store.close()


@pytest.mark.postgres
@pytest.mark.redis
def test_ready_fails_while_postgres_or_redis_is_stopped_and_recovers(
    private_postgres: Any, private_redis: Any, tmp_path: Path
) -> None:
    env = {"KEYPLANE_MASTER_KEY": crypto.new_master_key_text(), "KEYPLANE_REDIS_URL": private_redis.url}
    srv = make_server(tmp_path / "ready", env)
    srv.database_url = private_postgres.new_database()
    srv.start()

    def ready() -> tuple[int, dict[str, Any], float]:
        started = time.monotonic()
        answer = httpx.get(srv.base_url + "/ready", timeout=10)
        return answer.status_code, answer.json(), time.monotonic() - started

    def until(status: int) -> tuple[int, dict[str, Any], float]:
        deadline = time.monotonic() + 10
        while True:
            got = ready()
            if got[0] == status or time.monotonic() > deadline:
                return got
            time.sleep(0.2)

    try:
        assert ready()[:2] == (200, {"status": "ready", "checks": {"store": "ok", "redis": "ok"}})
        private_postgres.stop()
        try:
            status, body, took = until(503)
            assert (status, body["status"], body["checks"]["redis"]) == (503, "unavailable", "ok")
            assert body["checks"]["store"].startswith("unavailable (")
            assert took < 2.5
            assert httpx.get(srv.base_url + "/health", timeout=10).status_code == 200  # liveness: still up
        finally:
            private_postgres.start()
        assert until(200)[:2] == (200, {"status": "ready", "checks": {"store": "ok", "redis": "ok"}})
        private_redis.stop()
        try:
            status, body, took = until(503)
            assert (status, body["checks"]["store"]) == (503, "ok")
            assert body["checks"]["redis"].startswith(("unavailable (", "timed out"))
            assert took < 2.5
            assert httpx.get(srv.base_url + "/health", timeout=10).status_code == 200
        finally:
            private_redis.start()
        assert until(200)[:2] == (200, {"status": "ready", "checks": {"store": "ok", "redis": "ok"}})
    finally:
        srv.stop()
