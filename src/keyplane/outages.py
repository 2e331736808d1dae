"""What counts as an outage of the store or of Redis, and how it is logged.

An outage is an answer, not an error: the edges (the dialects' service calls, ``Verifier.verify``, the
CLI) turn a lost or refused connection into ``errors.Unavailable`` or ``Reason.UNAVAILABLE``, which each
dialect answers with its 503-class error. Anything else stays a bug and is raised as it is.
"""

from __future__ import annotations

import errno
import logging
import threading
import time

import redis
import sqlalchemy.exc
from redis.backoff import NoBackoff
from redis.retry import Retry

from keyplane import errors
from keyplane.store.replay_ledger import LedgerError

log = logging.getLogger("keyplane.outages")

# A refused or lost connection, a pool that cannot hand one out, SQLite's "database is locked" after its
# busy timeout: the store cannot answer now. IntegrityError and the like are not outages.
_STORE_OUTAGES = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError)
_REDIS_OUTAGES = (redis.ConnectionError, redis.TimeoutError)
_DISK_OUTAGES = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO})


def unavailable(error: BaseException) -> errors.Unavailable | None:
    """``error`` as ``errors.Unavailable`` when it is an outage of the store or of Redis, else None."""
    if isinstance(error, errors.Unavailable):
        return error
    if isinstance(error, _STORE_OUTAGES) or (
        isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated
    ):
        return errors.Unavailable(f"the database is unavailable: {_first_line(error)}")
    if isinstance(error, _REDIS_OUTAGES):
        return errors.Unavailable(f"Redis is unavailable: {_first_line(error)}")
    if isinstance(error, LedgerError) or (isinstance(error, OSError) and error.errno in _DISK_OUTAGES):
        # the SQLite store's own files (the replay ledger, the nonce journal): full, failing, or not handed over
        return errors.Unavailable(f"the store's files are unavailable: {_first_line(error)}")
    return None


def _first_line(error: BaseException) -> str:
    # a SQLAlchemy error's text goes on with the statement (never its parameters: hide_parameters)
    cause = getattr(error, "orig", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0]}" if text else type(cause).__name__


class _Throttle:
    """At most one warning a second per ``what``: an outage must not flood the log at every request."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def allow(self, what: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(what, -1.0) < 1.0:
                return False
            self._last[what] = now
            return True


_throttle = _Throttle()


def warn(what: str, error: BaseException) -> None:
    """Logs an outage once a second per ``what``, one line, no traceback."""
    if _throttle.allow(what):
        log.warning("%s: %s", what, _first_line(error))


def redis_client(url: str) -> redis.Redis:
    """A Redis client for which a down Redis costs milliseconds.

    redis-py's defaults wait without bound to connect and retry three times with exponential backoff:
    ``keyplane keys revoke`` took 8.6 s with Redis down. Here a connection attempt gives up after 0.25 s
    (a refused one at once), a reply after 1 s, and nothing is retried: the callers know what to do
    without Redis (the store's change feed, the local rate-limit fallback).
    """
    return redis.Redis.from_url(url, **REDIS_OPTIONS, retry=Retry(NoBackoff(), 0))


REDIS_OPTIONS: dict[str, float] = {"socket_connect_timeout": 0.25, "socket_timeout": 1.0}
