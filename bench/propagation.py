"""Propagation latency: how long after a key change commits until each running node answers by it.

The nodes are running ``keyplane serve`` processes on one database (``bench/cluster.py`` starts them; or
any you started). This process makes the changes itself, as another node or the ``keyplane`` command would:
its own service on the same database, publishing on Redis too when ``--redis`` is given. Each round flips
one sub-account key's IP allowlist between allowing and refusing 127.0.0.1, stamps the moment the
transaction committed, and has one thread per node ask ``POST /v1/verify`` in a loop until that node
answers by the new list. The latency is commit → first answer by the change, per node (p50/p99/max);
an answer's resolution is one /v1/verify round trip (~1 ms).

    python bench/propagation.py --database postgresql://... --nodes http://127.0.0.1:8081,http://127.0.0.1:8082 \\
        [--redis redis://127.0.0.1:6379/0] [--token TOKEN] [--master-key HEX] [--rounds 200]

The nodes and this process must share the master key (``--master-key`` or KEYPLANE_MASTER_KEY /
KEYPLANE_MASTER_KEY_FILE) and, if the nodes set one, the verify token (``--token`` or
KEYPLANE_VERIFY_TOKEN). From Python: ``measure(...)`` returns the same figures as a dict.
Prints one JSON line: {"bench": "propagation", "redis": ..., "rounds": N, "nodes": {url: {p50_ms, p99_ms,
max_ms}}, "all": {...}, "verify_round_trip": {...}}; the last is an unchanged /v1/verify's own time, the
floor under every latency here.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402

from keyplane import crypto  # noqa: E402
from keyplane.auth.invalidation import RedisInvalidationBus  # noqa: E402
from keyplane.domain.model import Scheme  # noqa: E402
from keyplane.services import Actor, KeyplaneService, NewKeySpec  # noqa: E402
from keyplane.store import Store  # noqa: E402

PATH = "/api/v2/spot/account/assets"
PASSPHRASE = "propagate1"
ALLOWED, REFUSED = ("127.0.0.1",), ("10.255.255.1",)


def verify_call(api_key: str, secret: str, client_ip: str = "127.0.0.1") -> dict[str, Any]:
    """A fresh Bitget-signed GET (no replay guard on a GET), as /v1/verify takes it."""
    timestamp = str(int(time.time() * 1000))
    digest = hmac.new(secret.encode(), f"{timestamp}GET{PATH}".encode(), hashlib.sha256).digest()
    headers = {"ACCESS-KEY": api_key, "ACCESS-SIGN": base64.b64encode(digest).decode(),
               "ACCESS-TIMESTAMP": timestamp, "ACCESS-PASSPHRASE": PASSPHRASE}
    return {"method": "GET", "path": PATH, "headers": headers, "client_ip": client_ip}


def allowed_on(client: httpx.Client, node: str, api_key: str, secret: str) -> bool | None:
    """True if the node lets 127.0.0.1 use the key, False if it refuses it for its IP list (or because the key
    or its account is gone or frozen), None for any other answer (it does not tell)."""
    answer = client.post(node + "/v1/verify", json=verify_call(api_key, secret)).json()
    code = answer.get("code")
    if answer.get("valid") or code == "RATE_LIMITED":  # the rate limit is checked after the IP list
        return True
    if code in ("IP_NOT_ALLOWED", "UNKNOWN_KEY", "ACCOUNT_FROZEN", "KEY_DISABLED"):
        return False
    return None


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {"n": 0}
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(p99 * 1000, 2), "max_ms": round(ordered[-1] * 1000, 2)}


class _Changer:
    """This process's own service on the nodes' database; ``committed_at`` is stamped right after each commit,
    before the Redis publish (which then runs as on a node)."""

    def __init__(self, database_url: str, master_key: crypto.MasterKeyRing, redis_url: str | None) -> None:
        self.store = Store(database_url)
        self.service = KeyplaneService(self.store, master_key)
        self.committed_at = 0.0
        self.store.on_keys_changed(self._stamp)
        self.bus = None
        if redis_url:
            self.bus = RedisInvalidationBus(redis_url, lambda _keys: None, lambda: None)
            self.store.on_keys_changed(self.bus.publish)

    def _stamp(self, _keys: object) -> None:
        self.committed_at = time.perf_counter()

    def close(self) -> None:
        if self.bus is not None:
            self.bus.close()
        self.store.close()


def measure(
    database_url: str,
    nodes: list[str],
    *,
    master_key: crypto.MasterKeyRing,
    redis_url: str | None = None,
    token: str | None = None,
    rounds: int = 100,
    timeout: float = 10.0,
) -> dict[str, Any]:
    changer = _Changer(database_url, master_key, redis_url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    clients = {node: httpx.Client(headers=headers, timeout=5) for node in nodes}
    samples: dict[str, list[float]] = {node: [] for node in nodes}
    # one unchanged /v1/verify per node and round, timed: a latency can only be read against this
    round_trips: dict[str, list[float]] = {node: [] for node in nodes}
    try:
        service = changer.service
        main = service.accounts.create_main_account(f"propagation-{os.getpid()}-{time.time_ns()}")
        actor = Actor(account=main)
        sub = service.subaccounts.create_sub_account(actor, Scheme.BITGET, name=f"prop{time.time_ns() % 10**12}")
        issued = service.keys.create_sub_key(
            actor, Scheme.BITGET, NewKeySpec(label="p", passphrase=PASSPHRASE, permissions=("read",),
                                             ip_list=ALLOWED), uid=sub.uid,
        )
        api_key, secret = issued.key.api_key, issued.secret or ""
        for node in nodes:  # cached on every node before the first change
            deadline = time.monotonic() + timeout
            while allowed_on(clients[node], node, api_key, secret) is not True:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node} never accepted the new key")
        for round_ in range(rounds):
            expect = round_ % 2 == 1  # even rounds refuse 127.0.0.1, odd rounds allow it again
            go = threading.Event()
            done: list[threading.Thread] = []

            def follow(node: str, expect: bool = expect, go: threading.Event = go) -> None:
                sent = time.perf_counter()
                if allowed_on(clients[node], node, api_key, secret) is expect:
                    raise RuntimeError(f"{node} answered by a change not made yet")
                round_trips[node].append(time.perf_counter() - sent)
                go.wait()
                started = changer.committed_at
                deadline = time.monotonic() + timeout
                while allowed_on(clients[node], node, api_key, secret) is not expect:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{node} did not see a change within {timeout} s")
                samples[node].append(time.perf_counter() - started)

            for node in nodes:
                thread = threading.Thread(target=follow, args=(node,))
                thread.start()
                done.append(thread)
            while any(len(found) != round_ + 1 for found in round_trips.values()) and any(
                t.is_alive() for t in done
            ):
                time.sleep(0.001)
            service.keys.modify_sub_key(actor, key_id=issued.key.id, ip_list=ALLOWED if expect else REFUSED)
            go.set()
            for thread in done:
                thread.join()
            if any(len(found) != round_ + 1 for found in samples.values()):
                raise RuntimeError("a node did not see a change")
    finally:
        for client in clients.values():
            client.close()
        changer.close()
    return {
        "bench": "propagation",
        "redis": bool(redis_url),
        "rounds": rounds,
        "nodes": {node: percentiles(found) for node, found in samples.items()},
        "all": percentiles([s for found in samples.values() for s in found]),
        "verify_round_trip": percentiles([s for found in round_trips.values() for s in found]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default=os.environ.get("KEYPLANE_DATABASE_URL"), required=False)
    parser.add_argument("--nodes", required=True, help="comma-separated base URLs of the running nodes")
    parser.add_argument("--redis", default=None, help="publish on Redis as the nodes do (their KEYPLANE_REDIS_URL)")
    parser.add_argument("--token", default=os.environ.get("KEYPLANE_VERIFY_TOKEN"))
    parser.add_argument("--master-key", default=os.environ.get("KEYPLANE_MASTER_KEY"))
    parser.add_argument("--master-key-file", default=os.environ.get("KEYPLANE_MASTER_KEY_FILE"))
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    if not args.database:
        parser.error("--database (or KEYPLANE_DATABASE_URL) is required")
    ring = crypto.MasterKeyRing(args.master_key, Path(args.master_key_file) if args.master_key_file else None)
    figures = measure(
        args.database, [n.strip() for n in args.nodes.split(",") if n.strip()], master_key=ring,
        redis_url=args.redis, token=args.token, rounds=args.rounds,
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
