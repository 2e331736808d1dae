"""One signature, one request (issue 8 item 3; issue 9 item 1), over HTTP against real ``keyplane serve``.

- A signed Bitget request that changes state is accepted once within its timestamp window, on keyplane's
  own routes and on ``POST /v1/verify``, also after a restart; any form of the same signed request (the
  body ``{}`` signed as ``''``) is the same request; GETs repeat; an operator can turn it off per rule.
- WhiteBIT: a replayed request (both nonce modes) creates nothing.
- A Bitget signature over ``a=1&b=2`` never verifies another query (``%26``, ``%3D``, ``+``, ``%25``),
  while ccxt's own encoded form (values holding ``+``, ``/``, spaces, non-ASCII) still verifies.
- Two nodes on one PostgreSQL schema: the same request sent to both at once is accepted exactly once in
  every trial (both WhiteBIT nonce modes, a key's first request, a Bitget POST), with no 5xx, also after
  one node restarts; a key deleted meanwhile is an unknown key, never a 500.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import httpx
import pytest

import bitget_helpers as h
from clients.whitebit_http import Operator, WhitebitClient, compact
from conftest import Server, make_server
from keyplane.config import Settings
from keyplane.domain.model import Scheme
from keyplane.runtime import Runtime, build_runtime

TOKEN = "replay-verify-token-" + "7" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PLACE_ORDER = "/api/v2/spot/trade/place-order"
CANCEL_ORDER = "/api/v2/spot/trade/cancel-order"
ASSETS = "/api/v2/spot/account/assets"
REPLAYED = {"code": "40004", "msg": "Request timestamp expired"}
# the operator turns replay protection off for one rule
ENDPOINTS = {
    "rules": [
        {"path": CANCEL_ORDER, "method": "POST", "permission": "spot_trade", "rate_limit": None,
         "replay_protect": False},
        {"path": PLACE_ORDER, "method": "POST", "permission": "spot_trade", "rate_limit": None},
    ]
}


def _env() -> dict[str, str]:
    return {"KEYPLANE_VERIFY_TOKEN": TOKEN, "KEYPLANE_ENDPOINTS": json.dumps(ENDPOINTS)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("replays"), _env())
    srv.start()
    yield srv
    srv.stop()


def bitget_call(key: h.MainKey, method: str, path: str, *, query: str = "", body: str = "",
                timestamp: str | None = None, signed_query: str | None = None,
                signed_body: bytes | None = None) -> dict[str, Any]:
    """A ``/v1/verify`` call for a Bitget request signed by hand."""
    ts = timestamp or h.now_ms()
    signature = h.sign(key.secret, ts, method, path, query if signed_query is None else signed_query,
                       body.encode() if signed_body is None else signed_body)
    headers = {"ACCESS-KEY": key.api_key, "ACCESS-SIGN": signature, "ACCESS-TIMESTAMP": ts,
               "ACCESS-PASSPHRASE": key.passphrase}
    return {"method": method, "uri": path + ("?" + query if query else ""), "headers": headers, "body": body,
            "client_ip": "127.0.0.1"}


def verify(base_url: str, call: dict[str, Any], http: httpx.Client | None = None) -> dict[str, Any]:
    response = (http or httpx).post(base_url + "/v1/verify", json=call, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def whitebit_call(client: WhitebitClient, path: str, *, window: bool) -> dict[str, Any]:
    body = compact(client.body(path, {}, window=window))
    payload = base64.b64encode(body).decode()
    headers = {"X-TXC-APIKEY": client.api_key, "X-TXC-PAYLOAD": payload,
               "X-TXC-SIGNATURE": hmac.new(client.secret.encode(), payload.encode(), hashlib.sha512).hexdigest()}
    return {"method": "POST", "uri": path, "headers": headers, "body": body.decode(), "client_ip": "127.0.0.1"}


# Bitget: keyplane's own routes ------------------------------------------------------------------------------


def test_a_replayed_create_apikey_creates_nothing_and_leaks_no_secret(server: Server) -> None:
    key = h.main_key(server)
    raw = h.raw_main(server, key)
    try:
        name = h.new_name()
        made = h.assert_ok(raw.post("create-virtual-subaccount", {"subAccountList": [name]}))
        sub_uid = made["successList"][0]["subaAccountUid"]
        body = {"subAccountUid": sub_uid, "passphrase": h.new_passphrase(), "label": "first", "permList": ["read"]}
        ts = h.now_ms()
        first = h.assert_ok(raw.post("create-virtual-subaccount-apikey", body, timestamp=ts))
        secret = first["secretKey"]
        assert secret
        h.paced()  # a second later, past the route's rate limit: only the replay record can refuse it
        again = raw.post("create-virtual-subaccount-apikey", body, timestamp=ts)
        h.assert_error(again, REPLAYED["code"], REPLAYED["msg"])
        assert secret not in again.text and first["subAccountApiKey"] not in again.text
        assert [k["subAccountApiKey"] for k in h.keys_of(raw, sub_uid)] == [first["subAccountApiKey"]]
        # the same request once more after a restart: the record is in the store, not in the process
        server.restart()
        raw.close()
        raw = h.raw_main(server, key)
        h.assert_error(raw.post("create-virtual-subaccount-apikey", body, timestamp=ts), *REPLAYED.values())
        assert len(h.keys_of(raw, sub_uid)) == 1
        # a new timestamp is a new request
        h.paced()
        body["label"] = "second"
        assert h.assert_ok(raw.post("create-virtual-subaccount-apikey", body))["secretKey"]
        assert len(h.keys_of(raw, sub_uid)) == 2
    finally:
        raw.close()


def test_every_form_of_one_signed_request_is_the_same_request(server: Server) -> None:
    key = h.main_key(server)
    raw = h.raw_main(server, key)
    try:
        ts = h.now_ms()
        # Bitget's SDK signs '' for a body of '{}': it gets past authentication to the route's own check
        first = raw.post("modify-virtual-subaccount", b"{}", signed_body=b"", timestamp=ts)
        h.assert_error(first, "40019", "Parameter subAccountUid cannot be empty")
        h.paced()
        # the bytes that were signed, sent as such: one signed request, already accepted
        h.assert_error(raw.post("modify-virtual-subaccount", b"", timestamp=ts), *REPLAYED.values())
        h.assert_error(raw.post("modify-virtual-subaccount", b"{}", signed_body=b"", timestamp=ts),
                       *REPLAYED.values())
    finally:
        raw.close()


def test_a_refused_request_spends_no_record(server: Server) -> None:
    key = h.main_key(server)
    raw = h.raw_main(server, key)
    try:
        ts = h.now_ms()
        body = {"subAccountList": [h.new_name()]}
        wrong = h.Raw(server, key.api_key, key.secret, "wrong-passphrase1")
        h.assert_error(wrong.post("create-virtual-subaccount", body, timestamp=ts), "40012",
                       "apikey/password is incorrect")
        wrong.close()
        made = h.assert_ok(raw.post("create-virtual-subaccount", body, timestamp=ts))
        assert len(made["successList"]) == 1
    finally:
        raw.close()


# Bitget: /v1/verify -------------------------------------------------------------------------------------------


def test_verify_accepts_a_post_once_and_gets_any_number_of_times(server: Server) -> None:
    key = h.main_key(server)
    order = bitget_call(key, "POST", PLACE_ORDER, body='{"symbol":"BTCUSDT","side":"buy"}')
    assert verify(server.base_url, order)["code"] == "VALID"
    again = verify(server.base_url, order)
    assert (again["valid"], again["code"]) == (False, "REQUEST_REPLAYED")
    assert again["identity"]["api_key"] == key.api_key
    assert json.loads(again["error"]["body"])["code"] == "40004" and again["error"]["status"] == 400
    # a GET only reads: the same signed GET verifies again
    assets = bitget_call(key, "GET", ASSETS, query="coin=USDT")
    assert [verify(server.base_url, assets)["code"] for _ in range(3)] == ["VALID"] * 3
    # the operator turned the record off for cancel-order
    cancel = bitget_call(key, "POST", CANCEL_ORDER, body='{"symbol":"BTCUSDT","orderId":"1"}')
    assert [verify(server.base_url, cancel)["code"] for _ in range(2)] == ["VALID"] * 2


def test_the_same_request_sent_in_parallel_is_accepted_once(server: Server) -> None:
    key = h.main_key(server)
    for _ in range(3):
        order = bitget_call(key, "POST", PLACE_ORDER, body='{"symbol":"BTCUSDT","size":"' + secrets.token_hex(4) + '"}')
        codes = at_once([(server.base_url, order)] * 8)
        assert sorted(codes) == ["REQUEST_REPLAYED"] * 7 + ["VALID"], codes


# Bitget: one signature, one query ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "signed"),
    [
        ("a=1%26b%3D2", "a=1&b=2"),  # one parameter a = '1&b=2' for the signature of two
        ("a%3D1=2", "a=1=2"),  # '=' smuggled into a name
        ("a=1%26", "a=1&"),  # '%26' anywhere
        ("coin=USDT%26limit%3D5", "coin=USDT&limit=5"),
        ("tag=a+b", "tag=a b"),  # a raw '+': a space to some, a '+' to others
        ("tag=%2541", "tag=%41"),  # a double escape: '%41' to one reading, 'A' to the other
        ("tag=%FF", "tag=\ufffd"),  # not UTF-8: %FF and %FE would share one signature
    ],
)
def test_a_signature_never_verifies_a_query_that_names_other_parameters(
    server: Server, sent: str, signed: str
) -> None:
    key = h.main_key(server)
    out = verify(server.base_url, bitget_call(key, "GET", ASSETS, query=sent, signed_query=signed))
    assert out["code"] == "BAD_SIGNATURE"
    raw = h.raw_main(server, key)
    try:
        response = raw.get("virtual-subaccount-list", sent, signed_query=signed)
        h.assert_error(response, "40009", "sign signature error")
    finally:
        raw.close()


def test_ccxt_encoded_queries_still_verify(server: Server) -> None:
    key = h.main_key(server)
    exchange = h.ccxt_main(server, key)
    values = {"limit": "5", "tag": "a+b/c d,é日$"}
    page = exchange.privateUserGetV2UserVirtualSubaccountList(values)
    assert page["code"] == "00000"
    signed = exchange.sign("v2/spot/account/assets", ["private", "spot"], "GET", {"coin": "US+D/T é"})
    url = httpx.URL(signed["url"])
    assert "%2B" in url.query.decode() and "%20" in url.query.decode()  # sent encoded, signed decoded
    call = {"method": "GET", "uri": url.raw_path.decode(), "headers": signed["headers"], "client_ip": "127.0.0.1"}
    assert verify(server.base_url, call)["code"] == "VALID"
    # ccxt's POST: a signed body, accepted once
    order = exchange.sign("v2/spot/trade/place-order", ["private", "spot"], "POST", {"symbol": "BTCUSDT"})
    call = {"method": "POST", "uri": httpx.URL(order["url"]).raw_path.decode(), "headers": order["headers"],
            "body": order["body"], "client_ip": "127.0.0.1"}
    assert [verify(server.base_url, call)["code"] for _ in range(2)] == ["VALID", "REQUEST_REPLAYED"]
    with pytest.raises(ccxt.AuthenticationError):
        exchange.privateUserGetV2UserVirtualSubaccountList({"limit": "5", "tag": "c&d"})


# WhiteBIT ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [False, True])
def test_a_replayed_whitebit_request_creates_nothing(server: Server, window: bool) -> None:
    operator = Operator(server.database_url)
    try:
        client = operator.client(server.base_url, "replay-wb")
        create = "/api/v4/sub-account/create"
        alias = "rp" + secrets.token_hex(4)
        fields = {"alias": alias, "shareKyc": True, "permissions": {"spotEnabled": True, "collateralEnabled": False}}
        body = compact(client.body(create, fields, window=window))
        assert client.post_raw(create, body).status_code == 201
        again = client.post_raw(create, body)
        assert (again.status_code, again.json()) == (429, {"code": 0, "message": "Too many requests.", "errors": {}})
        listed = client.call("/api/v4/sub-account/list")["data"]
        assert [a["alias"] for a in listed] == [alias]
        call = whitebit_call(client, "/api/v4/trade-account/balance", window=window)
        codes = [verify(server.base_url, call)["code"] for _ in range(2)]
        assert codes == ["VALID", "NONCE_REPLAYED" if window else "NONCE_TOO_LOW"]
    finally:
        operator.close()


# two nodes on one PostgreSQL schema --------------------------------------------------------------------------


def at_once(targets: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Sends every call at the same moment, each on its own connection; the answers' codes (no 5xx)."""
    barrier = threading.Barrier(len(targets))
    codes: list[str] = [""] * len(targets)
    clients = [httpx.Client(timeout=30) for _ in targets]

    def send(index: int) -> None:
        base_url, call = targets[index]
        barrier.wait()
        codes[index] = verify(base_url, call, clients[index])["code"]

    try:
        for client, (base_url, _) in zip(clients, targets, strict=True):  # connect first: only the calls race
            client.get(base_url + "/health")
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(targets))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for client in clients:
            client.close()
    assert all(codes), codes  # every thread answered (an assertion in a thread leaves its code empty)
    return codes


def _two_nodes(url: str, tmp_path: Path) -> Iterator[tuple[Server, Server, Runtime]]:
    """Two ``keyplane serve`` processes on the store at ``url``, and an operator's runtime on it."""
    master = secrets.token_hex(32)
    operator = build_runtime(Settings(database_url=url, master_key=master))  # migrates the schema once
    nodes = []
    for name in ("node-a", "node-b"):
        node = make_server(tmp_path / name, {**_env(), "KEYPLANE_MASTER_KEY": master})
        node.database_url = url
        node.start()
        nodes.append(node)
    try:
        yield nodes[0], nodes[1], operator
    finally:
        for node in nodes:
            node.stop()
        operator.close()


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[tuple[Server, Server, Runtime]]:
    yield from _two_nodes(pg_url, tmp_path)


TRIALS = 6  # each sends 4 at once; the unconditional read-then-update failed 192 of 200 (issue 9)


def _whitebit_client(operator: Runtime, node: Server) -> WhitebitClient:
    main = operator.service.accounts.create_main_account("wb-" + secrets.token_hex(3))
    issued = operator.service.keys.issue_main_key(main.uid, Scheme.WHITEBIT)
    assert issued.secret is not None
    return WhitebitClient(node.base_url, issued.key.api_key, issued.secret)


def _bitget_key(operator: Runtime) -> h.MainKey:
    main = operator.service.accounts.create_main_account("bg-" + secrets.token_hex(3))
    issued = operator.service.keys.issue_main_key(main.uid, Scheme.BITGET, permissions=["read", "spot_trade"],
                                             ip_list=("127.0.0.1",))
    assert issued.secret is not None and issued.passphrase is not None
    return h.MainKey(uid=str(main.uid), api_key=issued.key.api_key, secret=issued.secret,
                     passphrase=issued.passphrase)


def _exactly_once(a: Server, b: Server, call: dict[str, Any], refused: str) -> None:
    codes = at_once([(a.base_url, call), (b.base_url, call), (a.base_url, call), (b.base_url, call)])
    assert sorted(codes) == sorted(["VALID"] + [refused] * 3), codes


def _trials(a: Server, b: Server, operator: Runtime) -> list[dict[str, Any]]:
    """Each kind of once-only request, sent to both nodes at once; what was accepted, to be replayed later."""
    accepted = []
    for window in (False, True):
        refused = "NONCE_REPLAYED" if window else "NONCE_TOO_LOW"
        steady = _whitebit_client(operator, a)
        for trial in range(TRIALS):
            # a new key's very first request, then a key already in use
            fresh = _whitebit_client(operator, a)
            first = whitebit_call(fresh, "/api/v4/trade-account/balance", window=window)
            _exactly_once(a, b, first, refused)
            call = whitebit_call(steady, "/api/v4/trade-account/balance", window=window)
            _exactly_once(a, b, call, refused)
            if trial == TRIALS - 1:
                accepted += [first, call]
    bitget = _bitget_key(operator)
    for trial in range(TRIALS):
        fresh_key = _bitget_key(operator) if trial % 4 == 0 else bitget
        order = bitget_call(fresh_key, "POST", PLACE_ORDER, body=f'{{"symbol":"BTCUSDT","n":{trial}}}')
        _exactly_once(a, b, order, "REQUEST_REPLAYED")
        if trial == TRIALS - 1:
            accepted.append(order)
    return accepted


@pytest.mark.postgres
def test_two_nodes_accept_each_request_exactly_once(cluster: tuple[Server, Server, Runtime]) -> None:
    a, b, operator = cluster
    accepted = _trials(a, b, operator)
    b.restart()
    # what was accepted before the restart stays refused on both nodes (a windowed nonce may be past its 5 s)
    windowed = {"NONCE_REPLAYED", "NONCE_OUT_OF_WINDOW"}
    expected: list[str | set[str]] = ["NONCE_TOO_LOW", "NONCE_TOO_LOW", windowed, windowed, "REQUEST_REPLAYED"]
    for call, refused in zip(accepted, expected, strict=True):
        for node in (b, a):
            code = verify(node.base_url, call)["code"]
            assert code in refused if isinstance(refused, set) else code == refused, (code, refused)
    _trials(a, b, operator)
    for node in (a, b):
        assert "Traceback" not in node.log_path.read_text()


@pytest.mark.postgres
def test_a_key_deleted_meanwhile_is_an_unknown_key_not_a_server_error(pg_url: str) -> None:
    from keyplane.auth.nonces import NonceGuard
    from keyplane.auth.request import Reason
    from keyplane.store import Store

    store = Store(pg_url)
    store.migrate()
    guard = NonceGuard(store)
    try:
        assert guard.blocking is True
        now = int(time.time() * 1000)
        missing = "00000000-0000-0000-0000-000000000000"  # as a key deleted by another node looks here
        assert guard.accept(missing, now, False, now) is Reason.UNKNOWN_KEY
        assert guard.accept(missing, now, True, now) is Reason.UNKNOWN_KEY
        assert guard.accept_once(missing, 42, now + 60_000, now) is Reason.UNKNOWN_KEY
    finally:
        guard.close()
        store.close()


def _ledger_owners(node: Server) -> int:
    """``keyplane_replay_ledger_owner`` of the node's /metrics."""
    text = httpx.get(node.base_url + "/metrics", headers=AUTH, timeout=10).text
    (line,) = [line for line in text.splitlines() if line.startswith("keyplane_replay_ledger_owner ")]
    return int(float(line.split()[1]))


@pytest.fixture
def sqlite_pair(tmp_path: Path) -> Iterator[tuple[Server, Server, Runtime]]:
    """Two ``keyplane serve`` processes on one SQLite file (as ``serve --workers 2`` runs)."""
    yield from _two_nodes(f"sqlite:///{tmp_path / 'shared.db'}", tmp_path)


def test_two_server_processes_on_one_sqlite_file_accept_each_order_once(
    sqlite_pair: tuple[Server, Server, Runtime],
) -> None:
    """The replay ledger's two modes over HTTP: the first order makes one process the ledger's owner while
    the other joins (the owner hands over as they race); each order sent to both at once is accepted once;
    a restarted process refuses what either accepted; and the one left alone takes the ledger back."""
    a, b, operator = sqlite_pair
    key = _bitget_key(operator)
    accepted = []
    for trial in range(8):
        order = bitget_call(key, "POST", PLACE_ORDER, body=f'{{"symbol":"BTCUSDT","n":{trial}}}')
        _exactly_once(a, b, order, "REQUEST_REPLAYED")
        accepted.append(order)
    assert _ledger_owners(a) == _ledger_owners(b) == 0  # handed over: both append
    b.restart()
    for order in accepted:
        for node in (b, a):
            assert verify(node.base_url, order)["code"] == "REQUEST_REPLAYED"
    for trial in range(8, 12):
        order = bitget_call(key, "POST", PLACE_ORDER, body=f'{{"symbol":"BTCUSDT","n":{trial}}}')
        _exactly_once(a, b, order, "REQUEST_REPLAYED")
        accepted.append(order)
    a.stop()
    deadline = time.monotonic() + 10
    while _ledger_owners(b) != 1:  # b is alone now: it owns the ledger again after its next look (every second)
        assert time.monotonic() < deadline, "the process left alone did not take the replay ledger back"
        time.sleep(0.1)
    for order in accepted:
        assert verify(b.base_url, order)["code"] == "REQUEST_REPLAYED"
    last = bitget_call(key, "POST", PLACE_ORDER, body='{"symbol":"BTCUSDT","n":12}')
    assert [verify(b.base_url, last)["code"] for _ in range(3)] == ["VALID", "REQUEST_REPLAYED", "REQUEST_REPLAYED"]
    for node in (a, b):
        assert "Traceback" not in node.log_path.read_text()
