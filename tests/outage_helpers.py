"""Private PostgreSQL and Redis instances that tests may stop and start for real.

The machine's own servers (PostgreSQL on 5432, Redis on 6379) serve the rest of the suite and are never
touched: each instance here has its own port, its own data directory under /tmp, and listens on
127.0.0.1 only. ``stop()`` is a real outage (``pg_ctl stop -m fast`` drops every connection;
Redis ``SHUTDOWN NOSAVE`` closes its port) and ``start()`` brings the same instance back on the same port.

PostgreSQL refuses to run as root, so under root ``initdb``/``pg_ctl`` run as the ``postgres`` user, on
a directory it owns. ``initdb`` runs once per instance (about a second); a start or stop is ~0.2 s.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa
from redis.backoff import NoBackoff
from redis.retry import Retry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


def _client(port: int) -> redis.Redis:
    # no retries: redis-py's default backs off for seconds on a closed port
    return redis.Redis(port=port, socket_connect_timeout=0.2, socket_timeout=1, retry=Retry(NoBackoff(), 0))


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class PrivatePostgres:
    """A PostgreSQL cluster of its own: ``url`` (trust auth, database ``postgres``), ``stop()``, ``start()``."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="keyplane-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = {"user": user.pw_uid, "group": user.pw_gid}
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync",
            "--no-instructions",
        )
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def new_database(self) -> str:
        """The URL of a new, empty database in this cluster: each test's store (and the master key it
        records) of its own."""
        name = "kp_" + uuid.uuid4().hex[:12]
        admin = sa.create_engine(
            self.url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
        )
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
        finally:
            admin.dispose()
        return self.url.rsplit("/", 1)[0] + "/" + name

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin / tool), *args], check=True, capture_output=True, cwd=self.root, timeout=60, **self._as
        )

    @property
    def running(self) -> bool:
        return _port_open(self.port)

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "30", "start")

    def stop(self) -> None:
        """A real outage: every connection is dropped, the port closes."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A redis-server of its own: ``url``, ``stop()`` (SHUTDOWN NOSAVE), ``start()`` (same port)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="keyplane-redis-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def running(self) -> bool:
        return _port_open(self.port)

    def start(self) -> None:
        log = (self.root / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
                "--save", "", "--appendonly", "no", "--protected-mode", "yes",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        client = _client(self.port)
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                if self.process.poll() is not None:
                    raise RuntimeError("redis-server exited:\n" + (self.root / "redis.log").read_text())
                time.sleep(0.02)
        finally:
            client.close()
        raise RuntimeError("redis-server did not answer PING")

    def stop(self) -> None:
        """A real outage: the server exits without saving, the port closes."""
        client = _client(self.port)
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=True)
        client.close()
        if self.process is not None:
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
