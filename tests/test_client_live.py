"""The SDK's signers against a live ``keyplane serve`` over HTTP: httpx's ``Client`` and ``AsyncClient`` with
``BitgetAuth`` (HMAC and RSA) and ``WhiteBITAuth`` (monotonic and windowed nonces) get answers from both
dialects' private endpoints, shared across threads and tasks; wrong credentials are refused."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import bitget_helpers as h
from conftest import Server, make_server
from keyplane.client import BitgetAuth, WhiteBITAuth
from keyplane.domain.model import Scheme

RSA = json.loads((Path(__file__).parent / "vectors" / "bitget.json").read_text())["rsa"]
INFO = "/api/v2/spot/account/info"
SUB_LIST = "/api/v2/user/virtual-subaccount-list"
SUB_CREATE = "/api/v2/user/create-virtual-subaccount"
WB_LIST = "/api/v4/sub-account/list"
WB_CREATE = "/api/v4/sub-account/create"


@dataclass
class Keys:
    base_url: str
    bitget: h.MainKey
    rsa_api_key: str
    rsa_passphrase: str
    whitebit_api_key: str
    whitebit_secret: str


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    server: Server = h.track(make_server(tmp_path_factory.mktemp("client-live")))
    server.start()
    try:
        bitget = h.main_key(server)
        service = h._operator(server).service
        rsa_key = service.keys.issue_main_key(int(bitget.uid), Scheme.BITGET, public_key_pem=RSA["public_key_pem"],
                                         permissions=["read"], ip_list=["127.0.0.1"])
        whitebit = service.keys.issue_main_key(int(bitget.uid), Scheme.WHITEBIT)
        assert rsa_key.passphrase and whitebit.secret
        h.RECORD.secret(rsa_key.passphrase, whitebit.secret)
        yield Keys(server.base_url, bitget, rsa_key.key.api_key, rsa_key.passphrase, whitebit.key.api_key,
                   whitebit.secret)
    finally:
        server.stop()


def _bitget_ok(response: httpx.Response) -> Any:
    h.RECORD.body(response.url.path, response.status_code, response.content)
    body = response.json()
    assert response.status_code == 200 and body["code"] == "00000" and body["msg"] == "success", response.text
    return body["data"]


def _whitebit_ok(response: httpx.Response) -> Any:
    assert response.status_code in (200, 201) and "code" not in response.json(), response.text
    return response.json()


def _new_alias() -> str:
    return "sdk" + secrets.token_hex(4)


# Bitget ---------------------------------------------------------------------------------------------------------


def test_bitget_hmac_auth_reads_and_writes_with_a_sync_client(keys: Keys) -> None:
    key = keys.bitget
    with httpx.Client(base_url=keys.base_url, auth=BitgetAuth(key.api_key, key.secret, key.passphrase)) as client:
        assert _bitget_ok(client.get(INFO))["userId"] == key.uid
        name = h.new_name()
        made = _bitget_ok(client.post(SUB_CREATE, json={"subAccountList": [name]}))
        assert made["successList"][0]["subaAccountName"] == name
        listed = _bitget_ok(client.get(SUB_LIST, params={"status": "normal", "limit": 100}))
        assert name in [entry["subAccountName"] for entry in listed["subAccountList"]]


def test_bitget_auth_signs_reserved_and_unicode_query_values_keyplane_accepts(keys: Keys) -> None:
    """Values keyplane reads decoded (ccxt's signature: spaces, '+', '/', non-ASCII) and values it reads only
    as sent ('&' inside a value, text that decodes further): every one verifies, so the answer is the
    endpoint's own (the list ignores parameters it does not know), never 40009 "sign signature error"."""
    key = keys.bitget
    with httpx.Client(base_url=keys.base_url, auth=BitgetAuth(key.api_key, key.secret, key.passphrase)) as client:
        for value in ("a b+c/d,$é", "测试USDT 😀", "x&y=z", "%41", "100%", "#?[]"):
            listed = _bitget_ok(client.get(SUB_LIST, params={"limit": 5, "note": value, "status": "normal"}))
            assert isinstance(listed["subAccountList"], list)


def test_bitget_rsa_auth_with_a_sync_client(keys: Keys) -> None:
    auth = BitgetAuth.rsa(keys.rsa_api_key, RSA["private_key_pem"], keys.rsa_passphrase)
    with httpx.Client(base_url=keys.base_url, auth=auth) as client:
        assert _bitget_ok(client.get(INFO))["userId"] == keys.bitget.uid
        assert _bitget_ok(client.get(SUB_LIST, params={"limit": 3}))["subAccountList"] is not None


def test_bitget_auth_shared_by_async_tasks_and_threads(keys: Keys) -> None:
    """One signer, many requests at once: POSTs are replay-protected, so two that carried one timestamp
    (and so one signature) would be refused; each gets its own."""
    key = keys.bitget
    auth = BitgetAuth(key.api_key, key.secret, key.passphrase)

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=keys.base_url, auth=auth) as client:
            gets = [client.get(INFO) for _ in range(6)]
            posts = [client.post(SUB_CREATE, json={"subAccountList": [h.new_name()]}) for _ in range(4)]
            return await asyncio.gather(*gets, *posts)

    for response in asyncio.run(run()):
        _bitget_ok(response)
    with httpx.Client(base_url=keys.base_url, auth=auth) as client, ThreadPoolExecutor(4) as pool:
        for response in pool.map(lambda _: client.get(INFO), range(12)):
            _bitget_ok(response)


def _refusal(response: httpx.Response) -> tuple[int, str, str]:
    h.RECORD.body(response.url.path, response.status_code, response.content)
    body = response.json()
    return response.status_code, body["code"], body["msg"]


def test_bitget_wrong_credentials_are_refused(keys: Keys) -> None:
    key = keys.bitget
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    cases = [
        (BitgetAuth(key.api_key, key.secret[:-1] + ("0" if key.secret[-1] != "0" else "1"), key.passphrase),
         (400, "40009", "sign signature error")),
        (BitgetAuth(key.api_key, key.secret, "wrong" + key.passphrase), (400, "40012", "apikey/password is incorrect")),
        (BitgetAuth.rsa(keys.rsa_api_key, other_rsa, keys.rsa_passphrase), (400, "40009", "sign signature error")),
        (BitgetAuth("bg_" + secrets.token_hex(16), key.secret, key.passphrase),
         (400, "40037", "Apikey does not exist")),
    ]
    for auth, expected in cases:
        with httpx.Client(base_url=keys.base_url, auth=auth) as client:
            assert _refusal(client.get(INFO)) == expected
            assert _refusal(client.post(SUB_CREATE, json={"subAccountList": [h.new_name()]})) == expected


# WhiteBIT -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [False, True], ids=["nonceWindow-false", "nonceWindow-true"])
def test_whitebit_auth_with_a_sync_client(keys: Keys, window: bool) -> None:
    auth = WhiteBITAuth(keys.whitebit_api_key, keys.whitebit_secret, nonce_window=window)
    with httpx.Client(base_url=keys.base_url, auth=auth) as client:
        alias = _new_alias()
        made = _whitebit_ok(client.post(WB_CREATE, json={"alias": alias, "email": "desk@example.com",
                                                     "permissions": {"spotEnabled": True, "collateralEnabled": False}}))
        assert made["alias"] == alias
        listed = _whitebit_ok(client.post(WB_LIST, json={"search": alias}))
        assert [entry["alias"] for entry in listed["data"]] == [alias]
        # a request's own nonceWindow overrides the signer's
        _whitebit_ok(client.post(WB_LIST, json={"limit": 1, "nonceWindow": not window}))


def test_whitebit_windowed_auth_shared_by_async_tasks_and_threads(keys: Keys) -> None:
    """Requests on one key at once arrive in any order: with nonce_window every one is taken."""
    auth = WhiteBITAuth(keys.whitebit_api_key, keys.whitebit_secret, nonce_window=True)

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=keys.base_url, auth=auth) as client:
            return await asyncio.gather(*(client.post(WB_LIST, json={"limit": 5}) for _ in range(12)))

    for response in asyncio.run(run()):
        _whitebit_ok(response)
    with httpx.Client(base_url=keys.base_url, auth=auth) as client, ThreadPoolExecutor(4) as pool:
        for response in pool.map(lambda _: client.post(WB_LIST, json={"limit": 5}), range(12)):
            _whitebit_ok(response)


def test_whitebit_wrong_secret_is_refused(keys: Keys) -> None:
    secret = keys.whitebit_secret
    wrong = WhiteBITAuth(keys.whitebit_api_key, secret[:-1] + ("0" if secret[-1] != "0" else "1"))
    with httpx.Client(base_url=keys.base_url, auth=wrong) as client:
        response = client.post(WB_LIST, json={"limit": 5})
    assert response.status_code == 401
    assert response.json() == {"code": 10, "message": "Unauthorized request.", "errors": {}}
