"""Whatever a signed client sends to a Bitget route, the answer is Bitget's envelope with a documented
code, never a server error (hypothesis drives real requests against a real server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bitget_helpers as h
from conftest import Server, make_server

UNLIMITED = {"bitget": {"rate_limits": {name: "100000/second" for name in (
    "batch-create-subaccount-and-apikey", "create-virtual-subaccount", "modify-virtual-subaccount",
    "create-virtual-subaccount-apikey", "modify-virtual-subaccount-apikey", "virtual-subaccount-list",
    "virtual-subaccount-apikey-list", "account-info")}}}

FIELDS = ["subAccountList", "subAccountUid", "subAccountName", "subAccountApiKey", "passphrase", "label", "ipList",
          "permList", "status", "limit", "idLessThan"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=40),
    st.sampled_from(["abcdefgh", "abcd1234", "127.0.0.1", "10.0.0.0/8", "::1", "spot_trade", "read", "normal",
                     "freeze", "1000000002", "", "\u00b2", "1\u00b2"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                       st.dictionaries(st.sampled_from(FIELDS), inner, max_size=6)),
                      max_leaves=20)
objects = st.dictionaries(st.sampled_from(FIELDS), values, max_size=7)
bodies = st.one_of(objects, st.lists(objects, max_size=6), values)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = h.track(make_server(tmp_path_factory.mktemp("bitget-fuzz"), {"KEYPLANE_POLICY": json.dumps(UNLIMITED)}))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def raw(server: Server) -> Iterator[h.Raw]:
    client = h.raw_main(server, h.main_key(server))
    # a few real sub-accounts and keys, so that some fuzzed UIDs and keys exist
    h.assert_ok(client.post("batch-create-subaccount-and-apikey", [h.batch_entry() for _ in range(3)]))
    yield client
    client.close()


def _assert_bitget_answer(response: Any) -> None:
    assert response.status_code in (200, 400, 404), response.text
    body = response.json()
    assert isinstance(body["code"], str) and isinstance(body["msg"], str)
    assert (body["code"] == "00000") is (response.status_code == 200)


POSTS = ["create-virtual-subaccount", "modify-virtual-subaccount", "batch-create-subaccount-and-apikey",
         "create-virtual-subaccount-apikey", "modify-virtual-subaccount-apikey"]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("name", POSTS)
@FUZZ
@given(body=bodies)
def test_no_json_body_makes_a_server_error(raw: h.Raw, name: str, body: Any) -> None:
    _assert_bitget_answer(raw.post(name, json.dumps(body)))


@pytest.mark.parametrize("name", ["virtual-subaccount-list", "virtual-subaccount-apikey-list"])
@FUZZ
@given(params=st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=20), max_size=4))
def test_no_query_makes_a_server_error(raw: h.Raw, name: str, params: dict[str, str]) -> None:
    query = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in sorted(params.items()))
    _assert_bitget_answer(raw.get(name, query, signed_query=unquote(query)))


# what a header may carry on the wire: visible ASCII and latin-1's upper half (obs-text)
header_text = st.text(alphabet=st.one_of(st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                                         st.characters(min_codepoint=0x80, max_codepoint=0xFF)), max_size=40)


@FUZZ
@given(timestamp=header_text, passphrase=header_text, key=header_text)
def test_no_header_value_makes_a_server_error(raw: h.Raw, timestamp: str, passphrase: str, key: str) -> None:
    def latin1(text: str) -> bytes:
        return text.encode("latin-1")

    headers = {"ACCESS-KEY": latin1(key or "k"), "ACCESS-SIGN": b"x", "ACCESS-TIMESTAMP": latin1(timestamp or "1"),
               "ACCESS-PASSPHRASE": latin1(passphrase or "p")}
    response = raw.http.get("/api/v2/spot/account/info", headers=headers)  # type: ignore[arg-type]
    _assert_bitget_answer(response)
