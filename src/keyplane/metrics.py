"""Counters for ``/metrics`` (Prometheus' text format), kept in plain ints and read at scrape time.

The hot path pays one dict update per verification and one histogram bucket per request: a
``prometheus_client`` ``Counter.labels(...).inc()`` per request costs several times that (a lock, a label
lookup). A custom collector turns the plain counters into metric families when Prometheus scrapes.

What is counted:

- ``keyplane_verifications_total{via, dialect, reason}``: every verification, ``via`` ``management`` (a
  dialect's own route) or ``verify`` (``POST /v1/verify``); ``reason`` is ``VALID`` or the refusal's code.
  ``keyplane_rate_limited_total{via, dialect}`` is its ``RATE_LIMITED`` share.
- ``keyplane_requests_refused_total{route, reason}``: refusals decided outside the verifier (a missing or
  wrong verify token, a malformed ``/v1/verify`` call, an unknown path, a body over the limit, a target an
  upstream could read otherwise); ``keyplane_internal_errors_total{route}``: bugs answered with a 500.
- ``keyplane_request_duration_seconds{route}``: a histogram of every HTTP request's time in the app.
- ``keyplane_management_operations_total{dialect, operation, outcome}``: every verified management call by
  its path and outcome (``ok``, ``rejected``: a 4xx wire or domain rule, ``unavailable``: a 503); the native
  management API (``dialect="native"``) counts every call that presented a token, by its operation's name
  (``keys.create``: a path holds ids, which would make one series per object).
- ``keyplane_key_cache_entries``, ``keyplane_key_cache_hits_total``, ``keyplane_key_cache_misses_total``,
  ``keyplane_nonce_journal_bytes`` (SQLite's nonce journal; absent on PostgreSQL),
  ``keyplane_replay_ledger_owner`` (SQLite: 1 while one process owns the replay ledger and records with no
  system call, 0 while several share it or none has recorded yet; absent on PostgreSQL),
  ``keyplane_refusal_log_suppressed_total`` (refusal lines not written: ``keyplane.logs``).

Workers (``keyplane serve --workers N``): each worker process counts its own. With ``KEYPLANE_METRICS_DIR``
set (``serve`` sets a fresh one when N > 1), every worker writes its counters to ``worker-<pid>.json`` there
once a second, and a scrape, whichever worker answers it, adds its own live counters to the other
workers' files: counters are summed over every worker that ever ran (a respawned worker's counts are not
lost), gauges over the live ones. Another worker's counts are at most ~1 s old.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from keyplane.auth.request import Reason, SignedRequest, VerifyResult
from keyplane.domain.model import Scheme
from keyplane.logs import RefusalLog
from keyplane.outages import warn

log = logging.getLogger("keyplane.metrics")

VIA_MANAGEMENT = "management"
VIA_VERIFY = "verify"

# seconds; keyplane answers in well under a millisecond from its cache, a fresh key's argon2id takes ~25 ms
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ROUTES = (("/v1/", "native"), ("/api/v2/", "bitget"), ("/api/v4/", "whitebit"))

_VALID = Reason.VALID  # a module constant: reading an enum member costs ~70 ns on Python 3.11
_API_KEY_HEADERS = ("access-key", "x-txc-apikey")  # Bitget's, WhiteBIT's; never a signature or passphrase
_SNAPSHOT_EVERY_S = 1.0


def route_of(path: str) -> str:
    for prefix, route in _ROUTES:
        if path.startswith(prefix):
            return route
    return "other"


def _error_code(error: BaseException | None) -> str:
    """A management call's refusal as a code: a domain error's class (``NameTaken`` -> ``NAME_TAKEN``), or
    ``INVALID_REQUEST`` for a dialect's wire rule."""
    if error is None:
        return "REJECTED"
    name = type(error).__name__
    if name == "WireError":
        return "INVALID_REQUEST"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


# Refusals decided before the key was found in the store (or because it was not): the API-key header then
# holds whatever the client sent, which may be its secret in the wrong header; such a value is shown by its
# first 8 characters only. After the lookup it is a key the store holds, shown whole.
_KEY_NOT_FOUND = frozenset({
    Reason.MALFORMED, Reason.MISSING_KEY, Reason.MISSING_SIGNATURE, Reason.MISSING_TIMESTAMP,
    Reason.INVALID_TIMESTAMP, Reason.EXPIRED_TIMESTAMP, Reason.UNKNOWN_KEY, Reason.MISSING_PAYLOAD,
    Reason.BAD_TARGET, Reason.UNKNOWN_ENDPOINT, Reason.UNAVAILABLE, Reason.WOULD_BLOCK,
})
SHOWN_UNKNOWN_KEY = 8


def api_key_of(request: SignedRequest, result: VerifyResult | None = None) -> str:
    """The API key a request named, for a log line: whole where the store holds it (the verified key's own,
    or one refused after its lookup), else its first 8 characters and "…". Never another header."""
    if result is not None and result.key is not None:
        return result.key.api_key
    headers = request.headers
    for name in _API_KEY_HEADERS:
        value = headers.get(name)
        if value:
            if result is None or result.reason in _KEY_NOT_FOUND:
                return value if len(value) <= SHOWN_UNKNOWN_KEY else value[:SHOWN_UNKNOWN_KEY] + "…"
            return value
    return ""


class Metrics:
    """This process's counters, and the refusal log every refusal also goes to.

    ``counting=False`` (``KEYPLANE_METRICS=0``): nothing is counted, refusals are still logged.
    The hooks run on the event loop; the cache's counters live in the key cache (``auth/cache.py``).
    """

    def __init__(
        self,
        refusals: RefusalLog | None = None,
        *,
        counting: bool = True,
        gauges: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.refusals = refusals or RefusalLog()
        self.counting = counting
        # (via, dialect, reason) -> count
        self.verifications: dict[tuple[str, str, str], int] = {}
        # (route, reason) -> count
        self.refused_requests: dict[tuple[str, str], int] = {}
        self.internal_errors: dict[str, int] = {}
        # (dialect, operation, outcome) -> count
        self.management: dict[tuple[str, str, str], int] = {}
        # route -> bucket counts (len(BUCKETS) + 1: the last is +Inf), and the sum of observed seconds
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = {}
        self._gauges = gauges or (lambda: {})
        self.history = MinuteHistory(self)

    # hooks --------------------------------------------------------------------------------------------

    def verified(
        self, request: SignedRequest, result: VerifyResult, via: str, scheme: Scheme | None = None
    ) -> None:
        """A verification's result: counted; logged when refused. ``scheme``: the dialect the caller named,
        for a result that has none (no signing headers)."""
        reason = result.reason
        dialect = result.scheme or scheme
        if self.counting:
            # the enum members themselves (str subclasses: a str's hash, no ``.value`` lookup); plain str
            # in snapshots
            key = (via, dialect or "none", reason)
            counts = self.verifications
            counts[key] = counts.get(key, 0) + 1
        if reason is not _VALID and self.refusals.admit(reason):
            self.refusals.write(
                reason, api_key=api_key_of(request, result), client_ip=request.client_ip,
                method=request.method, path=request.path, route=via, dialect=str(dialect or "none"),
            )

    def refused(
        self, reason: str, route: str, *, method: str, path: str, client_ip: str, api_key: str = "",
        status: int | None = None,
    ) -> None:
        """A request refused outside the verifier (``reason``: e.g. ``NOT_FOUND``): counted and logged."""
        if self.counting:
            key = (route, reason)
            self.refused_requests[key] = self.refused_requests.get(key, 0) + 1
        extra = {} if status is None else {"status": status}
        self.refusals.refused(reason, api_key=api_key, client_ip=client_ip, method=method, path=path, route=route,
                              **extra)

    def refused_request(self, reason: str, route: str, request: SignedRequest, status: int) -> None:
        self.refused(reason, route, method=request.method, path=request.path, client_ip=request.client_ip,
                     api_key=api_key_of(request), status=status)

    def internal_error(self, route: str) -> None:
        if self.counting:
            self.internal_errors[route] = self.internal_errors.get(route, 0) + 1

    def managed(
        self, dialect: str, request: SignedRequest, result: VerifyResult, status: int, error: BaseException | None
    ) -> None:
        """A verified management call's outcome; a rejected one (a wire or domain rule) is logged too, with its
        HTTP status."""
        outcome = "ok" if status < 400 else ("unavailable" if status == 503 else "rejected")
        if self.counting:
            key = (dialect, request.path, outcome)
            self.management[key] = self.management.get(key, 0) + 1
        if status >= 400:
            reason = "UNAVAILABLE" if status == 503 else _error_code(error)
            self.refusals.refused(
                reason, api_key=api_key_of(request, result), client_ip=request.client_ip, method=request.method,
                path=request.path, route=VIA_MANAGEMENT, dialect=dialect, status=status,
            )

    def operated(self, operation: str, request: SignedRequest, status: int, code: str | None) -> None:
        """A native management call's outcome (``code``: its error's machine code); a rejected one is logged
        too. Its log line names no key: the caller's operator token is never written anywhere."""
        outcome = "ok" if status < 400 else ("unavailable" if status == 503 else "rejected")
        if self.counting:
            key = ("native", operation, outcome)
            self.management[key] = self.management.get(key, 0) + 1
        if status >= 400:
            self.refusals.refused(
                (code or "REJECTED").upper(), api_key="", client_ip=request.client_ip, method=request.method,
                path=request.path, route=VIA_MANAGEMENT, dialect="native", status=status,
            )

    def observe(self, path: str, seconds: float) -> None:
        """One HTTP request's time in the app."""
        route = route_of(path)
        buckets = self.latency.get(route)
        if buckets is None:
            buckets = self.latency[route] = [0] * (len(BUCKETS) + 1)
            self.latency_sum[route] = 0.0
        buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum[route] += seconds

    # reading ------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything counted, as JSON-ready data (one worker's share of a scrape)."""
        return {
            "pid": os.getpid(),
            "verifications": [
                [via, str(dialect), str(reason), n] for (via, dialect, reason), n in list(self.verifications.items())
            ],
            "refused": [[*key, n] for key, n in list(self.refused_requests.items())],
            "internal_errors": dict(self.internal_errors),
            "management": [[*key, n] for key, n in list(self.management.items())],
            "latency": {
                route: [*counts, self.latency_sum.get(route, 0.0)] for route, counts in list(self.latency.items())
            },
            "suppressed": self.refusals.suppressed_total,
            "gauges": self._gauges(),
            "history": self.history.recent(),
        }


HISTORY_MINUTES = 60


class MinuteHistory:
    """The last hour of requests by reason (``VALID`` or a refusal's code), a count per minute: the console's
    verification chart.

    Made from the counters above, not on the hot path: ``tick`` (a thread, once a minute) subtracts the
    totals it read at the last minute's end from the totals now. Counts come from verifications (both
    routes) and from refusals decided outside the verifier.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._minute: int | None = None  # the minute (epoch seconds // 60) the live counts belong to
        self._totals: dict[str, int] = {}
        # (minute start, epoch seconds; counts by reason), oldest first
        self.minutes: deque[tuple[int, dict[str, int]]] = deque(maxlen=HISTORY_MINUTES)
        self._stop = threading.Event()

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (_via, _dialect, reason), n in list(self._metrics.verifications.items()):
            out[str(reason)] = out.get(str(reason), 0) + n
        for (_route, reason), n in list(self._metrics.refused_requests.items()):
            out[reason] = out.get(reason, 0) + n
        return out

    def tick(self, now: float | None = None) -> None:
        """Closes the minute that ended before ``now``: what was counted since the last tick is its share (a
        tick a second late gives that second to the older minute)."""
        minute = int((time.time() if now is None else now) // 60)
        if self._minute is None:
            self._minute, self._totals = minute, self.totals()
            return
        if minute <= self._minute:
            return
        totals = self.totals()
        self.minutes.append((self._minute * 60, _minus(totals, self._totals)))
        self._minute, self._totals = minute, totals

    def recent(self) -> list[list[Any]]:
        """``[[minute start, {reason: count}], ...]``, oldest first, the live minute last (JSON-ready)."""
        out: list[list[Any]] = [[start, counts] for start, counts in list(self.minutes)]
        if self._minute is not None:
            out.append([self._minute * 60, _minus(self.totals(), self._totals)])
        return out

    def start(self) -> None:
        self.tick()
        threading.Thread(target=self._run, name="keyplane-history", daemon=True).start()

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(60.05 - time.time() % 60):  # just past each minute's end
            self.tick()


def _minus(totals: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {reason: n - before.get(reason, 0) for reason, n in totals.items() if n != before.get(reason, 0)}


def merge_history(snapshots: list[dict[str, Any]], since: int) -> dict[int, dict[str, int]]:
    """Several workers' histories as one: counts summed by minute start, minutes before ``since`` left out."""
    out: dict[int, dict[str, int]] = {}
    for snap in snapshots:
        for start, counts in snap.get("history", []):
            if not isinstance(start, int) or start < since or not isinstance(counts, dict):
                continue
            minute = out.setdefault(start, {})
            for reason, n in counts.items():
                minute[reason] = minute.get(reason, 0) + n
    return out
# gauges of something all workers share (a file, the store): the largest a live worker saw, never a sum
_SHARED_GAUGES = frozenset({"nonce_journal_bytes", "keys_expired", "keys_expiring"})

# how long a count read from the store serves scrapes and worker snapshots before it is read again
STORE_GAUGE_TTL_S = 60.0


class StoreGauge:
    """A value read from the store at most every ``ttl`` seconds (two index range counts, say), never per
    scrape; a store that cannot be read leaves the last value in place (and is tried again next time)."""

    def __init__(self, read: Callable[[], dict[str, int]], ttl: float = STORE_GAUGE_TTL_S) -> None:
        self._read = read
        self._ttl = ttl
        self._values: dict[str, int] = {}
        self._next = 0.0
        self._lock = threading.Lock()

    def values(self) -> dict[str, int]:
        now = time.monotonic()
        if now >= self._next and self._lock.acquire(blocking=False):  # one reader; the others take the last
            try:
                self._next = now + self._ttl
                self._values = self._read()
            except Exception as error:
                warn("a store gauge could not be read", error)
            finally:
                self._lock.release()
        return self._values


def merge(snapshots: list[dict[str, Any]], live: set[int]) -> dict[str, Any]:
    """Several workers' snapshots as one: counters summed over all, gauges over the ``live`` pids only
    (``*_total`` gauge entries are counters and summed over all; ``nonce_journal_bytes``, one shared file, is
    the largest any worker saw)."""
    out: dict[str, Any] = {
        "verifications": {}, "refused": {}, "internal_errors": {}, "management": {}, "latency": {},
        "suppressed": 0, "gauges": {}, "workers": 0,
    }
    for snap in snapshots:
        for name in ("verifications", "refused", "management"):
            table = out[name]
            for *key, n in snap.get(name, []):
                table[tuple(key)] = table.get(tuple(key), 0) + n
        for route, n in snap.get("internal_errors", {}).items():
            out["internal_errors"][route] = out["internal_errors"].get(route, 0) + n
        for route, values in snap.get("latency", {}).items():
            mine = out["latency"].get(route)
            out["latency"][route] = list(values) if mine is None else [a + b for a, b in zip(mine, values, strict=True)]
        out["suppressed"] += snap.get("suppressed", 0)
        alive = snap.get("pid") in live
        out["workers"] += int(alive)
        for name, value in snap.get("gauges", {}).items():
            gauges = out["gauges"]
            if name in _SHARED_GAUGES:  # one value of the shared store that every worker reads alike
                if alive:
                    gauges[name] = max(gauges.get(name, 0), value)
            elif name.endswith("_total") or alive:
                gauges[name] = gauges.get(name, 0) + value
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerFiles:
    """``KEYPLANE_METRICS_DIR``: this worker's snapshot written once a second; everyone's read at scrape."""

    def __init__(self, directory: Path, metrics: Metrics) -> None:
        self.directory = directory
        self.metrics = metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> Path:
        return self.directory / f"worker-{os.getpid()}.json"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.write()
        self._thread = threading.Thread(target=self._run, name="keyplane-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.write()

    def _run(self) -> None:
        while not self._stop.wait(_SNAPSHOT_EVERY_S):
            try:
                self.write()
            except Exception as error:  # a full disk, a removed directory: the next second tries again
                log.warning("metrics: cannot write %s (%s)", self.path, type(error).__name__)

    def write(self) -> None:
        path = self.path
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(self.metrics.snapshot()))
        os.replace(temporary, path)

    def snapshots(self) -> Iterator[dict[str, Any]]:
        """Every worker's snapshot: this one's live, the others' from their files."""
        own = os.getpid()
        yield self.metrics.snapshot()
        for path in self.directory.glob("worker-*.json"):
            if path.name == f"worker-{own}.json":
                continue
            with contextlib.suppress(OSError, ValueError):
                yield json.loads(path.read_text())


class KeyplaneCollector(Collector):
    """The metric families, built from the plain counters at scrape time."""

    def __init__(self, metrics: Metrics, files: WorkerFiles | None = None) -> None:
        self.metrics = metrics
        self.files = files

    def collect(self) -> Iterator[Any]:
        if self.files is None:
            snaps = [self.metrics.snapshot()]
            live = {os.getpid()}
        else:
            snaps = list(self.files.snapshots())
            live = {snap["pid"] for snap in snaps if isinstance(snap.get("pid"), int) and _alive(snap["pid"])}
        data = merge(snaps, live)

        verifications = CounterMetricFamily(
            "keyplane_verifications", "Verifications by how they came (management route or /v1/verify), dialect "
            "and result (VALID or the refusal's reason).", labels=["via", "dialect", "reason"],
        )
        limited = CounterMetricFamily(
            "keyplane_rate_limited", "Verifications refused by the rate limit (RATE_LIMITED).",
            labels=["via", "dialect"],
        )
        rate_limited: dict[tuple[str, str], int] = {}
        for (via, dialect, reason), n in sorted(data["verifications"].items()):
            verifications.add_metric([via, dialect, reason], n)
            if reason == Reason.RATE_LIMITED.value:
                rate_limited[(via, dialect)] = rate_limited.get((via, dialect), 0) + n
        for (via, dialect), n in sorted(rate_limited.items()):
            limited.add_metric([via, dialect], n)
        yield verifications
        yield limited

        refused = CounterMetricFamily(
            "keyplane_requests_refused", "Requests refused outside the verifier (token, malformed call, unknown "
            "path, body too large, ambiguous target).", labels=["route", "reason"],
        )
        for (route, reason), n in sorted(data["refused"].items()):
            refused.add_metric([route, reason], n)
        yield refused
        errors = CounterMetricFamily("keyplane_internal_errors", "Requests answered 500 (a bug).", labels=["route"])
        for route, n in sorted(data["internal_errors"].items()):
            errors.add_metric([route], n)
        yield errors

        management = CounterMetricFamily(
            "keyplane_management_operations", "Verified management calls by dialect, operation (the route's "
            "path) and outcome (ok, rejected, unavailable).", labels=["dialect", "operation", "outcome"],
        )
        for (dialect, operation, outcome), n in sorted(data["management"].items()):
            management.add_metric([dialect, operation, outcome], n)
        yield management

        latency = HistogramMetricFamily(
            "keyplane_request_duration_seconds", "Time of each HTTP request in the app, by route.", labels=["route"]
        )
        for route, values in sorted(data["latency"].items()):
            cumulative, buckets = 0, []
            for bound, n in zip((*BUCKETS, float("inf")), values[:-1], strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([route], buckets, sum_value=values[-1])
        yield latency

        gauges = data["gauges"]
        yield GaugeMetricFamily("keyplane_key_cache_entries", "Keys in the verifier's cache (all workers).",
                                value=gauges.get("cache_entries", 0))
        yield CounterMetricFamily("keyplane_key_cache_hits", "Key lookups answered from the cache.",
                                  value=gauges.get("cache_hits_total", 0))
        yield CounterMetricFamily("keyplane_key_cache_misses", "Key lookups that missed the cache (a store lookup, "
                                  "or an API key recently found unknown).", value=gauges.get("cache_misses_total", 0))
        if "keys_expiring" in gauges:
            yield GaugeMetricFamily("keyplane_keys_expiring", "Keys that expire within KEYPLANE_EXPIRING_WITHIN (read "
                                    "from the store at most once a minute).", value=gauges["keys_expiring"])
            yield GaugeMetricFamily("keyplane_keys_expired", "Keys past their expiry, still in the store (read at "
                                    "most once a minute).", value=gauges.get("keys_expired", 0))
        if "nonce_journal_bytes" in gauges:
            yield GaugeMetricFamily("keyplane_nonce_journal_bytes", "Size of the SQLite nonce journal (compacted "
                                    "into the store past its limit).", value=gauges["nonce_journal_bytes"])
        if "replay_ledger_owner" in gauges:
            yield GaugeMetricFamily("keyplane_replay_ledger_owner", "Worker processes that own the SQLite replay "
                                    "ledger (1: one records alone, with no system call; 0: shared, every record "
                                    "appended, or nothing recorded yet).", value=gauges["replay_ledger_owner"])
        yield CounterMetricFamily("keyplane_refusal_log_suppressed", "Refusal log lines not written (at most N a "
                                  "second per reason are).", value=data["suppressed"])
        yield GaugeMetricFamily("keyplane_metrics_workers", "Live worker processes whose counters this scrape "
                                "includes.", value=data["workers"])


def registry_for(metrics: Metrics, files: WorkerFiles | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KeyplaneCollector(metrics, files))
    return registry
