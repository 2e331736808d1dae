"""Issue 11 items 2-4 over HTTP: rotation with an overlap on two server processes at once, explicit expiry
(each dialect's invalid-key answer and the ccxt class it maps to), last use recorded in batches, and the
command line that drives them (at 80 columns and piped).

Both servers run on one SQLite store (the same working directory, two ports), so a change made through the
CLI reaches the second one only through the store's change feed, and a rotation's deadline is enforced by
each node's own clock."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import ccxt
import httpx
import pytest

import bitget_helpers as h
from conftest import Server, make_server
from test_cli_operator import _env, _run, _run_on_terminal

TOKEN = "lifecycle-verify-token-" + "7" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ASSETS = "/api/v2/spot/account/assets"
ORDER = "/api/v2/spot/trade/place-order"
INFO = "/api/v2/spot/account/info"
BALANCE = "/api/v4/trade-account/balance"
CLIENT_IP = "203.0.113.9"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    workdir = tmp_path_factory.mktemp("lifecycle")
    # last uses written every 0.2 s here (5 s by default), so a test sees them without waiting long
    env = {"KEYPLANE_VERIFY_TOKEN": TOKEN, "KEYPLANE_LAST_USED_FLUSH": "0.2s"}
    first = make_server(workdir, env)
    second = dataclasses.replace(make_server(workdir, env), log_path=workdir / "server2.log")
    first.start()
    second.start()
    yield first, second
    second.stop()
    first.stop()


def bitget_key(server: Server, uid: str, *extra: str) -> dict[str, Any]:
    """A Bitget main key bound to the test client's addresses (/v1/verify calls name CLIENT_IP)."""
    return server.bitget_main_key(uid, *extra, ips=("127.0.0.1", CLIENT_IP))


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def wait_until(at_ms: int) -> None:
    """Polls the clock (short naps) until ``at_ms`` has passed."""
    while time.time() * 1000 <= at_ms:
        time.sleep(0.05)


def eventually(check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


def bitget_call(key: dict[str, Any], secret: str, passphrase: str | None = None, *, method: str = "GET",
                path: str = ASSETS, body: str = "", timestamp: str | None = None) -> dict[str, Any]:
    ts = timestamp or h.now_ms()
    return {
        "method": method, "path": path, "body": body, "client_ip": CLIENT_IP,
        "headers": {
            "ACCESS-KEY": key["apiKey"], "ACCESS-SIGN": h.sign(secret, ts, method, path, "", body.encode()),
            "ACCESS-TIMESTAMP": ts, "ACCESS-PASSPHRASE": passphrase or key["passphrase"],
            "Content-Type": "application/json",
        },
    }


_NONCE = [int(time.time() * 1000)]


def whitebit_call(key: dict[str, Any], secret: str, *, nonce: int | None = None) -> dict[str, Any]:
    if nonce is None:
        _NONCE[0] = max(_NONCE[0] + 1, int(time.time() * 1000))
        nonce = _NONCE[0]
    body = json.dumps({"request": BALANCE, "nonce": str(nonce)}, separators=(",", ":"))
    payload = base64.b64encode(body.encode()).decode()
    signature = hmac.new(secret.encode(), payload.encode(), hashlib.sha512).hexdigest()
    return {
        "method": "POST", "path": BALANCE, "body": body, "client_ip": CLIENT_IP,
        "headers": {"X-TXC-APIKEY": key["apiKey"], "X-TXC-PAYLOAD": payload, "X-TXC-SIGNATURE": signature,
                    "Content-Type": "application/json"},
    }


def verify(server: Server, call: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(server.base_url + "/v1/verify", json=call, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def verdict(server: Server, call: dict[str, Any]) -> tuple[str, str | None]:
    out = verify(server, call)
    return out["code"], out["secret"]


# rotation ----------------------------------------------------------------------------------------------


def test_rotation_overlaps_then_the_old_secret_stops_on_both_servers(servers: tuple[Server, Server]) -> None:
    first, second = servers
    uid = first.main_account("rotation")
    bg = bitget_key(first, uid)
    wb = first.whitebit_main_key(uid)
    old_bg, old_wb = bg["secretKey"], wb["apiSecret"]
    for server in servers:  # both nodes hold the keys in their caches before the rotation
        assert verdict(server, bitget_call(bg, old_bg)) == ("VALID", "current")
        assert verdict(server, whitebit_call(wb, old_wb)) == ("VALID", "current")

    # a short grace, long enough for the checks below on a loaded machine (a CLI call takes 1-4 s there);
    # both rotations at once, so that their deadlines are close
    started = time.time() * 1000
    with ThreadPoolExecutor(2) as pool:
        rotating = [pool.submit(first.cli, "keys", "rotate", "--key", key["apiKey"], "--grace", "10s")
                    for key in (bg, wb)]
        rotated_bg, rotated_wb = (future.result() for future in rotating)
    new_bg, new_wb = rotated_bg["secretKey"], rotated_wb["apiSecret"]
    assert new_bg != old_bg and new_wb != old_wb and "passphrase" not in rotated_bg  # the passphrase is kept
    ends = ms(rotated_bg["previousSecretUntil"]), ms(rotated_wb["previousSecretUntil"])
    assert all(started + 10_000 <= end <= time.time() * 1000 + 10_000 for end in ends)

    # the change reaches the second server through the store's feed: its new secrets verify there too
    eventually(lambda: verdict(second, bitget_call(bg, new_bg)) == ("VALID", "current"))
    eventually(lambda: verdict(second, whitebit_call(wb, new_wb)) == ("VALID", "current"))
    for server in servers:
        assert verdict(server, bitget_call(bg, old_bg)) == ("VALID", "previous")
        assert verdict(server, bitget_call(bg, new_bg)) == ("VALID", "current")
        assert verdict(server, whitebit_call(wb, old_wb)) == ("VALID", "previous")
        assert verdict(server, whitebit_call(wb, new_wb)) == ("VALID", "current")
    # one nonce sequence for the key, whichever secret signs: an old-secret request cannot reuse a nonce
    assert verdict(second, whitebit_call(wb, old_wb, nonce=_NONCE[0])) == ("NONCE_TOO_LOW", "previous")

    # a management change signed with the old secret says so in the audit
    raw_old = h.Raw(second, bg["apiKey"], old_bg, bg["passphrase"])
    try:
        name = h.new_name()
        h.assert_ok(raw_old.post("create-virtual-subaccount", {"subAccountList": [name]}))
    finally:
        raw_old.close()
    assert time.time() * 1000 < min(ends), "the checks in the grace period ran past its end: inconclusive"

    wait_until(max(ends))
    for server in servers:  # no change is published at the deadline: each node's own clock ends it
        out = verify(server, bitget_call(bg, old_bg))
        assert out["code"] == "BAD_SIGNATURE" and json.loads(out["error"]["body"])["code"] == "40009"
        out = verify(server, whitebit_call(wb, old_wb))
        assert out["code"] == "BAD_SIGNATURE" and out["error"]["status"] == 401
        assert verdict(server, bitget_call(bg, new_bg)) == ("VALID", "current")
        assert verdict(server, whitebit_call(wb, new_wb)) == ("VALID", "current")

    events = first.cli("audit", "--account", uid)
    created = next(e for e in events if e["action"] == "subaccount.create")
    assert created["detail"]["signedWith"] == "previous", created
    rotations = [e for e in events if e["action"] == "apikey.rotate"]
    assert {e["target"] for e in rotations} == {bg["apiKey"], wb["apiKey"]}
    assert all(e["detail"]["graceSeconds"] == 10 for e in rotations)
    assert new_bg not in json.dumps(events) and old_bg not in json.dumps(events)


def test_a_replay_is_refused_across_the_rotation(servers: tuple[Server, Server]) -> None:
    first, second = servers
    uid = first.main_account("replayrot")
    bg = bitget_key(first, uid)
    old = bg["secretKey"]
    order = json.dumps({"symbol": "BTCUSDT", "side": "buy", "orderType": "market", "size": "1"})
    before = bitget_call(bg, old, method="POST", path=ORDER, body=order)
    assert verdict(first, before) == ("VALID", "current")
    new = first.cli("keys", "rotate", "--key", bg["apiKey"], "--grace", "1h")["secretKey"]
    eventually(lambda: verdict(second, bitget_call(bg, new)) == ("VALID", "current"))
    # signed before the rotation, replayed after it on the other node: the same record, refused
    assert verdict(second, before)[0] == "REQUEST_REPLAYED"
    during = bitget_call(bg, old, method="POST", path=ORDER, body=order)
    assert verdict(second, during) == ("VALID", "previous")
    assert verdict(first, during)[0] == "REQUEST_REPLAYED"


def test_whitebit_reset_ends_a_grace_period_at_once(servers: tuple[Server, Server]) -> None:
    first, _second = servers
    from clients.whitebit_http import WhitebitClient

    uid = first.main_account("resetgrace")
    main = first.whitebit_main_key(uid)
    client = WhitebitClient(first.base_url, main["apiKey"], main["apiSecret"])
    sub = client.call("/api/v4/sub-account/create", {"alias": "resetgr1", "shareKyc": True,
                                                      "permissions": {"spotEnabled": True, "collateralEnabled": True}},
                      201)
    key = client.call("/api/v4/sub-account/api-key/create", {"subAccountId": sub["id"], "type": 1, "title": "t"}, 201)
    first_secret = key["apiSecret"]
    second_secret = first.cli("keys", "rotate", "--key", key["apiKey"], "--grace", "1h")["apiSecret"]
    assert verdict(first, whitebit_call(key, first_secret)) == ("VALID", "previous")
    client.call("/api/v4/sub-account/api-key/reset", {"apiKeyId": key["id"]})  # WhiteBIT's own: no overlap
    for secret in (first_secret, second_secret):
        assert verdict(first, whitebit_call(key, secret))[0] == "BAD_SIGNATURE"
    shown = first.cli("keys", "show", "--key", key["apiKey"])
    assert shown["previousSecretUntil"] is None


def test_rotation_refusals(servers: tuple[Server, Server], tmp_path: Any) -> None:
    first, _second = servers
    uid = first.main_account("rotaterefuse")
    bg = bitget_key(first, uid)
    env = _env(first.env)
    db = ("--database", first.database_url)

    def refused(*args: str) -> str:
        out = _run(first.workdir, *args, *db, env=env)
        assert out.returncode == 2 and out.stdout == "", (out.returncode, out.stdout, out.stderr)
        return out.stderr.strip()

    for grace in ("-1s", "8d", "604801", "abc", "nan", "1e9", ""):
        line = refused("keys", "rotate", "--key", bg["apiKey"], "--grace", grace)
        assert line.startswith("error:") and "\n" not in line, line
    assert "from 0 to 7 days" in refused("keys", "rotate", "--key", bg["apiKey"], "--grace", "8d")
    assert refused("keys", "rotate", "--key", "bg_" + "0" * 32, "--grace", "1h") == "error: API key not found"
    revoked = bitget_key(first, uid)
    first.cli("keys", "revoke", "--key", revoked["apiKey"])
    assert refused("keys", "rotate", "--key", revoked["apiKey"], "--grace", "0") == "error: API key not found"
    # a passphrase that breaks Bitget's rule, or one for a WhiteBIT key
    assert "passphrase" in refused("keys", "rotate", "--key", bg["apiKey"], "--grace", "1h", "--passphrase", "short")
    wb = first.whitebit_main_key(uid)
    assert "passphrase" in refused("keys", "rotate", "--key", wb["apiKey"], "--grace", "1h",
                                   "--passphrase", "abcd1234efgh")
    # a disabled key (say, because its secret leaked): only a grace of 0, so the leaked secret cannot come back
    first.cli("keys", "disable", "--key", bg["apiKey"])
    assert "grace period of 0" in refused("keys", "rotate", "--key", bg["apiKey"], "--grace", "1s")
    rotated = first.cli("keys", "rotate", "--key", bg["apiKey"], "--grace", "0")
    assert rotated["previousSecretUntil"] is None
    first.cli("keys", "enable", "--key", bg["apiKey"])
    assert verdict(first, bitget_call(bg, bg["secretKey"]))[0] == "BAD_SIGNATURE"
    assert eventually(lambda: verdict(first, bitget_call(bg, rotated["secretKey"]))[0] == "VALID")
    # an RSA key: keyplane holds no secret of it
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "public.pem"
    pem.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    rsa_key = bitget_key(first, uid, "--rsa-public-key", str(pem))
    assert "RSA" in refused("keys", "rotate", "--key", rsa_key["apiKey"], "--grace", "1h")
    # nothing above changed the audit but the one rotation of grace 0
    rotations = [e for e in first.cli("audit", "--account", uid) if e["action"] == "apikey.rotate"]
    assert [e["detail"]["graceSeconds"] for e in rotations] == [0]


def test_rotate_with_a_new_passphrase_keeps_the_old_pair_for_the_old_secret(servers: tuple[Server, Server]) -> None:
    first, second = servers
    uid = first.main_account("rotatepass")
    bg = bitget_key(first, uid)
    rotated = first.cli("keys", "rotate", "--key", bg["apiKey"], "--grace", "1h", "--passphrase", "newpass123A")
    assert rotated["passphrase"] == "newpass123A"
    eventually(lambda: verdict(second, bitget_call(bg, rotated["secretKey"], "newpass123A"))[0] == "VALID")
    for server in servers:
        assert verdict(server, bitget_call(bg, bg["secretKey"])) == ("VALID", "previous")
        assert verdict(server, bitget_call(bg, rotated["secretKey"], "newpass123A")) == ("VALID", "current")
        # each secret with its own passphrase only
        assert verdict(server, bitget_call(bg, bg["secretKey"], "newpass123A"))[0] == "BAD_PASSPHRASE"
        assert verdict(server, bitget_call(bg, rotated["secretKey"]))[0] == "BAD_PASSPHRASE"


# expiry ------------------------------------------------------------------------------------------------


def raises_exactly(error: type[Exception], call: Any, *args: Any) -> str:
    with pytest.raises(ccxt.BaseError) as caught:
        call(*args)
    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    return str(caught.value)


def test_an_expired_key_gets_each_dialects_invalid_key_answer(servers: tuple[Server, Server]) -> None:
    first, second = servers
    uid = first.main_account("expiry")
    # long enough on a loaded machine (a CLI call takes ~1 s) for the two checks before it
    bg = bitget_key(first, uid, "--expires-in", "5s")
    assert verdict(second, bitget_call(bg, bg["secretKey"]))[0] == "VALID"
    wb = first.whitebit_main_key(uid, "--expires-in", "5s")
    assert verdict(second, whitebit_call(wb, wb["apiSecret"]))[0] == "VALID"
    later = bitget_key(first, uid, "--expires-in", "3d")
    wait_until(max(ms(bg["expiresAt"]), ms(wb["expiresAt"])))

    for server in servers:
        out = verify(server, bitget_call(bg, bg["secretKey"]))
        assert out["code"] == "KEY_EXPIRED"
        assert json.loads(out["error"]["body"])["code"] == "40037" and out["error"]["status"] == 400
        out = verify(server, whitebit_call(wb, wb["apiSecret"]))
        assert out["code"] == "KEY_EXPIRED" and out["error"]["status"] == 401
        assert json.loads(out["error"]["body"]) == {"code": 10, "message": "Unauthorized request.", "errors": {}}
    # the dialects' own routes, and the class ccxt raises for them
    raw = h.Raw(second, bg["apiKey"], bg["secretKey"], bg["passphrase"])
    try:
        h.assert_error(raw.request("GET", INFO), "40037", "Apikey does not exist")
    finally:
        raw.close()
    bitget = h.ccxt_client(second, bg["apiKey"], bg["secretKey"], bg["passphrase"])
    raises_exactly(ccxt.AuthenticationError, bitget.privateSpotGetV2SpotAccountInfo)
    whitebit = ccxt.whitebit({"apiKey": wb["apiKey"], "secret": wb["apiSecret"], "enableRateLimit": False})
    whitebit.urls["api"]["v4"] = {"public": second.base_url + "/api/v4/public", "private": second.base_url + "/api/v4"}
    raises_exactly(ccxt.AuthenticationError, whitebit.v4PrivatePostSubAccountList, {})

    # every list shows it; `keys expiring` finds what is due, with --include-expired what is past
    listed = {k["apiKey"]: k for k in first.cli("keys", "list", "--account", uid)}
    assert listed[bg["apiKey"]]["expired"] is True and listed[bg["apiKey"]]["expiresAt"] == bg["expiresAt"]
    assert listed[later["apiKey"]]["expired"] is False
    assert first.cli("keys", "show", "--key", wb["apiKey"])["expired"] is True
    due = [k["apiKey"] for k in first.cli("keys", "expiring", "--within", "7d")]
    assert later["apiKey"] in due and bg["apiKey"] not in due
    assert later["apiKey"] not in [k["apiKey"] for k in first.cli("keys", "expiring", "--within", "2d")]
    past = [k["apiKey"] for k in first.cli("keys", "expiring", "--within", "1s", "--include-expired")]
    assert bg["apiKey"] in past and wb["apiKey"] in past and later["apiKey"] not in past

    # /metrics counts them (read from the store at most once a minute: this is the module's first scrape)
    text = httpx.get(second.base_url + "/metrics", headers=AUTH, timeout=10).text
    counts = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith(("keyplane_keys_expiring ", "keyplane_keys_expired "))}
    assert counts["keyplane_keys_expired"] >= 2 and counts["keyplane_keys_expiring"] >= 1, counts

    # a new expiry brings the key back at once, on both servers; --never removes it
    first.cli("keys", "expire", "--key", bg["apiKey"], "--expires-in", "1h")
    for server in servers:
        eventually(lambda server=server: verdict(server, bitget_call(bg, bg["secretKey"]))[0] == "VALID")
    assert first.cli("keys", "expire", "--key", bg["apiKey"], "--never")["expiresAt"] is None


def test_expiry_refusals(servers: tuple[Server, Server]) -> None:
    first, _second = servers
    uid = first.main_account("expiryrefuse")
    env = _env(first.env)
    db = ("--database", first.database_url)
    create = ("keys", "create", "--account", uid, "--dialect", "bitget", "--ip", "127.0.0.1")
    bad = [
        ("--expires-at", "2020-01-01T00:00:00Z"),  # in the past
        ("--expires-in", "0s"),
        ("--expires-in", "-5d"),
        ("--expires-in", "11y"),
        ("--expires-in", "99999999w"),
        ("--expires-at", "tomorrow"),
        ("--expires-at", "9999-12-31T00:00:00"),  # more than ten years ahead
    ]
    for option, value in bad:
        out = _run(first.workdir, *create, option, value, *db, env=env)
        assert out.returncode == 2 and out.stdout == "" and out.stderr.startswith("error:"), (value, out.stderr)
    both = _run(first.workdir, *create, "--expires-in", "1d", "--expires-at", "2030-01-01", *db, env=env)
    assert both.returncode == 2 and "not both" in both.stderr
    assert first.cli("keys", "list", "--account", uid) == []  # nothing was made
    key = bitget_key(first, uid, "--expires-at", "2030-01-01T00:00:00+02:00")
    assert key["expiresAt"] == "2029-12-31T22:00:00.000+00:00"
    out = _run(first.workdir, "keys", "expire", "--key", key["apiKey"], *db, env=env)
    assert out.returncode == 2 and "--never" in out.stderr
    out = _run(first.workdir, "keys", "expire", "--key", key["apiKey"], "--expires-at", "2001-01-01", *db, env=env)
    assert out.returncode == 2 and "future" in out.stderr
    assert first.cli("keys", "show", "--key", key["apiKey"])["expiresAt"] == key["expiresAt"]


# last use ----------------------------------------------------------------------------------------------


def test_last_use_is_recorded_in_batches_and_shown(servers: tuple[Server, Server]) -> None:
    first, second = servers
    from clients.whitebit_http import WhitebitClient

    uid = first.main_account("lastused")
    main = first.whitebit_main_key(uid)
    client = WhitebitClient(first.base_url, main["apiKey"], main["apiSecret"])
    sub = client.call("/api/v4/sub-account/create", {"alias": "lastuse1", "shareKyc": True,
                                                      "permissions": {"spotEnabled": True, "collateralEnabled": True}},
                      201)
    key = client.call("/api/v4/sub-account/api-key/create", {"subAccountId": sub["id"], "type": 1, "title": "t"}, 201)
    assert first.cli("keys", "show", "--key", key["apiKey"])["lastUsedAt"] is None
    before = time.time()
    for _ in range(20):  # many uses on two nodes: the last one is what is kept
        assert verdict(second, whitebit_call(key, key["apiSecret"]))[0] == "VALID"
    shown = eventually(lambda: (s := first.cli("keys", "show", "--key", key["apiKey"]))["lastUsedAt"] and s)
    assert shown["lastUsedIp"] == CLIENT_IP  # the client's address, not the gateway's
    used_ms = ms(shown["lastUsedAt"])
    assert before * 1000 - 1 <= used_ms <= time.time() * 1000
    # WhiteBIT's own list: lastActivity is the last use, in Unix seconds
    page = client.call("/api/v4/sub-account/api-key/list", {"subAccountId": sub["id"]})
    item = next(k for k in page["data"] if k["apiKey"] == key["apiKey"])
    assert item["lastActivity"] == used_ms // 1000
    # a refused request is no use
    assert verdict(first, whitebit_call(key, "0" * 32))[0] == "BAD_SIGNATURE"
    time.sleep(0.5)  # two flush intervals
    assert first.cli("keys", "show", "--key", key["apiKey"])["lastUsedAt"] == shown["lastUsedAt"]


# the command line's own output -------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [80])
def test_rotate_and_lists_at_80_columns_and_piped(servers: tuple[Server, Server], columns: int) -> None:
    first, _second = servers
    uid = first.main_account("cliwidth")
    bg = bitget_key(first, uid, "--expires-in", "2d", "--label", "a long label for the table")
    env = _env(first.env)
    db = ("--database", first.database_url)
    rotate = ("keys", "rotate", "--key", bg["apiKey"], "--grace", "1h", *db)
    for output in (
        _run_on_terminal(first.workdir, *rotate, columns=columns, env=env),
        _run(first.workdir, *rotate, env=env | {"COLUMNS": str(columns)}).stdout,
    ):
        fields = dict(line.split(":", 1) for line in output.splitlines()[1:] if ":" in line)
        secret = fields["secretKey"].strip()
        assert len(secret) == 64 and "secretKey:" in output and secret in output, output
        assert "previousSecretUntil" in output
    for args in (("keys", "list", "--account", uid), ("keys", "expiring", "--within", "3d"),
                 ("keys", "show", "--key", bg["apiKey"])):
        for output in (
            _run_on_terminal(first.workdir, *args, *db, columns=columns, env=env),
            _run(first.workdir, *args, *db, env=env | {"COLUMNS": str(columns)}).stdout,
        ):
            assert bg["apiKey"] in output and bg["expiresAt"] in output and "…" not in output, output
