"""An attacker's review of issues 8 and 9 as landed: what fits no other module of tests/security/.

Each test is an attack sent over HTTP to a real ``keyplane serve`` (or in-process where the point is the
verifier's own reading), asserting the refusal and that nothing changed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from attack import (
    BITGET_BAD_TARGET,
    TOKEN,
    WHITEBIT_BAD_TARGET,
    Answer,
    bitget_answer,
    dialect_error,
    nonce_pair,
    now_ms,
    raw_http,
    store_state,
    verify_call,
    whitebit_signed,
)

from conftest import Server, make_server
from keyplane.domain.model import Scheme
from keyplane.endpoints import EndpointTable, Refusal

ASSETS = "/api/v2/spot/account/assets"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("attacker"), {"KEYPLANE_VERIFY_TOKEN": TOKEN})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, Any]:
    uid = server.main_account("attacker")
    return {
        "uid": uid,
        "bitget": server.bitget_main_key(uid, "--perm", "read", "--perm", "spot_trade"),
        "whitebit": server.whitebit_main_key(uid),
    }


def _signed_as(key: dict[str, Any], message: str) -> dict[str, str]:
    timestamp = str(now_ms())
    mac = hmac.new(key["secretKey"].encode(), (timestamp + message).encode(), hashlib.sha256)
    sign = base64.b64encode(mac.digest())
    return {
        "ACCESS-KEY": key["apiKey"],
        "ACCESS-SIGN": sign.decode(),
        "ACCESS-TIMESTAMP": timestamp,
        "ACCESS-PASSPHRASE": key["passphrase"],
    }


def raw_lines(server: Server, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> Answer:
    """Like ``attack.raw_http``, with header lines as a list: a name may come twice."""
    return raw_http(server.base_url, method.encode(), target.encode(), {}, body, extra_lines=headers)


# --- Bitget: where the query ends ------------------------------------------------------------------------

# (target sent, body sent) that concatenate to the signed "?coin=USDT&limit=100": an upstream reads a
# shorter query (a GET's body is ignored), so the one signature would stand for three requests
MOVED_TAILS = [
    (ASSETS + "?coin=USDT", "&limit=100"),
    (ASSETS + "?coin=US", "DT&limit=100"),
    (ASSETS, "?coin=USDT&limit=100"),
]
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(("target", "body"), MOVED_TAILS)
def test_a_bitget_query_never_moves_into_the_body(server: Server, keys: dict[str, Any], target: str, body: str) -> None:
    key = keys["bitget"]
    headers = _signed_as(key, "GET" + ASSETS + "?coin=USDT&limit=100")
    assert dialect_error(verify_call(server, "GET", target, headers, body)) == BITGET_BAD_TARGET
    # the request as signed still verifies
    assert verify_call(server, "GET", ASSETS + "?coin=USDT&limit=100", headers)["code"] == "VALID"


def test_bitget_bodies_that_are_not_json_or_sit_beside_a_query_are_refused_on_own_routes(
    server: Server, keys: dict[str, Any]
) -> None:
    key = keys["bitget"]
    before = store_state(server)
    path = "/api/v2/user/create-virtual-subaccount"
    body = '{"subAccountList":["abcdefgh"]}'
    # a query beside a JSON body: the signature is as valid for the query holding the body
    headers = _signed_as(key, "POST" + path + "?x=1" + body)
    answer = raw_http(server.base_url, b"POST", (path + "?x=1").encode(), {**headers, **JSON}, body.encode())
    assert bitget_answer(answer) == BITGET_BAD_TARGET
    # a body that opens no JSON value ("?..." reads as a query, "s..." as the path's tail)
    for target, sent in [(path, "?x=1" + body), (path[:-1], path[-1] + body)]:
        headers = _signed_as(key, "POST" + path + "?x=1" + body if sent.startswith("?") else "POST" + path + body)
        answer = raw_http(server.base_url, b"POST", target.encode(), {**headers, **JSON}, sent.encode())
        assert answer.status in (400, 404), answer.body
        assert answer.json()["code"] in ("40017", "40404"), answer.body
    # a GET with a body
    list_path = "/api/v2/user/virtual-subaccount-list"
    headers = _signed_as(key, "GET" + list_path + "?limit=10")
    answer = raw_http(server.base_url, b"GET", (list_path + "?limit=1").encode(), headers, b"0")
    assert bitget_answer(answer) == BITGET_BAD_TARGET
    assert store_state(server) == before
    # the clean forms still work
    answer = raw_http(server.base_url, b"GET", (list_path + "?limit=10").encode(), headers)
    assert answer.status == 200 and answer.json()["code"] == "00000", answer.body


# --- header smuggling -------------------------------------------------------------------------------------


def test_verify_headers_named_twice_never_verify(server: Server, keys: dict[str, Any]) -> None:
    key = keys["bitget"]
    good = _signed_as(key, "GET" + ASSETS)
    # the same name in two cases, the key the gateway never saw first
    mixed = {"access-key": "bg_someone_else", **{name.upper(): value for name, value in good.items()}}
    assert verify_call(server, "GET", ASSETS, mixed)["code"] == "UNKNOWN_KEY"
    # one value twice, or another after it (nginx hands a header sent twice over as a list)
    for second in ("other", good["ACCESS-KEY"]):
        listed: dict[str, Any] = {**good, "ACCESS-KEY": [good["ACCESS-KEY"], second]}
        assert verify_call(server, "GET", ASSETS, listed)["code"] == "UNKNOWN_KEY"
    signed_twice: dict[str, Any] = {**good, "ACCESS-SIGN": [good["ACCESS-SIGN"], good["ACCESS-SIGN"]]}
    assert verify_call(server, "GET", ASSETS, signed_twice)["code"] == "BAD_SIGNATURE"
    # a list of one is the header itself
    assert verify_call(server, "GET", ASSETS, {name: [value] for name, value in good.items()})["code"] == "VALID"


def test_own_routes_read_a_header_sent_twice_as_one_list(server: Server, keys: dict[str, Any]) -> None:
    key = keys["bitget"]
    info = "/api/v2/spot/account/info"
    good = _signed_as(key, "GET" + info)
    lines = [(name, value) for name, value in good.items()]
    assert raw_lines(server, "GET", info, lines).status == 200
    for name in ("ACCESS-KEY", "ACCESS-SIGN", "ACCESS-PASSPHRASE"):
        for twice in ([(name, "x")], [(name.lower(), good[name])]):
            answer = raw_lines(server, "GET", info, [*lines, *twice])
            assert answer.status == 400, (name, answer.body)
            assert answer.json()["code"] in ("40037", "40009", "40012"), (name, answer.body)


# --- cross-dialect through /v1/verify ---------------------------------------------------------------------


def test_an_explicit_scheme_or_both_dialects_headers_never_carry_a_key_across(
    server: Server, keys: dict[str, Any]
) -> None:
    bitget, whitebit = keys["bitget"], keys["whitebit"]
    withdraw_wb, withdraw_bg = "/api/v4/main-account/withdraw", "/api/v2/spot/wallet/withdrawal"
    bg_on_wb = _signed_as(bitget, "POST" + withdraw_wb + "{}")
    wb_headers, wb_body = whitebit_signed(whitebit, withdraw_bg)
    for scheme in (None, "bitget", "whitebit"):
        extra = {} if scheme is None else {"scheme": scheme}
        # a Bitget key on WhiteBIT's withdrawal, the scheme named or not
        assert verify_call(server, "POST", withdraw_wb, bg_on_wb, "{}", **extra)["valid"] is False
        # a WhiteBIT key on Bitget's withdrawal
        assert verify_call(server, "POST", withdraw_bg, wb_headers, wb_body, **extra)["valid"] is False
        # one request carrying both dialects' signing headers, each signed right for its own key
        both = {**bg_on_wb, **wb_headers}
        assert verify_call(server, "POST", withdraw_bg, both, wb_body, **extra)["valid"] is False
    # the WhiteBIT key signs the WhiteBIT path right, but the call names Bitget: its key is no Bitget key
    wb_own, wb_own_body = whitebit_signed(whitebit, "/api/v4/main-account/balance")
    out = verify_call(server, "POST", "/api/v4/main-account/balance", wb_own, wb_own_body, scheme="bitget")
    assert out["valid"] is False


# --- WhiteBIT nonces in other forms -----------------------------------------------------------------------


def test_a_whitebit_nonce_in_another_form_is_the_same_nonce(server: Server, keys: dict[str, Any]) -> None:
    key = keys["whitebit"]
    path = "/api/v4/main-account/balance"
    lower, higher = nonce_pair()

    def send(nonce: Any, **fields: Any) -> str:
        headers, body = whitebit_signed(key, path, fields, nonce=nonce)
        return str(verify_call(server, "POST", path, headers, body)["code"])

    # not a nonce: refused, and nothing spent (the lower fresh nonce still passes after)
    for odd in [float(higher), f"{higher}.0", f"+{higher}", f" {higher}", f"{higher} ", "\u0661\u0662",
                -1, str(2**63), 2**63, True, [higher], {"n": higher}]:
        assert send(odd) == "MISSING_NONCE", odd
    assert send(higher, nonceWindow="false") == "INVALID_NONCE_WINDOW"
    assert send(higher, nonceWindow=0) == "INVALID_NONCE_WINDOW"
    assert send(lower) == "VALID"
    # the same value again as a string, with leading zeros, or as an int once more: one nonce
    for again in [lower, str(lower), "0" + str(lower), "000" + str(lower)]:
        assert send(again) == "NONCE_TOO_LOW", again
    assert send(str(higher)) == "VALID"


# --- secrets stay out of the server's log -----------------------------------------------------------------


@pytest.fixture(scope="module")
def debug_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("attacker-debug"),
                      {"KEYPLANE_VERIFY_TOKEN": TOKEN, "KEYPLANE_LOG_LEVEL": "DEBUG"})
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_failing_requests_leave_no_secret_in_the_server_log(
    request: pytest.FixtureRequest, server: Server, keys: dict[str, Any], level: str
) -> None:
    if level == "DEBUG":
        server = request.getfixturevalue("debug_server")
        uid = server.main_account("debuglog")
        keys = {"bitget": server.bitget_main_key(uid, "--perm", "read", "--perm", "spot_trade"),
                "whitebit": server.whitebit_main_key(uid)}
    bitget, whitebit = keys["bitget"], keys["whitebit"]
    info = "/api/v2/spot/account/info"
    good = _signed_as(bitget, "GET" + info)
    sent: list[str] = [good["ACCESS-SIGN"], bitget["passphrase"], bitget["secretKey"], whitebit["apiSecret"]]
    # a wrong passphrase that looks like one, a doubled signature, a WhiteBIT request signed wrong, a
    # create whose body holds a passphrase the rules refuse, and one that would be valid
    wrong = "Zz" + bitget["passphrase"][2:]
    raw_http(server.base_url, b"GET", info.encode(), {**good, "ACCESS-PASSPHRASE": wrong})
    raw_lines(server, "GET", info, [*good.items(), ("ACCESS-SIGN", good["ACCESS-SIGN"])])
    headers, body = whitebit_signed(whitebit, "/api/v4/sub-account/list")
    forged = {**headers, "X-TXC-SIGNATURE": hashlib.sha512(whitebit["apiSecret"].encode()).hexdigest()}
    raw_http(server.base_url, b"POST", b"/api/v4/sub-account/list", forged, body.encode())
    create = "/api/v2/user/create-virtual-subaccount-apikey"
    secret_body = '{"subAccountUid":"1","passphrase":"' + wrong + '!","permList":["read"],"label":"x"}'
    answer = raw_http(server.base_url, b"POST", create.encode(),
                      {**_signed_as(bitget, "POST" + create + secret_body), **JSON}, secret_body.encode())
    assert answer.status == 400
    sent += [wrong, forged["X-TXC-SIGNATURE"], base64.b64encode(body.encode()).decode()]
    # /v1/verify calls too (logged at DEBUG), one refused and one valid
    verify_call(server, "GET", info, {**good, "ACCESS-PASSPHRASE": wrong})
    verify_call(server, "GET", info, _signed_as(bitget, "GET" + info))
    log = server.log_path.read_text(errors="replace")
    assert "keyplane.access" in log  # the log is the server's, and it logged these requests
    if level == "DEBUG":
        assert "/v1/verify" in log
    for value in sent:
        assert value not in log


# --- replays across two worker processes -----------------------------------------------------------------


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("attacker-workers"), {"KEYPLANE_VERIFY_TOKEN": TOKEN})
    srv.serve_args = ("--workers", "2")
    srv.start()
    yield srv
    srv.stop()


def test_a_bitget_post_replayed_at_two_workers_in_every_form_is_accepted_once(two_workers: Server) -> None:
    uid = two_workers.main_account("replayworkers")
    key = two_workers.bitget_main_key(uid, "--perm", "read", "--perm", "spot_trade")
    order = "/api/v2/spot/trade/place-order"
    for round_ in range(3):
        body = '{"symbol":"BTCUSDT","side":"buy","size":"' + str(round_) + '"}'
        headers = _signed_as(key, "POST" + order + body)
        # the one signed request, each time on a connection of its own, in the forms a replayer might try:
        # header names in other cases, the same signature listed once
        forms = [headers, {k.lower(): v for k, v in headers.items()}, {k.title(): v for k, v in headers.items()},
                 {k: [v] for k, v in headers.items()}] * 6
        with ThreadPoolExecutor(len(forms)) as pool:
            codes = list(pool.map(lambda h, b=body: verify_call(two_workers, "POST", order, h, b)["code"], forms))
        assert codes.count("VALID") == 1, codes
        assert set(codes) == {"VALID", "REQUEST_REPLAYED"}, codes
    # and after a restart of both workers, the last one still refused
    two_workers.restart()
    assert verify_call(two_workers, "POST", order, headers, body)["code"] == "REQUEST_REPLAYED"


# --- memory: what a caller can make the endpoint table remember ---------------------------------------------


def test_long_paths_and_methods_are_answered_without_being_remembered() -> None:
    table = EndpointTable.defaults()
    for i in range(50):
        # a /v1/verify call may hand over a 60 KB path or method; 4096 remembered would hold 250 MB
        long_path = "/api/v2/" + "a" * 60_000 + str(i)
        assert table.requirement_for(Scheme.BITGET, "GET", long_path) is Refusal.NO_RULE
        assert table.requirement_for(Scheme.BITGET, "G" * 60_000 + str(i), ASSETS) is Refusal.BAD_TARGET
        assert table.check_target(Scheme.BITGET, "GET", long_path) is None
        assert table.check_target(Scheme.WHITEBIT, "GET", "/api/v2/" + "b" * 60_000 + str(i)) is Refusal.NO_RULE
    assert sum(len(key[2]) + len(key[1]) for key in table._memo) < 10_000
    assert sum(len(key[2]) + len(key[1]) for key in table._targets) < 10_000
    # the venue's own paths are still remembered (one dict hit per repeated request line)
    table.requirement_for(Scheme.BITGET, "GET", ASSETS)
    assert (Scheme.BITGET, "GET", ASSETS) in table._memo


# --- replays: one RSA signature written in other base64 --------------------------------------------------


def _b64_variants(signature: str) -> list[str]:
    """The same signature bytes in other base64 text: the unused low bits of the last character set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    stripped = signature.rstrip("=")
    pad = signature[len(stripped):]
    unused = {2: 4, 1: 2}.get(len(pad), 0)  # "==": 4 unused bits, "=": 2
    last = alphabet.index(stripped[-1])
    return [stripped[:-1] + alphabet[last | bits] + pad for bits in range(1, 1 << unused)]


def test_an_rsa_signature_in_other_base64_is_the_same_request(server: Server, tmp_path: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from keyplane.auth import bitget as bitget_auth

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "public.pem"
    pem.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    uid = server.main_account("rsareplay")
    made = server.bitget_main_key(uid, "--rsa-public-key", str(pem), "--perm", "spot_trade")
    order = "/api/v2/spot/trade/place-order"
    body = '{"symbol":"BTCUSDT","side":"buy","size":"1"}'
    timestamp = str(now_ms())
    signature = bitget_auth.sign_rsa(private_pem, bitget_auth.prehash(timestamp, "POST", order, "", body.encode()))
    variants = _b64_variants(signature)
    assert len(variants) == 15 and signature not in variants  # 256 bytes: "==" and 4 unused bits

    def send(sign: str, sent_body: str = body) -> str:
        headers = {"ACCESS-KEY": made["apiKey"], "ACCESS-SIGN": sign, "ACCESS-TIMESTAMP": timestamp,
                   "ACCESS-PASSPHRASE": made["passphrase"]}
        return str(verify_call(server, "POST", order, headers, sent_body)["code"])

    # not base64 of the signature at all: no padding, the URL-safe alphabet, line breaks, spaces
    for odd in [signature.rstrip("="), signature.replace("+", "-").replace("/", "_"),
                signature[:64] + "\n" + signature[64:], " " + signature, signature + "=="]:
        if odd != signature:
            assert send(odd) == "BAD_SIGNATURE", odd
    assert send(variants[0]) == "VALID"  # a variant the signer never wrote still verifies: the same bytes
    for again in [signature, *variants]:
        assert send(again) == "REQUEST_REPLAYED"


def test_an_hmac_signature_verifies_only_in_its_own_base64(server: Server, keys: dict[str, Any]) -> None:
    order = "/api/v2/spot/trade/place-order"
    body = '{"symbol":"BTCUSDT","side":"sell","size":"2"}'
    headers = _signed_as(keys["bitget"], "POST" + order + body)
    signature = headers["ACCESS-SIGN"]
    variants = _b64_variants(signature)  # 32 bytes: "=" and 2 unused bits
    for odd in [*variants, signature.rstrip("="), signature.replace("+", "-").replace("/", "_"), signature + "\n"]:
        if odd != signature:
            assert verify_call(server, "POST", order, {**headers, "ACCESS-SIGN": odd}, body)["code"] == "BAD_SIGNATURE"
    assert verify_call(server, "POST", order, headers, body)["code"] == "VALID"  # none of them spent it
    assert verify_call(server, "POST", order, headers, body)["code"] == "REQUEST_REPLAYED"


# --- WhiteBIT: nothing unsigned beside the payload ---------------------------------------------------------


@pytest.mark.parametrize("query", ["amount=1000", "request=/api/v4/main-account/withdraw", "nonce=1", "x"])
def test_a_whitebit_request_carries_no_unsigned_query(server: Server, keys: dict[str, Any], query: str) -> None:
    """WhiteBIT signs the body alone: a query beside it is unsigned, and an upstream that merges query and
    body parameters (many frameworks do) would act on it. No client sends one (ccxt: every private call a
    POST with its parameters in the body)."""
    key = keys["whitebit"]
    path = "/api/v4/main-account/balance"
    lower, higher = nonce_pair()
    headers, body = whitebit_signed(key, path, nonce=higher)
    assert dialect_error(verify_call(server, "POST", f"{path}?{query}", headers, body)) == WHITEBIT_BAD_TARGET
    headers, body = whitebit_signed(key, "/api/v4/sub-account/list", nonce=higher)
    answer = raw_http(server.base_url, b"POST", f"/api/v4/sub-account/list?{query}".encode(), headers, body.encode())
    assert (answer.status, answer.json()) == WHITEBIT_BAD_TARGET
    # nothing was spent: the lower nonce still passes, signed without a query
    headers, body = whitebit_signed(key, path, nonce=lower)
    assert verify_call(server, "POST", path, headers, body)["code"] == "VALID"


# --- no 5xx: what the HTTP layer itself could choke on -----------------------------------------------------


def _raw_bytes(server: Server, data: bytes) -> bytes:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(server.base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


_HOST = b"Host: x\r\nConnection: close\r\n"
_BG_CREATE = b"POST /api/v2/user/create-virtual-subaccount HTTP/1.1\r\n"
_WB_LIST = b"POST /api/v4/sub-account/list HTTP/1.1\r\n"
_VERIFY = b"POST /v1/verify HTTP/1.1\r\n"
_CHUNKS = b"".join(b"%x\r\n%s\r\n" % (30_000, b"a" * 30_000) for _ in range(3)) + b"0\r\n\r\n"
HTTP_ODDITIES: dict[str, bytes] = {
    "negative content-length": _BG_CREATE + _HOST + b"Content-Length: -1\r\n\r\n",
    "huge content-length": _BG_CREATE + _HOST + b"Content-Length: 99999999999999999999\r\n\r\n",
    "two content-lengths": _BG_CREATE + _HOST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "content-length and chunked": _WB_LIST + _HOST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  b"2\r\n{}\r\n0\r\n\r\n",
    "chunked": _WB_LIST + _HOST + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "bad chunk size": _WB_LIST + _HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "chunked past the body limit": _VERIFY + _HOST + b"Transfer-Encoding: chunked\r\n\r\n" + _CHUNKS,
    "chunked past the limit, Bitget": _BG_CREATE + _HOST + b"Transfer-Encoding: chunked\r\n\r\n" + _CHUNKS,
    "non-UTF-8 Bitget headers": b"GET /api/v2/spot/account/info HTTP/1.1\r\n" + _HOST
                                + b"ACCESS-KEY: \xff\xfe\r\nACCESS-SIGN: \xc3\x28\r\nACCESS-TIMESTAMP: 1\r\n\r\n",
    "non-UTF-8 WhiteBIT headers": _WB_LIST + _HOST
                                  + b"X-TXC-APIKEY: \xff\r\nX-TXC-PAYLOAD: \xff\xff\r\nX-TXC-SIGNATURE: \xff\r\n"
                                  b"Content-Length: 2\r\n\r\n{}",
    "non-UTF-8 bearer token": _VERIFY + _HOST + b"Authorization: Bearer \xff\xfe\r\nContent-Length: 2\r\n\r\n{}",
    "60 KB query, Bitget": b"GET /api/v2/spot/account/info?a=" + b"%41" * 20_000 + b" HTTP/1.1\r\n" + _HOST + b"\r\n",
    "60 KB query, WhiteBIT": b"POST /api/v4/sub-account/list?a=" + b"b" * 60_000 + b" HTTP/1.1\r\n" + _HOST
                             + b"Content-Length: 0\r\n\r\n",
    "60 KB query, /v1/verify": b"POST /v1/verify?a=" + b"b" * 60_000 + b" HTTP/1.1\r\n" + _HOST
                               + b"Content-Length: 0\r\n\r\n",
    "70 KB header": b"GET /api/v2/spot/account/info HTTP/1.1\r\n" + _HOST
                    + b"ACCESS-KEY: " + b"k" * 70_000 + b"\r\n\r\n",
    "3000 headers": b"GET /api/v2/spot/account/info HTTP/1.1\r\n" + _HOST
                    + b"".join(b"X-%d: 1\r\n" % i for i in range(3000)) + b"\r\n",
    "absolute-form target": b"GET http://evil/api/v2/spot/account/info HTTP/1.1\r\n" + _HOST + b"\r\n",
    "asterisk target": b"OPTIONS * HTTP/1.1\r\n" + _HOST + b"\r\n",
    "CONNECT": b"CONNECT evil:443 HTTP/1.1\r\n" + _HOST + b"\r\n",
    "HTTP/1.0 without Host": b"GET /api/v2/spot/account/info HTTP/1.0\r\n\r\n",
    "body past the limit": _WB_LIST + _HOST + b"Content-Length: 70000\r\n\r\n" + b"a" * 70_000,
    "NUL in the target": b"GET /api/v2/spot/account/info\x00 HTTP/1.1\r\n" + _HOST + b"\r\n",
    "bad escapes": b"GET /api/v2/spot/account/info%ff%zz?a=%ff%zz HTTP/1.1\r\n" + _HOST + b"\r\n",
    "HEAD": b"HEAD /api/v2/spot/account/info HTTP/1.1\r\n" + _HOST + b"\r\n",
}


@pytest.mark.parametrize("name", list(HTTP_ODDITIES))
def test_http_oddities_get_a_4xx_never_a_5xx(server: Server, name: str) -> None:
    received = _raw_bytes(server, HTTP_ODDITIES[name])
    status = int(received.split(b" ", 2)[1])
    assert 400 <= status < 500, (name, received[:300])
    assert server.process is not None and server.process.poll() is None


def test_signed_requests_with_a_60_kb_query_are_answered(server: Server, keys: dict[str, Any]) -> None:
    info = "/api/v2/spot/account/info"
    query = "a=" + "%41" * 20_000  # ccxt's form: sent encoded, signed decoded
    headers = _signed_as(keys["bitget"], "GET" + info + "?a=" + "A" * 20_000)
    answer = raw_http(server.base_url, b"GET", f"{info}?{query}".encode(), headers)
    assert answer.status == 200, answer.body
    assert verify_call(server, "GET", f"{info}?{query}", headers)["code"] == "VALID"
    wrong = "b=" + "%41" * 20_000
    assert bitget_answer(raw_http(server.base_url, b"GET", f"{info}?{wrong}".encode(), headers))[0] == 400
