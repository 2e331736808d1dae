"""Outages of PostgreSQL and Redis are answers, not errors (issue 9, item 3).

Two ``keyplane serve`` processes share a private PostgreSQL and a private Redis (tests/outage_helpers.py),
which are stopped and started for real; the machine's own servers stay up for the rest of the suite.
With Redis down, cached keys verify (rate limits counted per process) and management calls commit and
succeed; with PostgreSQL down, what cannot be decided without it (an uncached key, a nonce) is refused
with each dialect's 503-class error, cached keys keep verifying, management answers 503 and commits
nothing. No 5xx other than those documented 503s, no false VALID, and everything recovers without a
restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from clients.whitebit_http import WhitebitClient
from conftest import KEYPLANE, Server, make_server
from keyplane import crypto, errors
from keyplane.auth import Reason, Requirement, SignedRequest, Verifier
from keyplane.auth.invalidation import CHANNEL
from keyplane.config import Settings
from keyplane.domain.model import Scheme
from keyplane.outages import unavailable
from keyplane.runtime import Runtime, build_runtime
from keyplane.services import KeyplaneService
from keyplane.store import Store
from keyplane.store.tables import accounts, api_keys
from outage_helpers import PrivatePostgres, PrivateRedis, _port_open

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

# Endpoints without a rate limit: what they verify never needs Redis (the rate-limited ones are checked too).
ENDPOINTS = json.dumps({"rules": [
    {"path": "/api/v2/outage/*", "method": "GET", "permission": "read", "rate_limit": None},
    {"path": "/api/v4/outage/*", "method": "POST", "key_type": 1, "rate_limit": None},
]})
UNLIMITED_BG = "/api/v2/outage/ping"
LIMITED_BG = "/api/v2/spot/account/assets"
UNLIMITED_WB = "/api/v4/outage/ping"
VERIFY_TOKEN = "outage-verify-token-0123456789"  # /v1/ is closed without one

BITGET_503 = ("40015", "System is abnormal, please try again later")
WHITEBIT_503 = {
    "response": None, "status": 503, "errors": {"message": [""]}, "notification": None, "warning": None,
    "_token": None,
}


def test_private_instances_stop_and_start_for_real(private_postgres: PrivatePostgres, private_redis: Any) -> None:
    url = private_postgres.url.replace("postgresql://", "postgresql+psycopg://")
    engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        for _ in range(2):
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT 1").scalar() == 1
            private_postgres.stop()
            private_redis.stop()
            assert not private_postgres.running and not private_redis.running
            with pytest.raises(sa.exc.OperationalError), engine.connect():
                pass
            assert _port_open(5432) and _port_open(6379)  # the machine's own servers are untouched
            private_postgres.start()
            private_redis.start()
            assert private_postgres.running and private_redis.running
    finally:
        engine.dispose()


# in-process: the verifier and the store ----------------------------------------------------------------


def signed_bitget(key: dict[str, Any], path: str = UNLIMITED_BG) -> SignedRequest:
    headers = {name.lower(): value for name, value in bitget_headers(key, "GET", path).items()}
    return SignedRequest("GET", path, "", headers, b"", "127.0.0.1")


def test_verifier_never_raises_when_the_store_is_down(private_postgres: PrivatePostgres) -> None:
    store = Store(private_postgres.new_database())
    store.migrate()
    master = crypto.MasterKey(b"o" * 32)
    service = KeyplaneService(store, master)
    uid = service.accounts.create_main_account("inproc-" + uuid.uuid4().hex[:8]).uid
    keys = []
    for _ in range(2):
        issued = service.keys.issue_main_key(uid, Scheme.BITGET, permissions=("read",), ip_list=("127.0.0.1",))
        keys.append({"apiKey": issued.key.api_key, "secretKey": issued.secret, "passphrase": issued.passphrase})
    cached, uncached = keys
    verifier = Verifier(store, master)
    need = Requirement(permission="read")
    try:
        assert verifier.verify(signed_bitget(cached), need, Scheme.BITGET).valid
        private_postgres.stop()
        try:
            assert verifier.verify(signed_bitget(cached), need, Scheme.BITGET).valid
            result = verifier.verify(signed_bitget(uncached), need, Scheme.BITGET)
            assert result.reason is Reason.UNAVAILABLE and not result.valid
            # the scheme detected from the headers: the same result, never an exception
            assert verifier.verify(signed_bitget(uncached), need).reason is Reason.UNAVAILABLE
            # what a management call meets: the driver's error, which the edges turn into Unavailable
            with pytest.raises(sa.exc.OperationalError) as raised:
                service.keys.revoke_key(uncached["apiKey"])
            outage = unavailable(raised.value)
            assert isinstance(outage, errors.Unavailable)
            assert outage.message.startswith("the database is unavailable: OperationalError")
        finally:
            private_postgres.start()
        # the pool's stale connections are replaced on checkout: the first call after the restart works
        assert verifier.verify(signed_bitget(uncached), need, Scheme.BITGET).valid
    finally:
        verifier.close()
        store.close()


def test_a_failing_listener_does_not_fail_a_committed_change(private_postgres: PrivatePostgres) -> None:
    """The Redis publish after a commit fails with Redis down: the change stays committed and answered."""
    store = Store(private_postgres.new_database())
    store.migrate()
    service = KeyplaneService(store, crypto.MasterKey(b"o" * 32))
    heard: list[str] = []

    def publish(_keys: Any) -> None:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    service.on_keys_changed(publish)
    service.on_keys_changed(heard.extend)  # a later listener still hears of it
    try:
        uid = service.accounts.create_main_account("listen-" + uuid.uuid4().hex[:8]).uid
        issued = service.keys.issue_main_key(uid, Scheme.WHITEBIT)
        revoked = service.keys.revoke_key(issued.key.api_key)
        assert revoked.api_key == issued.key.api_key and heard == [issued.key.api_key]
        with store.reading() as tx:
            assert tx.find_api_key(issued.key.api_key) is None
            assert issued.key.api_key in [key for _id, key in tx.key_changes_after(0)]
    finally:
        store.close()


def test_outage_errors_are_recognised_and_others_are_not() -> None:
    assert unavailable(redis.ConnectionError("refused")) is not None
    assert unavailable(redis.TimeoutError("slow")) is not None
    assert unavailable(sa.exc.TimeoutError("pool")) is not None
    assert unavailable(ValueError("a bug")) is None
    assert unavailable(sa.exc.IntegrityError("INSERT", {}, Exception("duplicate"))) is None
    assert unavailable(redis.ResponseError("WRONGTYPE")) is None


# the cluster ------------------------------------------------------------------------------------------


@dataclass
class Cluster:
    pg: PrivatePostgres
    redis: PrivateRedis
    nodes: list[Server]
    ops: Runtime  # the test's own view of the store (no Redis): setup and the committed-or-not checks
    env: dict[str, str]
    main_uid: str = ""
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    url: str = ""  # the cluster's own database in the private PostgreSQL
    wb_key_id: str = ""  # a WhiteBIT sub-account key whose IP list management calls change

    def engine(self) -> sa.Engine:
        return self.ops.store.engine

    def account_named(self, name: str) -> bool:
        with self.engine().connect() as conn:
            return conn.execute(sa.select(accounts.c.uid).where(accounts.c.name == name)).first() is not None

    def ip_list(self, key_id: str) -> list[str]:
        with self.engine().connect() as conn:
            return list(conn.execute(sa.select(api_keys.c.ip_list).where(api_keys.c.id == key_id)).scalar_one())

    def key_exists(self, api_key: str) -> bool:
        with self.engine().connect() as conn:
            return conn.execute(sa.select(api_keys.c.id).where(api_keys.c.api_key == api_key)).first() is not None

    def cli(self, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        done = subprocess.run(
            [*KEYPLANE, *args, "--database", self.url], capture_output=True, text=True, env=self.env,
            cwd=self.nodes[0].workdir, timeout=60,
        )
        return done, time.monotonic() - started


@pytest.fixture(scope="module")
def cluster(
    private_postgres: PrivatePostgres, private_redis: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    master = crypto.new_master_key_text()
    url = private_postgres.new_database()  # its own: the store records the master key that sealed it
    ops = build_runtime(Settings(database_url=url, master_key=master))  # migrates once
    env = {
        "KEYPLANE_MASTER_KEY": master, "KEYPLANE_REDIS_URL": private_redis.url, "KEYPLANE_ENDPOINTS": ENDPOINTS,
        "KEYPLANE_VERIFY_TOKEN": VERIFY_TOKEN,
    }
    root = tmp_path_factory.mktemp("outages")
    nodes = []
    for name in ("a", "b"):
        node = make_server(root / name, env)
        node.database_url = url
        nodes.append(node)
    cluster = Cluster(private_postgres, private_redis, nodes, ops, {**nodes[0].env}, url=url)
    try:
        for node in nodes:
            node.start()
        uid = str(ops.service.accounts.create_main_account("outage-venue").uid)
        cluster.main_uid = uid
        perms = ("read", "spot_trade", "margin_trade", "contract_trade", "transfer")
        for name in ("main", "cached", "uncached", "revoked", "cli", "inproc"):
            issued = ops.service.keys.issue_main_key(int(uid), Scheme.BITGET, permissions=perms, ip_list=("127.0.0.1",))
            cluster.keys[name] = {"apiKey": issued.key.api_key, "secretKey": issued.secret,
                                  "passphrase": issued.passphrase}
        issued = ops.service.keys.issue_main_key(int(uid), Scheme.WHITEBIT)
        cluster.keys["wb"] = {"apiKey": issued.key.api_key, "apiSecret": issued.secret}
        wb = whitebit(cluster, nodes[0])
        sub = wb.call("/api/v4/sub-account/create", {"alias": "outagesub", "shareKyc": True,
                      "permissions": {"spotEnabled": True, "collateralEnabled": False}}, expect=201)
        key = wb.call("/api/v4/sub-account/api-key/create", {"subAccountId": sub["id"], "type": 1,
                      "title": "ips"}, expect=201)
        cluster.wb_key_id = key["id"]
        yield cluster
    finally:
        for node in nodes:
            node.stop()
        ops.close()


# signing and calls ----------------------------------------------------------------------------------


def bitget_headers(key: dict[str, Any], method: str, path: str, body: str = "") -> dict[str, str]:
    timestamp = str(int(time.time() * 1000))
    digest = hmac.new(key["secretKey"].encode(), (timestamp + method + path + body).encode(), hashlib.sha256)
    return {
        "ACCESS-KEY": key["apiKey"], "ACCESS-SIGN": base64.b64encode(digest.digest()).decode(),
        "ACCESS-TIMESTAMP": timestamp, "ACCESS-PASSPHRASE": key["passphrase"], "Content-Type": "application/json",
    }


def verify(node: Server, call: dict[str, Any]) -> dict[str, Any]:
    """``/v1/verify`` always answers 200 (its own contract); never a 5xx, whatever is down."""
    auth = {"Authorization": f"Bearer {VERIFY_TOKEN}"}
    response = httpx.post(node.base_url + "/v1/verify", json=call, headers=auth, timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def verify_bitget(node: Server, key: dict[str, Any], path: str = UNLIMITED_BG) -> dict[str, Any]:
    headers = bitget_headers(key, "GET", path)
    return verify(node, {"method": "GET", "uri": path, "headers": headers, "client_ip": "127.0.0.1"})


def verify_whitebit(node: Server, key: dict[str, Any], path: str = UNLIMITED_WB) -> dict[str, Any]:
    body = json.dumps({"request": path, "nonce": str(time.time_ns() // 1000), "nonceWindow": False},
                      separators=(",", ":"))
    payload = base64.b64encode(body.encode()).decode()
    signature = hmac.new(key["apiSecret"].encode(), payload.encode(), hashlib.sha512).hexdigest()
    headers = {"X-TXC-APIKEY": key["apiKey"], "X-TXC-PAYLOAD": payload, "X-TXC-SIGNATURE": signature}
    return verify(node, {"method": "POST", "uri": path, "headers": headers, "body": body, "client_ip": "127.0.0.1"})


def whitebit(cluster: Cluster, node: Server) -> WhitebitClient:
    key = cluster.keys["wb"]
    client = WhitebitClient(node.base_url, key["apiKey"], key["apiSecret"])
    client.last_nonce = time.time_ns() // 1000  # both nodes share the key: nonces in microseconds
    return client


def bitget_create_sub(cluster: Cluster, node: Server, name: str) -> httpx.Response:
    path = "/api/v2/user/create-virtual-subaccount"
    body = json.dumps({"subAccountList": [name]})
    headers = bitget_headers(cluster.keys["main"], "POST", path, body)
    return httpx.post(node.base_url + path, content=body, headers=headers, timeout=30)


def sub_name() -> str:
    return "".join(chr(ord("a") + b % 26) for b in uuid.uuid4().bytes[:8])


def assert_unavailable(answer: dict[str, Any], scheme: str) -> None:
    assert answer["valid"] is False and answer["code"] == "UNAVAILABLE", answer
    error = answer["error"]
    assert error["status"] == 503
    body = json.loads(error["body"])
    if scheme == "bitget":
        assert (body["code"], body["msg"]) == BITGET_503 and body["data"] is None
    else:
        assert body == WHITEBIT_503


def eventually(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


# Redis down ------------------------------------------------------------------------------------------


def test_redis_outage_cached_keys_verify_management_commits_or_refuses_cleanly(cluster: Cluster) -> None:
    nodes = cluster.nodes
    for node in nodes:  # warm both caches
        assert verify_bitget(node, cluster.keys["cached"])["valid"]
        assert verify_whitebit(node, cluster.keys["wb"])["valid"]
    cluster.redis.stop()
    try:
        for node in nodes:
            for _ in range(3):
                assert verify_bitget(node, cluster.keys["cached"])["code"] == "VALID"
                assert verify_whitebit(node, cluster.keys["wb"])["code"] == "VALID"  # the nonce is in PostgreSQL
                # a rate-limited endpoint is counted in this process while Redis is down (ratelimit.py)
                assert verify_bitget(node, cluster.keys["cached"], LIMITED_BG)["code"] == "VALID"
        for node in nodes:
            # management commits and answers success: the Redis publish after the commit fails, is logged,
            # and the other node reads the change from the store (today: 500 although committed)
            name = sub_name()
            started = time.monotonic()
            response = bitget_create_sub(cluster, node, name)
            assert time.monotonic() - started < 2.0
            assert response.status_code == 200 and response.json()["code"] == "00000", response.text
            assert cluster.account_named(name)
            ip = f"10.9.{nodes.index(node)}.1"
            response = whitebit(cluster, node).post(
                "/api/v4/sub-account/api-key/ip-address/create", {"apiKeyId": cluster.wb_key_id, "ip": ip}
            )
            assert response.status_code == 201 and ip in response.json()["data"], response.text
            assert ip in cluster.ip_list(cluster.wb_key_id)

        # the CLI commits, cannot publish, says so in one line and exits 0 at once; the nodes learn of the
        # revocation from the store's change feed
        revoked = cluster.keys["cli"]
        for node in nodes:
            assert verify_bitget(node, revoked)["valid"]
        done, took = cluster.cli("keys", "revoke", "--key", revoked["apiKey"], "--json")
        assert done.returncode == 0, done.stderr
        assert took < 30  # the time that matters is measured in-process below, without Python's start-up
        assert json.loads(done.stdout)["revoked"] == revoked["apiKey"]
        assert "Traceback" not in done.stderr
        assert not cluster.key_exists(revoked["apiKey"])
        for node in nodes:
            assert eventually(lambda node=node: verify_bitget(node, revoked)["code"] == "UNKNOWN_KEY", 3.0)

        # what the command does, timed without Python's start-up: a down Redis costs milliseconds (redis-py's
        # default retries with backoff, and a 5 s wait to subscribe, made it 8.6 s)
        started = time.monotonic()
        settings = Settings(database_url=cluster.url, master_key=cluster.env["KEYPLANE_MASTER_KEY"],
                            redis_url=cluster.redis.url)
        runtime = build_runtime(settings)
        try:
            runtime.service.keys.revoke_key(cluster.keys["inproc"]["apiKey"])
        finally:
            runtime.close()
        assert time.monotonic() - started < 2.0
        assert not cluster.key_exists(cluster.keys["inproc"]["apiKey"])
    finally:
        cluster.redis.start()

    # back without a restart: both nodes subscribe to the invalidation channel again, rate-limited endpoints
    # and management go through Redis again
    client = redis.Redis.from_url(cluster.redis.url)
    assert eventually(lambda: client.pubsub_numsub(CHANNEL)[0][1] == len(nodes))
    client.close()
    time.sleep(0.2)  # a node drops (or re-validates) its cache right after it subscribes
    for node in nodes:
        assert eventually(lambda node=node: verify_bitget(node, cluster.keys["cached"], LIMITED_BG)["valid"])
        name = sub_name()
        response = bitget_create_sub(cluster, node, name)
        assert response.status_code == 200 and response.json()["code"] == "00000", response.text
        assert cluster.account_named(name)
        assert node.process is not None and node.process.poll() is None


# PostgreSQL down ---------------------------------------------------------------------------------------


def test_postgres_outage_refuses_what_it_cannot_decide_and_recovers(cluster: Cluster) -> None:
    nodes, keys = cluster.nodes, cluster.keys
    revoked = keys["revoked"]
    for node in nodes:  # warm both caches; the revoked key is cached too, then revoked before the outage
        for name in ("cached", "main", "revoked"):
            assert verify_bitget(node, keys[name])["valid"]
    cluster.ops.service.keys.revoke_key(revoked["apiKey"])
    for node in nodes:
        assert eventually(lambda node=node: verify_bitget(node, revoked)["code"] == "UNKNOWN_KEY", 3.0)

    with cluster.engine().connect() as conn:
        sealed_before = conn.execute(sa.select(api_keys.c.sealed_secret).where(api_keys.c.id == cluster.wb_key_id))
        sealed_before = sealed_before.scalar_one()
        sub_uid = conn.execute(sa.select(api_keys.c.account_uid).where(api_keys.c.id == cluster.wb_key_id)).scalar_one()
    keys_before = len(cluster.ops.service.keys.list_account_keys(sub_uid))
    sub_public_id = cluster.ops.service.accounts.account_of(sub_uid).public_id

    cluster.pg.stop()
    try:
        refused_names = []
        for node in nodes:
            for _ in range(3):
                # a cached key keeps verifying (the rate limit is in Redis)
                assert verify_bitget(node, keys["cached"], LIMITED_BG)["code"] == "VALID"
                # an uncached key cannot be decided: refused with the dialect's 503-class error
                started = time.monotonic()
                assert_unavailable(verify_bitget(node, keys["uncached"]), "bitget")
                assert time.monotonic() - started < 3.0
                # the key revoked before the outage is never VALID again: unknown while the cache remembers
                # it as unknown (1 s, auth/cache.py), then undecidable
                answer = verify_bitget(node, revoked)
                if answer["code"] != "UNKNOWN_KEY":
                    assert_unavailable(answer, "bitget")
                # a WhiteBIT nonce cannot be recorded: refused, never accepted unrecorded
                assert_unavailable(verify_whitebit(node, keys["wb"]), "whitebit")
            # management answers 503 in each dialect and commits nothing
            name = sub_name()
            refused_names.append(name)
            response = bitget_create_sub(cluster, node, name)
            assert response.status_code == 503, response.text
            assert (response.json()["code"], response.json()["msg"]) == BITGET_503
            response = whitebit(cluster, node).post(
                "/api/v4/sub-account/api-key/ip-address/create", {"apiKeyId": cluster.wb_key_id, "ip": "10.8.0.1"}
            )
            assert response.status_code == 503 and response.json() == WHITEBIT_503
            for path, fields in (
                ("/api/v4/sub-account/api-key/create", {"subAccountId": sub_public_id, "type": 1, "title": "x"}),
                ("/api/v4/sub-account/api-key/reset", {"apiKeyId": cluster.wb_key_id}),
            ):
                response = whitebit(cluster, node).post(path, fields)
                assert response.status_code == 503 and response.json() == WHITEBIT_503, response.text
            assert httpx.get(node.base_url + "/health", timeout=5).status_code == 200

        # a server cannot start without its database: one line, exit code 3
        done, _took = cluster.cli("serve", "--port", "1")
        assert done.returncode == 3, (done.stdout, done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: the database is unavailable"), done.stderr

        # the CLI: one line, exit code 3, no traceback, quickly
        done, took = cluster.cli("keys", "revoke", "--key", keys["uncached"]["apiKey"])
        assert done.returncode == 3, (done.stdout, done.stderr)
        assert took < 10.0
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: the database is unavailable"), done.stderr
        assert "nothing was changed" in lines[0] and done.stdout == ""
    finally:
        cluster.pg.start()

    # back without a restart: the uncached key verifies, management commits, the refused calls left nothing
    for node in nodes:
        assert eventually(lambda node=node: verify_bitget(node, keys["uncached"])["valid"])
        assert verify_bitget(node, revoked)["code"] == "UNKNOWN_KEY"
        assert eventually(lambda node=node: verify_whitebit(node, keys["wb"])["valid"])
        name = sub_name()
        response = bitget_create_sub(cluster, node, name)
        assert response.status_code == 200 and response.json()["code"] == "00000", response.text
        assert cluster.account_named(name)
        assert node.process is not None and node.process.poll() is None
    assert not any(cluster.account_named(name) for name in refused_names)
    assert len(cluster.ops.service.keys.list_account_keys(sub_uid)) == keys_before
    with cluster.engine().connect() as conn:
        sealed_after = conn.execute(sa.select(api_keys.c.sealed_secret).where(api_keys.c.id == cluster.wb_key_id))
        assert sealed_after.scalar_one() == sealed_before
    assert "10.8.0.1" not in cluster.ip_list(cluster.wb_key_id)
    assert cluster.key_exists(keys["uncached"]["apiKey"])
    for node in nodes:
        log = node.log_path.read_text()
        assert " 500" not in log and "unhandled error" not in log


# master-key rotation cut by an outage ---------------------------------------------------------------------


def test_a_rotation_cut_by_a_postgres_outage_says_so_and_finishes_when_run_again(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    admin = sa.create_engine(private_postgres.url.replace("postgresql://", "postgresql+psycopg://"),
                             isolation_level="AUTOCOMMIT")
    database = "rotation_" + uuid.uuid4().hex[:8]
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {database}")
    admin.dispose()
    url = private_postgres.url.rsplit("/", 1)[0] + "/" + database
    key_file = tmp_path / "master-key"
    crypto.write_key_file(key_file, crypto.new_master_key_text() + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    env["KEYPLANE_MASTER_KEY_FILE"] = str(key_file)
    runtime = build_runtime(Settings(database_url=url, master_key_file=key_file))
    try:
        uid = runtime.service.accounts.create_main_account("rotation").uid
        for _ in range(3):
            runtime.service.keys.issue_main_key(uid, Scheme.WHITEBIT)
    finally:
        runtime.close()

    def secrets_open() -> int:
        ring = crypto.MasterKey.from_text(",".join(key_file.read_text().split()))
        store = Store(url)
        try:
            with store.reading() as tx:
                sealed = tx.sealed_secrets()
            return sum(1 for key_id, secret in sealed if ring.unseal(secret, key_id))
        finally:
            store.close()

    rotate = [*KEYPLANE, "master-key", "rotate", "--database", url]
    process = subprocess.Popen(rotate, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the file holds the new key and the old one while the command waits before its last pass: cut it there
        assert eventually(lambda: len(key_file.read_text().split()) == 2, 60.0)
        time.sleep(0.3)
        private_postgres.stop()
        try:
            _out, err = process.communicate(timeout=60)
        finally:
            private_postgres.start()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 3, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "the rotation did not finish" in lines[0] and "run `keyplane master-key" in lines[0]
    assert len(key_file.read_text().split()) == 2
    assert secrets_open() == 3  # every secret still opens with what the file holds

    done = subprocess.run([*rotate, "--json"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(key_file.read_text().split()) == 1
    assert secrets_open() == 3


# every management route ---------------------------------------------------------------------------------


def test_every_management_route_answers_503_without_postgres_and_no_5xx_without_redis(cluster: Cluster) -> None:
    """Each route of both dialects, called by a cached main key: PostgreSQL down is the dialect's 503 (the
    request's nonce or replay record cannot be written, or the use-case cannot run) unless the answer needs
    nothing but the verified key; Redis down is no 5xx."""
    from keyplane.dialects import bitget
    from keyplane.dialects import whitebit as whitebit_dialect

    node = cluster.nodes[0]
    bitget_routes = sorted(bitget.BitgetDialect(cluster.ops.service, cluster.ops.verifier).routes)
    whitebit_routes = sorted(whitebit_dialect.WhitebitDialect(cluster.ops.service, cluster.ops.verifier).routes)
    assert len(bitget_routes) >= 8 and len(whitebit_routes) >= 15

    def call_all() -> list[tuple[str, int, Any]]:
        answers = []
        for method, path in bitget_routes:
            body = "" if method == "GET" else "{}"
            headers = bitget_headers(cluster.keys["main"], method, path, body)
            response = httpx.request(method, node.base_url + path, content=body, headers=headers, timeout=30)
            answers.append((path, response.status_code, response.json()))
        client = whitebit(cluster, node)
        for path in whitebit_routes:
            response = client.post(path, {})
            answers.append((path, response.status_code, response.json()))
        return answers

    assert verify_bitget(node, cluster.keys["main"])["valid"]  # cached on this node
    cluster.pg.stop()
    try:
        reads_refused = 0
        for (method, path), (_path, status, body) in zip(
            [*bitget_routes, *(("POST", p) for p in whitebit_routes)], call_all(), strict=True
        ):
            reads_refused += method == "GET" and status == 503
            if method == "GET" and status != 503:
                # a Bitget read answered without the store: from the verified (cached) key alone, or a field
                # refused before any lookup
                assert status == 200 or 400 <= status < 500, (path, status, body)
                continue
            # a WhiteBIT nonce or a Bitget POST's replay record cannot be written: the dialect's 503
            assert status == 503, (path, status, body)
            if path.startswith(bitget.PREFIX):
                assert (body["code"], body["msg"]) == BITGET_503, (path, body)
            else:
                assert body == WHITEBIT_503, (path, body)
        assert reads_refused >= 1  # a list that needs the store (virtual-subaccount-list) is refused
    finally:
        cluster.pg.start()
    cluster.redis.stop()
    try:
        answers = call_all()
        assert all(status < 500 for _path, status, _body in answers), answers
        assert any(status == 200 for _path, status, _body in answers)  # the lists answer
    finally:
        cluster.redis.start()
