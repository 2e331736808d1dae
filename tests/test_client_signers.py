"""The SDK's signers (``keyplane.client.BitgetAuth``, ``WhiteBITAuth``) without a server: they reproduce the
golden vectors, put on the wire what ccxt 4.5.90 does for the same call (hypothesis-generated methods,
paths, queries with reserved characters and any Unicode, JSON bodies; ccxt's ``sign()`` driven directly
with the same timestamp or nonce), and keyplane's verifier, over a real store, accepts every request
they sign. Where ccxt's and the SDK's Bitget signatures differ, keyplane refuses ccxt's (module docstring
of ``keyplane/client/_bitget_auth.py``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyplane import crypto
from keyplane.auth import bitget as bitget_rules
from keyplane.auth.request import Reason, Requirement, SignedRequest
from keyplane.auth.verifier import Verifier
from keyplane.client import BitgetAuth, WhiteBITAuth
from keyplane.client._clock import Increasing
from keyplane.domain.model import Scheme
from keyplane.services import KeyplaneService
from keyplane.store import Store

VECTORS = Path(__file__).parent / "vectors"
BITGET = json.loads((VECTORS / "bitget.json").read_text())
WHITEBIT = json.loads((VECTORS / "whitebit.json").read_text())
BITGET_BASE = "https://api.bitget.com"
WHITEBIT_BASE = "https://whitebit.com"

# a timestamp per example, each above the last: WhiteBIT's monotonic nonces, Bitget's replay records
_TIMESTAMPS = itertools.count(1_795_400_000_000)


def _request(auth: httpx.Auth, method: str, url: str, **kwargs: Any) -> httpx.Request:
    """The request an httpx client sends with ``auth``: its auth flow's first and only step."""
    flow = auth.sync_auth_flow(httpx.Request(method, url, **kwargs))
    signed = next(flow)
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(200))
    return signed


def _signed_request(request: httpx.Request) -> SignedRequest:
    """What keyplane's server hands its verifier for these bytes (lower-case header names)."""
    path, _, query = request.url.raw_path.decode("ascii").partition("?")
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.headers.raw}
    return SignedRequest(request.method, path, query, headers, request.content, "127.0.0.1")


# golden vectors ---------------------------------------------------------------------------------------------

# Vectors of other clients' forms that keyplane accepts but this SDK does not send: it sends a query in
# Bitget's documented (and ccxt's) key order, and signs a body exactly as sent.
BITGET_NOT_SENT = {
    "GET with an unsorted, unencoded query (python-bitget), signed as sent",
    "POST with body {} signed as an empty body (Bitget SDK)",
}


def _bitget_vector_request(auth: BitgetAuth, vector: dict[str, Any]) -> httpx.Request:
    query = "?" + vector["query"] if vector["query"] else ""
    return _request(auth, vector["method"], BITGET_BASE + vector["path"] + query, content=vector["body"].encode())


@pytest.mark.parametrize("vector", BITGET["hmac"], ids=lambda v: str(v["note"]))
def test_bitget_auth_sends_each_hmac_vector_byte_for_byte(vector: dict[str, Any]) -> None:
    auth = BitgetAuth("bg_vector", vector["secret"], "vectorPass1", clock=lambda: int(vector["timestamp"]))
    sent = _bitget_vector_request(auth, vector)
    assert auth._signer(vector["prehash"].encode()) == vector["signature"]  # the primitive, over every vector
    reproduced = (
        sent.headers["ACCESS-SIGN"] == vector["signature"]
        and sent.url.query.decode() == vector["query"]
        and sent.content == vector["body"].encode()
    )
    assert reproduced is (vector["note"] not in BITGET_NOT_SENT)
    assert sent.headers["ACCESS-KEY"] == "bg_vector"
    assert sent.headers["ACCESS-TIMESTAMP"] == vector["timestamp"]
    assert sent.headers["ACCESS-PASSPHRASE"] == "vectorPass1"
    if vector["note"].startswith("GET with an unsorted"):
        assert sent.url.query == b"limit=5&status=normal"  # sorted, as Bitget's docs and ccxt do


@pytest.mark.parametrize("vector", BITGET["rsa"]["vectors"], ids=lambda v: str(v["note"]))
def test_bitget_rsa_auth_sends_each_rsa_vector_byte_for_byte(vector: dict[str, Any]) -> None:
    pem = BITGET["rsa"]["private_key_pem"]
    for key in (pem, pem.encode()):
        auth = BitgetAuth.rsa("bg_rsa", key, "vectorPass1", clock=lambda: int(vector["timestamp"]))
        sent = _bitget_vector_request(auth, vector)
        assert sent.headers["ACCESS-SIGN"] == vector["signature"]
        assert sent.url.query.decode() == vector["query"] and sent.content == vector["body"].encode()


@pytest.mark.parametrize("vector", WHITEBIT["vectors"], ids=lambda v: str(v["name"]))
def test_whitebit_auth_sends_each_ccxt_form_vector_byte_for_byte(vector: dict[str, Any]) -> None:
    auth = WhiteBITAuth("wb_vector", vector["secret"])
    assert auth._signature(vector["payload"].encode()) == vector["signature"]  # the primitive, every vector
    body = json.loads(vector["body"])
    # the body this SDK sends: request, nonce (a string) and nonceWindow first, as ccxt sends it
    if not (vector["compact"] and isinstance(body["nonce"], str) and "nonceWindow" in body):
        assert not vector["name"].startswith("ccxt:")
        return
    fields = {k: v for k, v in body.items() if k not in ("request", "nonce")}
    auth = WhiteBITAuth("wb_vector", vector["secret"], clock=lambda: int(body["nonce"]))
    sent = _request(auth, "POST", WHITEBIT_BASE + body["request"], json=fields)
    assert sent.content == vector["body"].encode()
    assert sent.headers["X-TXC-APIKEY"] == "wb_vector" and sent.headers["Content-Type"] == "application/json"
    # a vector whose payload is another body's: the SDK sends this body's own payload and signature
    assert (sent.headers["X-TXC-PAYLOAD"] == vector["payload"]) is vector["payload_matches_body"]
    assert (sent.headers["X-TXC-SIGNATURE"] == vector["signature"]) is vector["payload_matches_body"]


def test_whitebit_vectors_of_the_ccxt_form_are_the_ones_reproduced() -> None:
    """The vector test above returns early for other clients' forms only: at least the ccxt ones run."""
    ccxt_form = [v for v in WHITEBIT["vectors"] if v["name"].startswith("ccxt:")]
    assert len(ccxt_form) >= 2


# a verifier over a real store, holding one key of each kind ----------------------------------------------------


class Clock:
    now = 0

    def __call__(self) -> int:
        return self.now


class Keys:
    def __init__(self, verifier: Verifier, clock: Clock, bitget: tuple[str, str, str], rsa: tuple[str, str],
                 whitebit: tuple[str, str]) -> None:
        self.verifier, self.clock = verifier, clock
        self.bitget, self.rsa, self.whitebit = bitget, rsa, whitebit
        self.lock = threading.Lock()

    def verify(self, request: httpx.Request, scheme: Scheme, now: int) -> Reason:
        with self.lock:
            self.clock.now = now
            # replay records off: hypothesis may send one example twice (it shrinks, it replays)
            result = self.verifier.verify(_signed_request(request), Requirement(replay_protect=False), scheme)
            return result.reason


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('client-signers') / 'keyplane.db'}")
    store.migrate()
    master = crypto.MasterKey(os.urandom(32))
    service = KeyplaneService(store, master)
    main = service.accounts.create_main_account("sdk-signers")
    hmac_key = service.keys.issue_main_key(main.uid, Scheme.BITGET, passphrase="sdkPass123", permissions=("read",))
    rsa_key = service.keys.issue_main_key(main.uid, Scheme.BITGET, passphrase="sdkPass123", permissions=("read",),
                                     public_key_pem=BITGET["rsa"]["public_key_pem"])
    wb_key = service.keys.issue_main_key(main.uid, Scheme.WHITEBIT)
    assert hmac_key.secret and wb_key.secret
    clock = Clock()
    yield Keys(
        Verifier(store, master, clock_ms=clock),
        clock,
        (hmac_key.key.api_key, hmac_key.secret, "sdkPass123"),
        (rsa_key.key.api_key, "sdkPass123"),
        (wb_key.key.api_key, wb_key.secret),
    )
    store.close()


# Bitget against ccxt ----------------------------------------------------------------------------------------------

# any Unicode a str can encode, with reserved characters and escape-like text made common
_TEXT = st.lists(
    st.characters(exclude_categories=("Cs",))
    | st.sampled_from("&=%+#?/$ ,;:@[]~*'()!\x00\n\u00e9\u6d4b\U0001f600")
    | st.sampled_from(["%41", "%2B", "%26", "%zz", "%E6%B5%8B", "%FF", "+"]),
    max_size=6,
).map("".join)
_SEGMENT = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
_PATHS = st.lists(_SEGMENT, min_size=1, max_size=3).map(lambda segments: "v2/" + "/".join(segments))
_QUERY_VALUES = _TEXT | st.integers(-(10**12), 10**12) | st.booleans()
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def bitget_calls(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    method = draw(st.sampled_from(["GET", "POST", "DELETE"]))
    if method == "POST":
        params = draw(st.dictionaries(_TEXT, _JSON, max_size=4))
    else:
        params = draw(st.dictionaries(_TEXT, _QUERY_VALUES, max_size=5))
    return method, draw(_PATHS), params


def _ccxt_bitget(api_key: str, secret: str, passphrase: str, timestamp: int) -> ccxt.bitget:
    exchange = ccxt.bitget({"apiKey": api_key, "secret": secret, "password": passphrase})
    exchange.nonce = lambda: timestamp
    return exchange


def _ccxt_request(signed: dict[str, Any]) -> httpx.Request:
    return httpx.Request(signed["method"], signed["url"], headers=signed["headers"],
                         content=(signed["body"] or "").encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=bitget_calls())
def test_bitget_auth_sends_what_ccxt_sends_and_keyplane_verifies_it(
    keys: Keys, call: tuple[str, str, dict[str, Any]]
) -> None:
    method, path, params = call
    api_key, secret, passphrase = keys.bitget
    timestamp = next(_TIMESTAMPS)
    theirs = _ccxt_bitget(api_key, secret, passphrase, timestamp).sign(path, ["private", "spot"], method, params)
    auth = BitgetAuth(api_key, secret, passphrase, clock=lambda: timestamp)
    url = BITGET_BASE + "/api/" + path
    ours = (_request(auth, method, url, json=params) if method == "POST"
            else _request(auth, method, url, params=params))

    assert str(ours.url) == theirs["url"]
    assert ours.content == (theirs["body"] or "").encode()
    for name in ("ACCESS-KEY", "ACCESS-TIMESTAMP", "ACCESS-PASSPHRASE"):
        assert ours.headers[name] == theirs["headers"][name]
    assert ("content-type" in ours.headers) is (method == "POST")

    assert keys.verify(ours, Scheme.BITGET, timestamp) is Reason.VALID
    same = ours.headers["ACCESS-SIGN"] == theirs["headers"]["ACCESS-SIGN"]
    ccxt_valid = keys.verify(_ccxt_request(theirs), Scheme.BITGET, timestamp) is Reason.VALID
    # the SDK signs as ccxt does wherever keyplane takes ccxt's signature; elsewhere (a value holding '&',
    # text that decodes further) it signs the query as sent, which keyplane takes
    assert same is ccxt_valid
    if not same:
        query = ours.url.query.decode()
        assert bitget_rules.decoded_query(query) is None and "%" in query


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=bitget_calls())
def test_bitget_rsa_auth_is_verified_for_any_call(keys: Keys, call: tuple[str, str, dict[str, Any]]) -> None:
    method, path, params = call
    api_key, passphrase = keys.rsa
    timestamp = next(_TIMESTAMPS)
    auth = BitgetAuth.rsa(api_key, BITGET["rsa"]["private_key_pem"], passphrase, clock=lambda: timestamp)
    url = BITGET_BASE + "/api/" + path
    ours = (_request(auth, method, url, json=params) if method == "POST"
            else _request(auth, method, url, params=params))
    assert keys.verify(ours, Scheme.BITGET, timestamp) is Reason.VALID


@pytest.mark.parametrize(
    ("url", "wire", "signed"),
    [
        # '+' read as a space (httpx writes a space so), sent as %20; a literal plus as %2B
        ("/api/v2/p?b=x+y&a=1%2B2", "a=1%2B2&b=x%20y", "a=1+2&b=x y"),
        # non-ASCII and reserved characters: percent-encoded on the wire, signed decoded; '$' bare
        ("/api/v2/p?symbol=%E6%B5%8B%E8%AF%95USDT&c=$5,/", "c=$5%2C%2F&symbol=%E6%B5%8B%E8%AF%95USDT",
         "c=$5,/&symbol=测试USDT"),
        # a value holding '&' or text that would decode further: the encoded query is signed
        ("/api/v2/p?a=1%262", "a=1%262", "a=1%262"),
        ("/api/v2/p?a=%2541", "a=%2541", "a=%2541"),
        # a malformed escape is read literally (as Python's and Starlette's parsers read it)
        ("/api/v2/p?a=%zz", "a=%25zz", "a=%zz"),
        # escapes that are not UTF-8: left as written, signed as sent
        ("/api/v2/p?a=%FF", "a=%FF", "a=%FF"),
        # empty parts dropped; a name without '=' kept without one; repeated names keep their order
        ("/api/v2/p?b=2&&a&b=1", "a&b=2&b=1", "a&b=2&b=1"),
    ],
)
def test_bitget_query_is_sent_in_ccxt_form_and_signed_as_keyplane_reads_it(
    keys: Keys, url: str, wire: str, signed: str
) -> None:
    api_key, secret, passphrase = keys.bitget
    timestamp = next(_TIMESTAMPS)
    sent = _request(BitgetAuth(api_key, secret, passphrase, clock=lambda: timestamp), "GET", BITGET_BASE + url)
    assert sent.url.query.decode() == wire
    message = f"{timestamp}GET/api/v2/p?{signed}".encode()
    expected = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
    assert sent.headers["ACCESS-SIGN"] == expected
    assert keys.verify(sent, Scheme.BITGET, timestamp) is Reason.VALID


def test_bitget_auth_drops_an_empty_query_and_sets_content_type_and_locale(keys: Keys) -> None:
    api_key, secret, passphrase = keys.bitget
    auth = BitgetAuth(api_key, secret, passphrase, locale="en-US")
    sent = _request(auth, "GET", BITGET_BASE + "/api/v2/spot/account/info?&")
    assert sent.url.raw_path == b"/api/v2/spot/account/info" and sent.headers["locale"] == "en-US"
    assert "content-type" not in sent.headers
    posted = _request(auth, "POST", BITGET_BASE + "/api/v2/spot/trade/place-order", content=b'{"a":1}')
    assert posted.headers["Content-Type"] == "application/json"
    kept = _request(auth, "POST", BITGET_BASE + "/api/v2/x", content=b"{}", headers={"Content-Type": "text/x"})
    assert kept.headers["Content-Type"] == "text/x"  # the caller's own content type is left alone


# WhiteBIT against ccxt -----------------------------------------------------------------------------------------

# names ccxt's whitebit.sign() takes out of the params (its options), and the two the signer owns
_CCXT_OPTION_NAMES = {"request", "nonce", "nonceWindow", "defaultNonceWindow", "callerMethodName"}


@st.composite
def whitebit_calls(draw: st.DrawFn) -> tuple[str, dict[str, Any], bool]:
    path = draw(st.lists(_SEGMENT, min_size=1, max_size=3).map("/".join))
    params = draw(st.dictionaries(_TEXT.filter(lambda k: k not in _CCXT_OPTION_NAMES), _JSON, max_size=4))
    return path, params, draw(st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=whitebit_calls())
def test_whitebit_auth_sends_what_ccxt_sends_and_keyplane_verifies_it(
    keys: Keys, call: tuple[str, dict[str, Any], bool]
) -> None:
    path, params, window = call
    api_key, secret = keys.whitebit
    nonce = next(_TIMESTAMPS)
    exchange = ccxt.whitebit({"apiKey": api_key, "secret": secret})
    exchange.urls["api"]["v4"] = {"public": WHITEBIT_BASE + "/api/v4/public", "private": WHITEBIT_BASE + "/api/v4"}
    exchange.options["nonceWindow"] = window
    exchange.nonce = lambda: nonce
    theirs = exchange.sign(path, ["v4", "private"], "POST", dict(params))
    auth = WhiteBITAuth(api_key, secret, nonce_window=window, clock=lambda: nonce)
    ours = _request(auth, "POST", WHITEBIT_BASE + "/api/v4/" + path, json=params)

    assert str(ours.url) == theirs["url"]
    assert ours.content == theirs["body"].encode()
    for name, value in theirs["headers"].items():
        assert ours.headers[name] == value
    assert ours.headers["Content-Length"] == str(len(ours.content))
    assert keys.verify(ours, Scheme.WHITEBIT, nonce) is Reason.VALID


def test_whitebit_request_field_overrides_the_instance_window_as_in_ccxt() -> None:
    exchange = ccxt.whitebit({"apiKey": "k", "secret": "s"})
    exchange.nonce = lambda: 1_795_000_000_000
    theirs = exchange.sign("sub-account/list", ["v4", "private"], "POST", {"limit": 5, "nonceWindow": True})
    auth = WhiteBITAuth("k", "s", clock=lambda: 1_795_000_000_000)
    ours = _request(auth, "POST", exchange.urls["api"]["v4"]["private"] + "/sub-account/list",
                    json={"limit": 5, "nonceWindow": True})
    assert ours.content == theirs["body"].encode() == (
        b'{"request":"/api/v4/sub-account/list","nonce":"1795000000000","nonceWindow":true,"limit":5}')
    assert ours.headers["X-TXC-SIGNATURE"] == theirs["headers"]["X-TXC-SIGNATURE"]


def test_whitebit_auth_compacts_a_spaced_body_and_replaces_its_length() -> None:
    auth = WhiteBITAuth("k", "s", clock=lambda: 7)
    sent = _request(auth, "POST", WHITEBIT_BASE + "/api/v4/main-account/balance",
                    content=b'{ "ticker" : "BTC" }', headers={"Content-Length": "20"})
    assert sent.content == b'{"request":"/api/v4/main-account/balance","nonce":"7","nonceWindow":false,"ticker":"BTC"}'
    assert sent.headers["Content-Length"] == str(len(sent.content))
    empty = _request(auth, "POST", WHITEBIT_BASE + "/api/v4/main-account/balance")
    assert json.loads(empty.content) == {"request": "/api/v4/main-account/balance", "nonce": "8",
                                         "nonceWindow": False}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"content": b"[1]"}, "must be a JSON object"),
        ({"content": b"not json"}, "must be a JSON object"),
        ({"content": b'{"a": NaN}'}, "Out of range float values are not JSON compliant"),
        ({"json": {"nonce": 1}}, "the signer sets nonce"),
        ({"json": {"request": "/api/v4/other", "nonce": 1}}, "the signer sets request and nonce"),
        ({"json": {"nonceWindow": "yes"}}, "nonceWindow must be true or false"),
        ({"params": {"amount": "1"}}, "WhiteBIT signs the JSON body only"),
    ],
)
def test_whitebit_auth_refuses_a_body_it_cannot_sign_honestly(kwargs: dict[str, Any], message: str) -> None:
    auth = WhiteBITAuth("k", "s")
    with pytest.raises(ValueError, match=message):
        _request(auth, "POST", WHITEBIT_BASE + "/api/v4/main-account/withdraw", **kwargs)


# the signers as objects: secrets out of sight, nonces, bad arguments --------------------------------------------


def test_no_secret_in_repr_str_or_errors() -> None:
    pem = BITGET["rsa"]["private_key_pem"]
    signers = [
        BitgetAuth("bg_0123456789abcdef", "SECRET-hmac-value", "PASSPHRASE-value"),
        BitgetAuth.rsa("bg_0123456789abcdef", pem, "PASSPHRASE-value"),
        WhiteBITAuth("wb_0123456789abcdef", "SECRET-whitebit-value", nonce_window=True),
    ]
    shown = " ".join(text for signer in signers for text in (repr(signer), str(signer)))
    for secret in ("SECRET", "PASSPHRASE", "PRIVATE KEY", pem.splitlines()[1][:20], "0123456789abcdef"):
        assert secret not in shown
    assert "bg_01234..." in shown and "sign_type='rsa'" in shown and "nonce_window=True" in shown
    with pytest.raises(ValueError) as raised:
        BitgetAuth.rsa("bg_x", pem.replace("A", "B", 5), "p")  # a spoiled key
    assert "MII" not in str(raised.value) and raised.value.__cause__ is None and raised.value.__suppress_context__


@pytest.mark.parametrize(
    "make",
    [
        lambda: BitgetAuth("", "s", "p"),
        lambda: BitgetAuth("k", "", "p"),
        lambda: BitgetAuth("k", "s", ""),
        lambda: BitgetAuth.rsa("k", "not a key", "p"),
        lambda: BitgetAuth.rsa("k", BITGET["rsa"]["public_key_pem"], "p"),
        lambda: WhiteBITAuth("", "s"),
        lambda: WhiteBITAuth("k", b""),
    ],
)
def test_signers_refuse_missing_credentials(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


def test_rsa_accepts_a_loaded_key_and_refuses_other_key_types() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    loaded = serialization.load_pem_private_key(BITGET["rsa"]["private_key_pem"].encode(), password=None)
    vector = BITGET["rsa"]["vectors"][0]
    auth = BitgetAuth.rsa("bg_rsa", loaded, "p", clock=lambda: int(vector["timestamp"]))  # type: ignore[arg-type]
    assert _bitget_vector_request(auth, vector).headers["ACCESS-SIGN"] == vector["signature"]
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(ValueError, match="not an RSA key"):
        BitgetAuth.rsa("bg_rsa", ec_pem, "p")


def test_nonces_strictly_increase_across_threads() -> None:
    """Eight threads share one counter whose clock stands still and then steps back: every value is
    unique and each thread sees its own values increase."""
    ticks = iter([1000] * 2000 + [500] * 2000)
    lock = threading.Lock()

    def clock() -> int:
        with lock:
            return next(ticks, 500)

    counter = Increasing(clock)
    seen: list[list[int]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def run(mine: list[int]) -> None:
        start.wait()
        mine.extend(counter() for _ in range(500))

    threads = [threading.Thread(target=run, args=(mine,)) for mine in seen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for mine in seen for value in mine]
    assert len(set(every)) == len(every) == 4000
    assert all(mine == sorted(mine) for mine in seen)
    assert min(every) == 1000 and max(every) == 4999
