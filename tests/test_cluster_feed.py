"""Two ``keyplane serve`` nodes on one PostgreSQL schema, with and without Redis: every committed change of a
key or its account reaches both nodes (none skipped), and bench/propagation.py measures how fast.

16 keys change at once, from two other processes' services (as other nodes or the CLI would), round after
round; after each round both nodes must answer by every key's new IP list within 2 s (the cache's TTL
backstop is 30 s, so only the change feed can bring it). Then half the keys' accounts are frozen and the
other half revoked, all at once: both nodes refuse all of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Server, make_server
from keyplane.config import Settings
from keyplane.domain.model import AccountStatus, Scheme
from keyplane.runtime import Runtime, build_runtime
from keyplane.services import Actor, NewKeySpec

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from propagation import ALLOWED, PASSPHRASE, REFUSED, allowed_on  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"
MASTER_KEY = "5e" * 32
TOKEN = "cluster-feed-token-0123456789"
KEYS = 16
ROUNDS = 6
SEEN_WITHIN = 2.0

pytestmark = [pytest.mark.postgres]


class Cluster:
    def __init__(self, nodes: list[Server], changers: list[Runtime], redis_url: str | None) -> None:
        self.nodes = nodes
        self.changers = changers
        self.redis_url = redis_url
        self.client = httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)

    def wait_all(self, keys: list[tuple[str, str]], expect: list[bool]) -> None:
        """Every node answers every key as ``expect`` says, within SEEN_WITHIN seconds."""
        pending = {(i, node.base_url) for i in range(len(keys)) for node in self.nodes}
        deadline = time.monotonic() + SEEN_WITHIN
        while pending and time.monotonic() < deadline:
            for i, node in sorted(pending):
                if allowed_on(self.client, node, *keys[i]) is expect[i]:
                    pending.discard((i, node))
        assert not pending, f"changes not seen within {SEEN_WITHIN} s (key, node): {sorted(pending)}"


@pytest.fixture(params=["postgres", "postgres+redis"])
def cluster(request: pytest.FixtureRequest, pg_url: str, tmp_path: Path) -> Iterator[Cluster]:
    redis_url = REDIS_URL if request.param.endswith("redis") else None
    env = {"KEYPLANE_MASTER_KEY": MASTER_KEY, "KEYPLANE_VERIFY_TOKEN": TOKEN}
    if redis_url:
        env["KEYPLANE_REDIS_URL"] = redis_url
    settings = Settings(database_url=pg_url, master_key=MASTER_KEY, redis_url=redis_url)
    changers = [build_runtime(settings), build_runtime(settings)]  # migrates once, before the nodes start
    nodes: list[Server] = []
    try:
        for n in range(2):
            node = make_server(tmp_path / f"node{n}", env)
            node.database_url = pg_url
            nodes.append(node)
            node.start()
        cluster = Cluster(nodes, changers, redis_url)
        yield cluster
        cluster.client.close()
    finally:
        for node in nodes:
            node.stop()
        for changer in changers:
            changer.close()


def _concurrently(jobs: list[Any]) -> None:
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(job: Any) -> None:
        barrier.wait()
        try:
            job()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_every_concurrent_change_reaches_both_nodes(cluster: Cluster) -> None:
    service = cluster.changers[0].service
    actor = Actor(account=service.accounts.create_main_account("venue"))
    subs, issued = [], []
    for n in range(KEYS):
        sub = service.subaccounts.create_sub_account(actor, Scheme.BITGET, name=f"feedsub{n:02d}")
        subs.append(sub)
        issued.append(service.keys.create_sub_key(
            actor, Scheme.BITGET, NewKeySpec(label="k", passphrase=PASSPHRASE, permissions=("read",),
                                             ip_list=ALLOWED), uid=sub.uid,
        ))
    keys = [(i.key.api_key, i.secret or "") for i in issued]
    cluster.wait_all(keys, [True] * KEYS)  # cached on both nodes

    for round_ in range(ROUNDS):
        allow = round_ % 2 == 1

        def change(n: int, allow: bool = allow) -> None:
            cluster.changers[n % 2].service.keys.modify_sub_key(
                actor, key_id=issued[n].key.id, ip_list=ALLOWED if allow else REFUSED
            )

        _concurrently([lambda n=n: change(n) for n in range(KEYS)])
        cluster.wait_all(keys, [allow] * KEYS)

    if ROUNDS % 2 == 1:  # all allowed again, and cached so, before the last round
        _concurrently([lambda n=n: cluster.changers[n % 2].service.keys.modify_sub_key(
            actor, key_id=issued[n].key.id, ip_list=ALLOWED) for n in range(KEYS)])
    cluster.wait_all(keys, [True] * KEYS)

    def end(n: int) -> None:
        other = cluster.changers[n % 2].service
        if n % 2:
            other.subaccounts.set_sub_account_status(actor, AccountStatus.FREEZE, uid=subs[n].uid)
        else:
            other.keys.delete_sub_key(actor, key_id=issued[n].key.id)

    _concurrently([lambda n=n: end(n) for n in range(KEYS)])
    cluster.wait_all(keys, [False] * KEYS)


def test_propagation_bench_measures_both_nodes(cluster: Cluster, pg_url: str) -> None:
    args = [sys.executable, str(BENCH / "propagation.py"), "--database", pg_url, "--rounds", "20",
            "--nodes", ",".join(node.base_url for node in cluster.nodes), "--token", TOKEN,
            "--master-key", MASTER_KEY]
    if cluster.redis_url:
        args += ["--redis", cluster.redis_url]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    print(figures)
    assert figures["bench"] == "propagation" and figures["redis"] is bool(cluster.redis_url)
    for node in cluster.nodes:
        assert figures["nodes"][node.base_url]["n"] == 20
    assert figures["all"]["max_ms"] < 1000  # the target without Redis; with it, 100 ms p99 (bench/README)
