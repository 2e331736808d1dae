"""Golden vectors for Bitget request signing (tests/vectors/bitget.json): the signing functions, the
verifier, ccxt's own signer, and an RSA main key registered on the command line and used over HTTP."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import ccxt
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bitget_helpers as h
from conftest import Server, make_server
from keyplane import crypto
from keyplane.auth import bitget
from keyplane.auth.request import Reason, Requirement, SignedRequest
from keyplane.auth.verifier import Verifier
from keyplane.domain.model import Scheme, SignType
from keyplane.services import KeyplaneService
from keyplane.store import Store

VECTORS = json.loads((Path(__file__).parent / "vectors" / "bitget.json").read_text())
HMAC = VECTORS["hmac"]
RSA = VECTORS["rsa"]
PASSPHRASE = "vectorPass1"


def _id(vector: dict[str, Any]) -> str:
    return str(vector["note"])


@pytest.mark.parametrize("vector", HMAC, ids=_id)
def test_hmac_vector_signature_is_base64_hmac_sha256_of_its_prehash(vector: dict[str, Any]) -> None:
    assert bitget.sign_hmac(vector["secret"].encode(), vector["prehash"].encode()) == vector["signature"]
    checker = bitget.HmacChecker(vector["secret"].encode())
    assert checker.matches(vector["prehash"].encode(), vector["signature"].encode())
    assert not checker.matches(vector["prehash"].encode() + b" ", vector["signature"].encode())


@pytest.mark.parametrize("vector", HMAC, ids=_id)
def test_hmac_vector_prehash_is_one_reading_of_the_bytes_sent(vector: dict[str, Any]) -> None:
    args = (vector["timestamp"], vector["method"], vector["path"], vector["query"], vector["body"].encode())
    candidates = list(bitget.prehash_candidates(*args))
    assert vector["prehash"].encode() in candidates
    if vector["prehash"] == vector["timestamp"] + vector["method"] + vector["path"] + (
        "?" + vector["query"] if vector["query"] else ""
    ) + vector["body"]:
        assert bitget.prehash(*args) == vector["prehash"].encode()  # the exact reading, tried first


@pytest.mark.parametrize("vector", RSA["vectors"], ids=_id)
def test_rsa_vector_is_pkcs1_v15_sha256_and_deterministic(vector: dict[str, Any]) -> None:
    message = vector["prehash"].encode()
    assert bitget.prehash(vector["timestamp"], vector["method"], vector["path"], vector["query"],
                          vector["body"].encode()) == message
    assert bitget.sign_rsa(RSA["private_key_pem"].encode(), message) == vector["signature"]
    checker = bitget.RsaChecker(RSA["public_key_pem"])
    assert checker.matches(message, vector["signature"].encode())
    assert not checker.matches(message + b"x", vector["signature"].encode())
    assert not checker.matches(message, b"not base64!")


CCXT_SIGNED = [v for v in HMAC if v["path"].startswith("/api/v2/") and "%" not in v["query"]
               and v["body"] not in ("{}",) and ": " not in v["body"] and "status=normal&limit" not in v["query"]]


@pytest.mark.parametrize("vector", CCXT_SIGNED, ids=_id)
def test_ccxt_signs_the_hmac_vectors_identically(vector: dict[str, Any]) -> None:
    exchange = ccxt.bitget({"apiKey": "k", "secret": vector["secret"], "password": "p"})
    exchange.milliseconds = lambda: int(vector["timestamp"])
    params: Any = json.loads(vector["body"]) if vector["body"] else dict(parse_qsl(vector["query"]))
    signed = exchange.sign(vector["path"].removeprefix("/api/"), ["private", "user"], vector["method"], params)
    assert signed["headers"]["ACCESS-SIGN"] == vector["signature"]
    assert (signed["body"] or "") == vector["body"]


# the verifier, over a real store --------------------------------------------------------------------------


class Clock:
    now = 0

    def __call__(self) -> int:
        return self.now


@pytest.fixture(scope="module")
def verifier_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Verifier, Clock, str, str]]:
    """A store with one HMAC key holding the vectors' secret and one RSA key holding their public key."""
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('vectors') / 'keyplane.db'}")
    store.migrate()
    master = crypto.MasterKey(os.urandom(32))
    service = KeyplaneService(store, master)
    main = service.accounts.create_main_account("vectors")
    key_id, api_key = str(uuid.uuid4()), "bg_vectors"
    with store.transaction() as tx:
        tx.insert_api_key(
            key_id=key_id, api_key=api_key, account_uid=main.uid, scheme=Scheme.BITGET, sign_type=SignType.HMAC,
            sealed_secret=master.seal(HMAC[0]["secret"].encode(), key_id), public_key_pem=None,
            passphrase_hash=crypto.hash_passphrase(PASSPHRASE), label="", permissions=("read",), key_type=None,
            ip_list=(),
        )
    rsa_key = service.keys.issue_main_key(main.uid, Scheme.BITGET, passphrase=PASSPHRASE,
                                     public_key_pem=RSA["public_key_pem"], permissions=("read",))
    assert rsa_key.secret is None and rsa_key.key.sign_type is SignType.RSA
    clock = Clock()
    yield Verifier(store, master, clock_ms=clock), clock, api_key, rsa_key.key.api_key
    store.close()


def _signed(vector: dict[str, Any], api_key: str, signature: str | None = None,
            passphrase: str = PASSPHRASE) -> SignedRequest:
    headers = {"access-key": api_key, "access-sign": signature or vector["signature"],
               "access-timestamp": vector["timestamp"], "access-passphrase": passphrase}
    return SignedRequest(vector["method"], vector["path"], vector["query"], headers, vector["body"].encode(),
                         "127.0.0.1")


@pytest.mark.parametrize("vector", HMAC, ids=_id)
def test_verifier_accepts_each_hmac_vector_and_refuses_it_altered(
    verifier_setup: tuple[Verifier, Clock, str, str], vector: dict[str, Any]
) -> None:
    verifier, clock, api_key, _rsa = verifier_setup
    clock.now = int(vector["timestamp"]) + 1_000
    assert verifier.verify(_signed(vector, api_key), Requirement(), Scheme.BITGET).reason is Reason.VALID
    other = bitget.sign_hmac(b"another secret", vector["prehash"].encode())
    assert verifier.verify(_signed(vector, api_key, other), Requirement()).reason is Reason.BAD_SIGNATURE
    assert verifier.verify(_signed(vector, api_key, passphrase="wrong1234"), Requirement()).reason is (
        Reason.BAD_PASSPHRASE)
    clock.now = int(vector["timestamp"]) + 30_001
    assert verifier.verify(_signed(vector, api_key), Requirement()).reason is Reason.EXPIRED_TIMESTAMP


@pytest.mark.parametrize("vector", RSA["vectors"], ids=_id)
def test_verifier_accepts_each_rsa_vector_and_refuses_it_altered(
    verifier_setup: tuple[Verifier, Clock, str, str], vector: dict[str, Any]
) -> None:
    verifier, clock, _hmac, api_key = verifier_setup
    clock.now = int(vector["timestamp"])
    result = verifier.verify(_signed(vector, api_key), Requirement(), Scheme.BITGET)
    assert result.reason is Reason.VALID and result.key is not None and result.key.api_key == api_key
    # one byte more in the body, or (a body is never taken beside a query) in the query
    if vector["body"]:
        tampered = {**vector, "body": vector["body"] + " "}
    else:
        tampered = {**vector, "query": vector["query"] + "&x=1" if vector["query"] else "x=1"}
    assert verifier.verify(_signed(tampered, api_key), Requirement()).reason is Reason.BAD_SIGNATURE
    hmac_style = bitget.sign_hmac(b"secret", vector["prehash"].encode())
    assert verifier.verify(_signed(vector, api_key, hmac_style), Requirement()).reason is Reason.BAD_SIGNATURE


# an RSA main key, registered on the command line, used over HTTP ------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = h.track(make_server(tmp_path_factory.mktemp("bitget-rsa")))
    srv.start()
    yield srv
    srv.stop()


def _rsa_request(server: Server, api_key: str, passphrase: str, method: str, path: str, query: str = "",
                 body: str = "", private_key_pem: str = RSA["private_key_pem"]) -> httpx.Response:
    timestamp = h.now_ms()
    message = bitget.prehash(timestamp, method, path, query, body.encode())
    headers = {"ACCESS-KEY": api_key, "ACCESS-SIGN": bitget.sign_rsa(private_key_pem.encode(), message),
               "ACCESS-TIMESTAMP": timestamp, "ACCESS-PASSPHRASE": passphrase, "Content-Type": "application/json"}
    url = server.base_url + path + ("?" + query if query else "")
    response = httpx.request(method, url, content=body or None, headers=headers, timeout=20)
    h.RECORD.body(path, response.status_code, response.content)
    return response


def test_rsa_main_key_from_the_cli_signs_management_requests_over_http(server: Server, tmp_path: Path) -> None:
    pem = tmp_path / "public.pem"
    pem.write_text(RSA["public_key_pem"])
    uid = server.main_account("rsa-venue")
    made = server.bitget_main_key(uid, "--rsa-public-key", str(pem))
    assert made["signType"] == "rsa" and not made.get("secretKey")
    h.RECORD.secret(made["passphrase"])
    api_key, passphrase = made["apiKey"], made["passphrase"]

    name = h.new_name()
    created = _rsa_request(server, api_key, passphrase, "POST", "/api/v2/user/create-virtual-subaccount",
                           body=json.dumps({"subAccountList": [name]}))
    assert h.assert_ok(created)["successList"][0]["subaAccountName"] == name
    listed = _rsa_request(server, api_key, passphrase, "GET", "/api/v2/user/virtual-subaccount-list",
                          query="limit=10&status=normal")
    assert [a["subAccountName"] for a in h.assert_ok(listed)["subAccountList"]] == [name]
    info = h.assert_ok(_rsa_request(server, api_key, passphrase, "GET", "/api/v2/spot/account/info"))
    assert info["userId"] == uid

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    h.assert_error(_rsa_request(server, api_key, passphrase, "GET", "/api/v2/spot/account/info",
                                private_key_pem=stranger), "40009", "sign signature error")
    h.assert_error(_rsa_request(server, api_key, "wrongPass1", "GET", "/api/v2/spot/account/info"),
                   "40012", "apikey/password is incorrect")


def _pem_file(path: Path, key: Any) -> Path:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def test_the_cli_refuses_a_public_key_that_is_not_rsa_of_2048_bits(server: Server, tmp_path: Path) -> None:
    import subprocess

    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from conftest import KEYPLANE

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    candidates = [
        garbage,
        _pem_file(tmp_path / "ec.pem", ec.generate_private_key(ec.SECP256R1())),
        _pem_file(tmp_path / "short.pem", rsa.generate_private_key(public_exponent=65537, key_size=1024)),
    ]
    uid = server.main_account("rsa-refused")
    for pem in candidates:
        result = subprocess.run(
            [*KEYPLANE, "keys", "create", "--account", uid, "--dialect", "bitget", "--rsa-public-key", str(pem),
             "--database", server.database_url, "--json"],
            capture_output=True, text=True, env=server.env, cwd=server.workdir,
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "RSA key of at least 2048 bits" in result.stderr
    assert server.cli("keys", "list", "--account", uid) == []


def test_a_stored_public_key_that_does_not_load_is_an_unknown_key_not_a_server_error(server: Server) -> None:
    # what a key registered before public keys were checked looks like
    operator = h._operator(server)
    main = operator.service.accounts.create_main_account("rsa-legacy")
    key_id = str(uuid.uuid4())
    with operator.store.transaction() as tx:
        tx.insert_api_key(
            key_id=key_id, api_key="bg_legacy_" + key_id[:8], account_uid=main.uid, scheme=Scheme.BITGET,
            sign_type=SignType.RSA, sealed_secret=None, public_key_pem="not a key", passphrase_hash=None, label="",
            permissions=("read",), key_type=None, ip_list=(),
        )
    response = _rsa_request(server, "bg_legacy_" + key_id[:8], "whatever1", "GET", "/api/v2/spot/account/info")
    h.assert_error(response, "40037", "Apikey does not exist")


# ccxt's own signer on arbitrary query values ---------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(params=st.dictionaries(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1,
                                      max_size=8),
                              st.text(min_size=1, max_size=12).filter(lambda v: "\x00" not in v), max_size=4))
def test_every_query_ccxt_can_sign_is_one_the_verifier_reads(params: dict[str, str]) -> None:
    secret = HMAC[0]["secret"]
    exchange = ccxt.bitget({"apiKey": "k", "secret": secret, "password": "p"})
    exchange.milliseconds = lambda: 1795300000000
    signed = exchange.sign("v2/user/virtual-subaccount-list", ["private", "user"], "GET", params)
    url = httpx.URL(signed["url"])
    query = url.query.decode("latin-1")  # the raw bytes of the query, as the server receives them
    checker = bitget.HmacChecker(secret.encode())
    candidates = bitget.prehash_candidates("1795300000000", "GET", url.path, query, b"")
    verified = any(checker.matches(message, signed["headers"]["ACCESS-SIGN"].encode()) for message in candidates)
    # A value holding '&' or a '%XX' escape signs text that also reads as other parameters (a raw '&' splits
    # it; the escape decodes): one signature would stand for two requests, so neither form verifies.
    ambiguous = any("&" in value or re.search("%[0-9A-Fa-f]{2}", value) for value in params.values())
    assert verified is not ambiguous, (query, params)
