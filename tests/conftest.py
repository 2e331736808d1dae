"""Shared fixtures: a fresh PostgreSQL schema (``pg_url``), private PostgreSQL and Redis instances to stop
and start for outage tests (``private_postgres``, ``private_redis``), a real keyplane server (``keyplane serve``,
granian) on a free port over a temporary SQLite database, and helpers that create main accounts and keys
through the real CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

KEYPLANE = [sys.executable, "-m", "keyplane.cli"]
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"  # trust auth (the machine's PostgreSQL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running ``keyplane serve`` and the database it uses."""

    base_url: str
    database_url: str
    workdir: Path
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    serve_args: tuple[str, ...] = ()  # more options for ``keyplane serve``, e.g. ("--workers", "2")

    def cli(self, *args: str) -> Any:
        """Runs ``keyplane ARGS --database URL --json`` and returns the parsed JSON."""
        out = subprocess.run(
            [*KEYPLANE, *args, "--database", self.database_url, "--json"],
            check=True, capture_output=True, env=self.env, cwd=self.workdir,
        )
        return json.loads(out.stdout)

    def main_account(self, name: str = "venue") -> str:
        return str(self.cli("accounts", "create", "--name", name)["uid"])

    def bitget_main_key(self, uid: str, *extra: str, ips: tuple[str, ...] = ("127.0.0.1",)) -> dict[str, Any]:
        args = ["keys", "create", "--account", uid, "--dialect", "bitget"]
        for ip in ips:
            args += ["--ip", ip]
        return dict(self.cli(*args, *extra))

    def whitebit_main_key(self, uid: str, *extra: str) -> dict[str, Any]:
        return dict(self.cli("keys", "create", "--account", uid, "--dialect", "whitebit", *extra))

    def start(self) -> None:
        port = int(self.base_url.rsplit(":", 1)[1])
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*KEYPLANE, "serve", "--port", str(port), "--database", self.database_url, *self.serve_args],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base_url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError("keyplane serve exited:\n" + self.log_path.read_text())
            time.sleep(0.1)
        raise RuntimeError("keyplane serve did not become ready:\n" + self.log_path.read_text())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


# Bitget documents Get Account Information at 1 request/s per UID (domain/policy.py); the suite's tests use
# that route as their signed probe, many times a second, so a server made here lifts that one limit, unless
# the test sets it itself or asks for the documented defaults (``documented_limits=True``, as
# test_wire_fidelity.py does to show the 1/s).
PROBE_RATE = {"bitget": {"rate_limits": {"account-info": "100000/second"}}}


def _with_probe_rate(policy: str | None) -> str | None:
    """``policy`` (KEYPLANE_POLICY's JSON) with account-info lifted unless it names a rate for it; text that
    is not a JSON object is left as it is (a test of a bad policy)."""
    try:
        overrides = json.loads(policy) if policy else {}
    except ValueError:
        return policy
    if not isinstance(overrides, dict) or not isinstance(overrides.get("bitget", {}), dict):
        return policy
    bitget = overrides.setdefault("bitget", {})
    rates = bitget.setdefault("rate_limits", {})
    if isinstance(rates, dict):
        rates.setdefault("account-info", PROBE_RATE["bitget"]["rate_limits"]["account-info"])
    return json.dumps(overrides)


def make_server(workdir: Path, env_extra: dict[str, str] | None = None, *, documented_limits: bool = False) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    env.update(env_extra or {})
    if not documented_limits and "KEYPLANE_POLICY_FILE" not in env:
        policy = _with_probe_rate(env.get("KEYPLANE_POLICY"))
        if policy is not None:
            env["KEYPLANE_POLICY"] = policy
    return Server(
        base_url=f"http://127.0.0.1:{free_port()}",
        database_url=f"sqlite:///{workdir / 'keyplane.db'}",
        workdir=workdir,
        log_path=workdir / "server.log",
        env=env,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per test module (starting one costs about a second)."""
    srv = make_server(tmp_path_factory.mktemp("keyplane"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def operator(server: Server) -> Iterator[Any]:
    """Makes WhiteBIT main accounts and keys straight in ``server``'s store (see clients/whitebit_http.py)."""
    from clients.whitebit_http import Operator

    op = Operator(server.database_url)
    yield op
    op.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema in the `test` database, dropped afterwards."""
    schema = "kp_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[Any]:
    """A PostgreSQL instance of this module's own (tests/outage_helpers.py): ``stop()``/``start()`` it for real."""
    from outage_helpers import PrivatePostgres

    instance = PrivatePostgres()
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def private_redis() -> Iterator[Any]:
    """A redis-server of this module's own (tests/outage_helpers.py): ``stop()``/``start()`` it for real."""
    from outage_helpers import PrivateRedis

    instance = PrivateRedis()
    yield instance
    instance.close()
