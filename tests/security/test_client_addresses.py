"""Client addresses (issue 8, item 5): ``KEYPLANE_TRUSTED_PROXIES`` holds CIDR ranges (plain addresses
too); ``X-Forwarded-For`` is read right to left, taking the first address that is not a trusted proxy;
``X-Real-IP`` is believed only from a trusted peer and only if it is an address; a malformed entry stops
the server at start with one line. Over HTTP against a real ``keyplane serve``, with keys bound to an IP.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from attack import bitget_answer, bitget_headers, raw_http

from conftest import KEYPLANE, Server, make_server
from keyplane.domain.ipnet import TrustedProxies

INFO = "/api/v2/spot/account/info"
CLIENT = "203.0.113.7"
INVALID_IP = (400, {"code": "40018", "msg": "Invalid IP", "data": None})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # the test client connects from 127.0.0.1: a trusted proxy by range; 10.0.0.0/8 stands for more hops
    srv = make_server(tmp_path_factory.mktemp("proxies"), {"KEYPLANE_TRUSTED_PROXIES": "127.0.0.0/8, 10.0.0.0/8"})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def key(server: Server) -> dict[str, Any]:
    uid = server.main_account("proxied")
    return server.bitget_main_key(uid, ips=(CLIENT,))


def account_info(server: Server, key: dict[str, Any], **forwarding: str) -> tuple[int, dict[str, Any]]:
    headers = bitget_headers(key, "GET", INFO) | forwarding
    return bitget_answer(raw_http(server.base_url, b"GET", INFO.encode(), headers))


@pytest.mark.parametrize(
    "forwarding",
    [
        {"X-Forwarded-For": CLIENT},
        {"X-Forwarded-For": f"{CLIENT}, 10.1.2.3"},  # one more trusted hop, skipped
        {"X-Forwarded-For": f"198.51.100.1, {CLIENT}, 10.1.2.3, 127.0.0.9"},  # left of the client: not read
        {"X-Forwarded-For": f"not-an-ip, {CLIENT}"},
        {"X-Forwarded-For": f" {CLIENT} "},
        {"X-Real-IP": CLIENT},
        {"X-Real-IP": "garbage", "X-Forwarded-For": CLIENT},  # an unreadable X-Real-IP is ignored
        {"X-Real-IP": "", "X-Forwarded-For": CLIENT},
        {"X-Forwarded-For": f"::ffff:{CLIENT}"},
    ],
)
def test_the_client_behind_trusted_proxies_is_found(
    server: Server, key: dict[str, Any], forwarding: dict[str, str]
) -> None:
    status, body = account_info(server, key, **forwarding)
    assert status == 200 and body["code"] == "00000", (forwarding, body)


@pytest.mark.parametrize(
    "forwarding",
    [
        {},
        {"X-Forwarded-For": f"{CLIENT}, 198.51.100.1"},  # the client forged the left part: 198.51.100.1 is it
        {"X-Forwarded-For": f"{CLIENT},198.51.100.1, 10.0.0.1"},
        {"X-Forwarded-For": f"{CLIENT}, garbage"},  # unreadable hop: stop at the last hop vouched for (the peer)
        {"X-Forwarded-For": f"{CLIENT}/32"},
        {"X-Real-IP": "203.0.113.0/24"},
        {"X-Real-IP": f"{CLIENT}, 1.2.3.4"},
    ],
)
def test_a_forged_client_address_is_not_believed(
    server: Server, key: dict[str, Any], forwarding: dict[str, str]
) -> None:
    assert account_info(server, key, **forwarding) == INVALID_IP, forwarding


def test_an_untrusted_peer_is_the_client_whatever_it_says(tmp_path: Path) -> None:
    server = make_server(tmp_path, {"KEYPLANE_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1"})  # not 127.0.0.1
    server.start()
    try:
        uid = server.main_account("direct")
        key = server.bitget_main_key(uid, ips=(CLIENT,))
        for forwarding in ({"X-Forwarded-For": CLIENT}, {"X-Real-IP": CLIENT}):
            assert account_info(server, key, **forwarding) == INVALID_IP
        near = server.bitget_main_key(uid, ips=("127.0.0.1",))
        assert account_info(server, near, **{"X-Forwarded-For": CLIENT})[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "not-an-ip", "10.0.0.1/8x", "127.0.0.1,,300.1.1.1", "::1/129"])
def test_a_malformed_trusted_proxy_stops_the_start_with_one_line(tmp_path: Path, entry: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    env["KEYPLANE_TRUSTED_PROXIES"] = entry
    result = subprocess.run([*KEYPLANE, "serve", "--port", "1"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "KEYPLANE_TRUSTED_PROXIES" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_trusted_proxies_unit() -> None:
    proxies = TrustedProxies.parse(" 10.0.0.0/8, 192.0.2.1 ,fd00::/8 ")
    assert proxies.trusts("10.255.0.1") and proxies.trusts("192.0.2.1") and proxies.trusts("fd00::1")
    assert proxies.trusts("::ffff:10.0.0.1")  # an IPv4-mapped peer is its IPv4 address
    assert not proxies.trusts("192.0.2.2") and not proxies.trusts("11.0.0.1") and not proxies.trusts("junk")
    peer = "10.0.0.5"
    assert proxies.client_ip(peer, None, None) == peer
    assert proxies.client_ip(peer, None, "1.1.1.1, 2.2.2.2, 10.0.0.7") == "2.2.2.2"
    assert proxies.client_ip(peer, None, "10.0.0.8,10.0.0.7") == "10.0.0.8"  # all trusted: the farthest
    assert proxies.client_ip(peer, None, "2.2.2.2, x") == peer
    assert proxies.client_ip(peer, "3.3.3.3", "2.2.2.2") == "3.3.3.3"
    assert proxies.client_ip(peer, "3.3.3.3x", "2.2.2.2") == "2.2.2.2"
    assert proxies.client_ip("8.8.8.8", "3.3.3.3", "2.2.2.2") == "8.8.8.8"  # an untrusted peer
    assert proxies.client_ip(peer, None, "2001:DB8::1") == "2001:db8::1"
    # forms a proxy never writes (ports, brackets): no hop is vouched for past them
    for hop in ("2.2.2.2:4444", "[2001:db8::1]:443", "[2001:db8::1]", "2.2.2.2 4.4.4.4", "0x02020202", "2.2.2"):
        assert proxies.client_ip(peer, None, hop) == peer, hop
        assert proxies.client_ip(peer, None, f"9.9.9.9, {hop}") == peer, hop
    # an IPv4-mapped hop is its IPv4 address, trusted or not as that address
    assert proxies.client_ip(peer, None, "2.2.2.2, ::ffff:10.0.0.9") == "2.2.2.2"
    assert proxies.client_ip(peer, None, "::ffff:2.2.2.2") == "2.2.2.2"
    # two X-Real-IP lines reach the app joined ("a, b", http.decode_headers): not an address, so unused
    assert proxies.client_ip(peer, "3.3.3.3, 4.4.4.4", "2.2.2.2") == "2.2.2.2"
    assert not TrustedProxies.parse("") and not TrustedProxies()
    with pytest.raises(ValueError, match="KEYPLANE_TRUSTED_PROXIES"):
        TrustedProxies.parse("10.0.0.0/8, bogus")
