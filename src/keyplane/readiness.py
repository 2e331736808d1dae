"""``GET /ready``: can this server answer now? The store answers ``SELECT 1``, Redis (when configured) a
``PING``, each within ``TIMEOUT_S``, off the event loop. ``/health`` stays the liveness check (the process
is up and serving), so an orchestrator restarts a dead server but only takes a cut-off one out of rotation.

A check that hangs (a dropped packet, not a refused connection) is answered as timed out and is not
started again until it ends: probes never pile up threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import redis
import sqlalchemy as sa

from keyplane.outages import redis_client, warn
from keyplane.store import Store

TIMEOUT_S = 1.0


class Readiness:
    """The checks of one server: ``store``, and ``redis`` when ``redis_url`` is set."""

    def __init__(self, store: Store, redis_url: str | None = None, timeout: float = TIMEOUT_S) -> None:
        self.timeout = timeout
        self._checks: dict[str, Callable[[], None]] = {"store": lambda: _ping_store(store)}
        self._redis: redis.Redis | None = None
        if redis_url:
            self._redis = redis_client(redis_url)
            client = self._redis
            self._checks["redis"] = lambda: _ping_redis(client)
        self._executor = ThreadPoolExecutor(len(self._checks), thread_name_prefix="keyplane-ready")
        self._running: dict[str, Future[None]] = {}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._redis is not None:
            self._redis.close()

    async def check(self) -> tuple[bool, dict[str, str]]:
        """(ready, each part's state: "ok", "unavailable (<error type>)" or "timed out after 1 s")."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._one(name) for name in names))
        states = dict(zip(names, results, strict=True))
        return all(state == "ok" for state in states.values()), states

    async def _one(self, name: str) -> str:
        future = self._running.get(name)
        if future is None or future.done():
            future = self._running[name] = self._executor.submit(self._checks[name])
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.timeout)
        except TimeoutError:
            return f"timed out after {self.timeout:g} s"
        except Exception as error:
            warn(f"readiness: {name} check failed", error)
            # the type only: /ready is unauthenticated, and an error's text names hosts and ports
            return f"unavailable ({type(error).__name__})"
        return "ok"


def _ping_store(store: Store) -> None:
    with store.engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))


def _ping_redis(client: redis.Redis) -> None:
    client.ping()
