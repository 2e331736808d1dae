"""A multi-node deployment for real (issue 9, item 6).

- Nodes started at the same moment on an empty database all come up: `Store.migrate` runs under a lock
  (a PostgreSQL advisory lock; SQLite's `BEGIN IMMEDIATE`).
- `deploy/cluster/run` starts two nodes (two workers each) on PostgreSQL + Redis behind the nginx gateway;
  ccxt-signed requests go through the gateway to each node and reach a dummy upstream; a node that dies
  leaves the others serving; SIGTERM stops everything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ccxt
import httpx
import pytest
import sqlalchemy as sa

from conftest import KEYPLANE, Server, free_port, make_server

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "deploy" / "cluster" / "run"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
REDIS_URL = "redis://127.0.0.1:6379/13"
MASTER_KEY = "5e" * 32

pytestmark = [pytest.mark.postgres]


def node_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    env["KEYPLANE_MASTER_KEY"] = MASTER_KEY
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


# --- migrations under a lock -------------------------------------------------------------------------


def start_together(servers: list[Server]) -> None:
    """Starts every server's process at once (no health wait in between), then waits for each."""
    errors: list[BaseException] = []

    def run(server: Server) -> None:
        try:
            server.start()
        except BaseException as error:  # reported below, with the server's log
            errors.append(error)

    threads = [threading.Thread(target=run, args=(server,)) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


@pytest.mark.parametrize("trial", range(3))
def test_nodes_started_together_on_an_empty_postgres_schema_all_come_up(
    pg_url: str, tmp_path: Path, trial: int
) -> None:
    servers = []
    for i in range(2):
        server = make_server(tmp_path / f"node{i}", {"KEYPLANE_MASTER_KEY": MASTER_KEY})
        server.database_url = pg_url
        servers.append(server)
    try:
        start_together(servers)
        for server in servers:
            assert httpx.get(server.base_url + "/health").status_code == 200
        engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
        engine.dispose()
        if trial == 0:  # the schema works, from either node's side
            uid = servers[0].main_account("together")
            assert servers[1].bitget_main_key(uid)["apiKey"]
    finally:
        for server in servers:
            server.stop()


def test_nodes_started_together_on_a_new_sqlite_file_all_come_up(tmp_path: Path) -> None:
    servers = [make_server(tmp_path / f"node{i}", {"KEYPLANE_MASTER_KEY": MASTER_KEY}) for i in range(2)]
    for server in servers:
        server.database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    try:
        start_together(servers)  # BEGIN IMMEDIATE: one migrates, the others wait and find it done
        for server in servers:
            assert httpx.get(server.base_url + "/health").status_code == 200
    finally:
        for server in servers:
            server.stop()


# --- deploy/cluster/run ------------------------------------------------------------------------------


class Upstream:
    """The venue stand-in: records each request's path and identity headers, answers Bitget's envelope."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                record = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
                upstream.seen.append(record)
                body = json.dumps({"code": "00000", "msg": "success", "requestTime": 0, "data": record}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def consecutive_free_ports(count: int) -> int:
    for _ in range(50):
        base = free_port()
        if base + count < 65535 and all(free_port_is(base + i) for i in range(count)):
            return base
    raise RuntimeError("no run of free ports")


def free_port_is(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


def wait_ready(process: subprocess.Popen[str], timeout: float = 180) -> dict[str, Any]:
    """Reads the script's output until its `ready` line; the JSON after it says where everything is."""
    assert process.stdout is not None
    lines: list[str] = []
    found: dict[str, Any] = {}

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("cluster: ready "):
                found.update(json.loads(line.removeprefix("cluster: ready ")))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert found, "cluster did not get ready:\n" + "".join(lines)
    return found


@pytest.mark.redis
@pytest.mark.nginx
@pytest.mark.skipif(not Path(NGINX).exists(), reason="needs nginx with libnginx-mod-http-lua")
def test_cluster_script_serves_through_the_gateway_from_every_node(
    pg_url: str, tmp_path: Path, upstream: Upstream
) -> None:
    env = node_env(tmp_path)
    gateway_port = free_port()
    node_port = consecutive_free_ports(2)
    command = [
        sys.executable, str(RUN), "--nodes", "2", "--workers", "2",
        "--upstream", f"127.0.0.1:{upstream.port}", "--listen", str(gateway_port),
        "--node-port", str(node_port), "--dir", str(tmp_path / "cluster"), "--start-timeout", "150",
        "--keyplane", f"{sys.executable} -m keyplane.cli", "--database", pg_url, "--redis", REDIS_URL,
    ]
    script = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    groups: list[int] = []
    try:
        state = wait_ready(script)
        groups = [state["pids"]["nginx"], *state["pids"]["nodes"]]
        assert state["nodes"] == [f"http://127.0.0.1:{node_port}", f"http://127.0.0.1:{node_port + 1}"]

        # a main account and a key, made with the CLI on the cluster's database
        def cli(*args: str) -> Any:
            out = subprocess.run(
                [*KEYPLANE, *args, "--database", pg_url, "--json"], env=env, check=True, capture_output=True
            )
            return json.loads(out.stdout)

        uid = str(cli("accounts", "create", "--name", "cluster")["uid"])
        key = cli("keys", "create", "--account", uid, "--dialect", "bitget", "--ip", "127.0.0.1")
        client = ccxt.bitget(
            {"apiKey": key["apiKey"], "secret": key["secretKey"], "password": key["passphrase"], "timeout": 30_000}
        )
        for group in client.urls["api"]:
            client.urls["api"][group] = state["gateway"]

        for _ in range(8):  # round robin in each nginx worker: every node verifies some of them
            seen = client.privateSpotGetV2SpotAccountAssets({"coin": "BTC"})["data"]
            assert seen["path"] == "/api/v2/spot/account/assets?coin=BTC"
            assert seen["headers"]["x-keyplane-api-key"] == key["apiKey"]
            assert seen["headers"]["x-keyplane-account-uid"] == uid
        access_log = Path(state["nginx_access_log"])
        nodes = {f"127.0.0.1:{node_port}", f"127.0.0.1:{node_port + 1}"}
        deadline = time.monotonic() + 3  # nginx logs a request as it finishes, maybe just after the answer
        while True:
            verified_by = set(re.findall(r"/_keyplane/verify 200 upstream=(\S+)", access_log.read_text()))
            if verified_by == nodes or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert verified_by == nodes

        # a forged or tampered request is refused whichever node answers
        signed = client.sign("v2/spot/account/assets", ["private", "spot"], "GET", {})
        signed["headers"]["ACCESS-SIGN"] = "A" + signed["headers"]["ACCESS-SIGN"][1:]
        refused = httpx.get(signed["url"], headers=signed["headers"])
        assert refused.status_code == 400 and refused.json()["code"] == "40009"

        # one node down: nginx sends every verification to the other, nothing is refused for it
        os.killpg(state["pids"]["nodes"][0], signal.SIGTERM)
        deadline = time.monotonic() + 15
        while group_alive(state["pids"]["nodes"][0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        before = len(upstream.seen)
        for _ in range(4):
            client.privateSpotGetV2SpotAccountAssets({"coin": "BTC"})
        assert len(upstream.seen) == before + 4
    finally:
        if script.poll() is None:
            script.send_signal(signal.SIGTERM)
        try:
            rest, _ = script.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(script.pid, signal.SIGKILL)
            rest, _ = script.communicate()
        print("deploy/cluster/run said:\n" + rest)  # shown when the test fails, with the logs below
        for log in sorted((tmp_path / "cluster").glob("**/*.log")):
            print(f"--- {log.name}\n" + log.read_text()[-3000:])
    assert script.returncode == 0, rest
    assert "cluster: stopped" in rest
    # nginx's workers and every node's granian workers are gone too (a worker may take a moment to exit
    # after its parent has: allow a few seconds)
    deadline = time.monotonic() + 10
    while any(group_alive(pgid) for pgid in groups) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pgid in groups:
        assert not group_alive(pgid), pgid
    for port in (gateway_port, node_port, node_port + 1):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on {port}"
