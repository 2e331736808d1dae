"""Two real ``keyplane serve`` nodes (two workers each) on PostgreSQL share a rate limit through a private
Redis: a caller hammering both stays within the documented bound; Redis stopped for real is no error (each node counts
alone), and when it starts again the nodes share the limit again without a restart."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from conftest import Server, make_server
from keyplane.ratelimit_redis import share_of
from outage_helpers import PrivateRedis

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

TOKEN = "ratelimit-test-token-0123456789"
LARGE, SMALL = 60, 3
ENDPOINTS = {
    "rules": [
        {"path": "/api/v2/spot/account/assets", "method": "GET", "permission": "read",
         "rate_limit": f"{LARGE}/second", "rate_name": "assets"},
        {"path": "/api/v2/spot/account/bills", "method": "GET", "permission": "read",
         "rate_limit": f"{SMALL}/second", "rate_name": "bills"},
    ]
}  # fmt: skip


def call(key: dict[str, Any], path: str) -> dict[str, Any]:
    """A Bitget GET signed now (valid for 30 s, no nonce: the same call may be sent again and again)."""
    timestamp = str(int(time.time() * 1000))
    query = "coin=USDT"
    message = f"{timestamp}GET{path}?{query}".encode()
    signature = base64.b64encode(hmac.new(key["secretKey"].encode(), message, hashlib.sha256).digest()).decode()
    headers = {"access-key": key["apiKey"], "access-sign": signature, "access-timestamp": timestamp,
               "access-passphrase": key["passphrase"]}  # fmt: skip
    return {"method": "GET", "uri": f"{path}?{query}", "headers": headers, "body": "", "client_ip": "127.0.0.1"}


def verify(client: httpx.Client, node: Server, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = client.post(node.base_url + "/v1/verify", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    return response.status_code, response.json() if response.status_code == 200 else {}


def hammer(nodes: list[Server], body: dict[str, Any], seconds: float) -> tuple[Counter[int], Counter[str]]:
    """Two threads per node send ``body`` for ``seconds``: valid answers per window (named by the reset
    time each node reports) and every answer's status or code."""
    valid: Counter[int] = Counter()
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    until = time.monotonic() + seconds

    def run(node: Server) -> None:
        with httpx.Client(timeout=10) as client:
            while time.monotonic() < until:
                status, out = verify(client, node, body)
                with lock:
                    codes[str(status) if status != 200 else out["code"]] += 1
                    if out.get("valid"):
                        valid[round(out["ratelimit"]["reset"] / 1000)] += 1

    threads = [threading.Thread(target=run, args=(node,)) for node in nodes for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return valid, codes


def test_two_nodes_share_limits_through_redis_and_survive_its_outage(
    pg_url: str, tmp_path: Path, private_redis: PrivateRedis
) -> None:
    store = private_redis
    env = {
        "KEYPLANE_REDIS_URL": store.url,
        "KEYPLANE_MASTER_KEY": "cd" * 32,
        "KEYPLANE_VERIFY_TOKEN": TOKEN,
        "KEYPLANE_ENDPOINTS": json.dumps(ENDPOINTS),
    }
    nodes = [make_server(tmp_path / f"node{i}", env) for i in range(2)]
    try:
        for node in nodes:
            node.database_url = pg_url
            node.serve_args = ("--workers", "2")  # four processes share the limit
            node.start()
        uid = nodes[0].main_account()
        key = nodes[0].bitget_main_key(uid, "--perm", "read")

        # a small limit is exact: 3 a second whichever node is asked
        bills = call(key, "/api/v2/spot/account/bills")
        with httpx.Client(timeout=10) as client:
            time.sleep(1 - time.time() % 1)  # a moving window: start clear of the first key's warm-up
            codes = [verify(client, nodes[i % 2], bills)[1]["code"] for i in range(5)]
        assert codes == ["VALID"] * SMALL + ["RATE_LIMITED"] * 2

        # a large limit, hammered on both nodes for three windows: within N + 4·N/40 per window
        valid, answers = hammer(nodes, call(key, "/api/v2/spot/account/assets"), 3.2)
        assert set(answers) == {"VALID", "RATE_LIMITED"}, answers
        assert answers["RATE_LIMITED"] > answers["VALID"]  # the caller did outrun its limit
        bound = LARGE + 4 * share_of(LARGE)
        assert bound <= 1.1 * LARGE
        assert max(valid.values()) <= bound, valid
        whole = sorted(valid)[1:-1]  # windows hammered from start to end
        assert whole and all(valid[w] >= 0.8 * LARGE for w in whole), valid
        shared = redis.Redis.from_url(store.url)
        assert shared.keys(f"kp:rl:{LARGE}/second:bitget:assets:{uid}:*")

        # Redis stopped: every answer is still a verdict (no 5xx); each node counts the full N alone
        store.stop()
        valid, answers = hammer(nodes, call(key, "/api/v2/spot/account/assets"), 2.2)
        assert set(answers) <= {"VALID", "RATE_LIMITED"}, answers
        assert answers["VALID"] > 0
        # per process: N each, in fixed windows of its own that are not aligned to the clock's seconds, so
        # one clock second may see up to 2N of each process (across a window's edge, as documented)
        assert max(valid.values()) <= 2 * 4 * LARGE, valid

        # Redis back: shared again, without restarting either node
        store.start()
        time.sleep(1.5)  # each node's lease thread pings twice a second
        valid, answers = hammer(nodes, call(key, "/api/v2/spot/account/assets"), 2.2)
        assert set(answers) == {"VALID", "RATE_LIMITED"}, answers
        assert max(valid.values()) <= bound, valid
        assert shared.keys(f"kp:rl:{LARGE}/second:bitget:assets:{uid}:*")
        logs = "".join(node.log_path.read_text() for node in nodes)
        assert logs.count("Redis unreachable") >= 1 and "answers again" in logs
        assert store.url not in logs
    finally:
        for node in nodes:
            node.stop()
