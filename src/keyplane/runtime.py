"""Wires the parts together: store, master key, service, verifier. Used by the app and the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.exceptions import InvalidTag

from keyplane.auth import Verifier
from keyplane.auth.changes import KeyChangeFeed
from keyplane.auth.invalidation import RedisInvalidationBus
from keyplane.config import Settings
from keyplane.crypto import MasterKey, MasterKeyError, MasterKeyRing
from keyplane.endpoints import EndpointTable
from keyplane.ratelimit import RateLimiter
from keyplane.services import KeyplaneService
from keyplane.store import Revision, Store
from keyplane.store.location import DatabaseLocation, locate


@dataclass
class Runtime:
    settings: Settings
    store: Store
    service: KeyplaneService
    verifier: Verifier
    bus: RedisInvalidationBus | None = None
    feed: KeyChangeFeed | None = None
    created_database: bool = False  # this process made the database (``serve`` or ``init`` on a fresh one)
    migrated: tuple[Revision, ...] = ()  # the schema revisions this process applied (none: it was current)

    def close(self) -> None:
        if self.feed is not None:
            self.feed.close()
        if self.bus is not None:
            self.bus.close()
        self.verifier.usage.close()  # the last uses not yet written, while the store is open
        self.verifier.nonces.close()  # the nonce journal's file (SQLite)
        self.verifier.rate_limiter.close()  # the lease thread; unspent leased units go back to Redis
        self.store.close()


class DatabaseMissing(Exception):
    """There is no database at the location, and this process may not make one (``create=False``)."""


class SchemaOutOfDate(Exception):
    """The database's schema is older than this keyplane's, and this process may not migrate it."""


class MasterKeyMismatch(MasterKeyError):
    """The master key in force is not the one the database's secrets are sealed under."""


def require_explicit_master_key(settings: Settings) -> None:
    explicit = settings.master_key or settings.master_key_file
    if not explicit and not settings.database_url.startswith("sqlite"):
        raise MasterKeyError(
            "set KEYPLANE_MASTER_KEY or KEYPLANE_MASTER_KEY_FILE: on a shared database every node needs the "
            "same master key"
        )


def master_key_ring(settings: Settings, *, create: bool = True) -> MasterKeyRing:
    """The master keys of ``settings``. Beyond SQLite the setting must be explicit: several nodes share the
    store, so a key file made in each one's working directory would seal secrets the others cannot open."""
    require_explicit_master_key(settings)
    if settings.master_key:
        return MasterKeyRing(settings.master_key)
    return MasterKeyRing(key_file=settings.resolved_master_key_file.absolute(), create=create)


def load_master_key(settings: Settings) -> MasterKey:
    return master_key_ring(settings).current()


def check_master_key(store: Store, keys: MasterKey, location: DatabaseLocation) -> None:
    """Refuses (``MasterKeyMismatch``) keys that do not hold the one the store records; records the newest
    key's fingerprint in a store that has none yet (new, or made before 0003), if the keys open its secrets.
    A ring that holds the recorded key passes: during a rotation it is NEW,OLD and the store still says OLD
    until every secret is re-sealed (``keyplane master-key rotate`` then records NEW)."""
    mine = keys.fingerprints[0]
    recorded = store.master_key_fingerprint()
    if recorded is None:
        with store.reading() as tx:
            sample = tx.one_sealed_secret()
        if sample is not None:
            try:
                keys.unseal(sample[1], sample[0])
            except InvalidTag:
                raise MasterKeyMismatch(
                    f"the master key in force ({mine}) opens none of the API secrets in {location.shown}: give "
                    "keyplane the key they were sealed under"
                ) from None
        recorded = store.record_master_key_fingerprint(mine)
    if recorded not in keys.fingerprints:
        raise MasterKeyMismatch(
            f"the master key in force ({mine}) is not the one {location.shown} is sealed under ({recorded}): "
            "give keyplane that key (KEYPLANE_MASTER_KEY or the key file)"
        )


def build_runtime(settings: Settings, *, follow_changes: bool = False, create: bool = True) -> Runtime:
    """The parts, wired. ``follow_changes`` (servers) also follows key changes made by other processes.

    ``create`` (``keyplane serve``/``init``, the app, tests): a database that is not there yet is made, with
    a master key file beside it, and an older schema is migrated. Without it a missing database is
    ``DatabaseMissing``, a missing key file a ``MasterKeyError`` and an older schema ``SchemaOutOfDate``
    (``keyplane migrate``): every other command refuses to change state as a side effect. Either way a master
    key that is not the one the store records is refused (``MasterKeyMismatch``)."""
    location = locate(settings.database_url)  # BadDatabaseUrl before anything is made
    require_explicit_master_key(settings)
    new = location.in_memory or location.file_missing()
    if new and not create and not location.in_memory:
        raise DatabaseMissing(f"no database at {location.shown} (SQLite file missing): run `keyplane init` first")
    store: Store | None = None
    if not new:  # a file or a server that is there: its tables may not be (an empty file, a new schema)
        store = Store(settings.database_url)
        try:
            new = not store.has_schema()
        except BaseException:
            store.close()
            raise
        if new and not create:
            store.close()
            raise DatabaseMissing(f"no keyplane tables in {location.shown}: run `keyplane init` first")
    # a missing or unsafe master key stops everything before the store is made or changed
    try:
        ring = master_key_ring(settings, create=new)
    except BaseException:
        if store is not None:
            store.close()
        raise
    store = store or Store(settings.database_url)
    try:
        migrated = store.migrate() if create else _require_current_schema(store, location)
        check_master_key(store, ring.current(), location)
    except BaseException:
        store.close()
        raise
    service = KeyplaneService(store, ring, settings.policy)
    verifier = Verifier(
        store, ring.current(), RateLimiter(settings.redis_url), reload_master_key=ring.current,
        endpoints=settings.endpoints, usage_flush_s=settings.last_used_flush_s,
    )
    service.on_keys_changed(verifier.invalidate)
    feed = None
    if follow_changes:
        # every change committed anywhere reaches this cache (LISTEN/NOTIFY on PostgreSQL, and a cursor that
        # cannot skip); entries held for a while are re-validated in the feed's thread
        def key_versions(api_keys: Sequence[str]) -> dict[str, tuple[int, int]]:
            with store.reading() as tx:
                return tx.key_versions(api_keys)

        feed = KeyChangeFeed(
            store, verifier.invalidate, clear=verifier.cache.clear,
            revalidate=lambda: verifier.cache.revalidate(key_versions),
        )
    bus = None
    if settings.redis_url:
        # several processes or instances: each change reaches every other process's cache as it is published;
        # after a lost subscription the feed reads what was missed (without a feed: the cache starts over)
        bus = RedisInvalidationBus(
            settings.redis_url, verifier.invalidate, feed.wake if feed is not None else verifier.cache.clear
        )
        service.on_keys_changed(bus.publish)
    return Runtime(
        settings=settings, store=store, service=service, verifier=verifier, bus=bus, feed=feed,
        created_database=new and not location.in_memory, migrated=tuple(migrated),
    )


def _require_current_schema(store: Store, location: DatabaseLocation) -> list[Revision]:
    pending = store.pending_revisions()
    if pending:
        raise SchemaOutOfDate(
            f"{location.shown} is at schema revision {store.schema_revision()}, this keyplane needs "
            f"{pending[-1].id}: back it up, then run `keyplane migrate`"
        )
    return []


def open_verifier(
    database_url: str | None = None,
    *,
    master_key: str | None = None,
    master_key_file: str | Path | None = None,
    redis_url: str | None = None,
    endpoints: EndpointTable | None = None,
    follow_changes: bool = True,
) -> Verifier:
    """A verifier over the store at ``database_url``, for a venue's own Python process.

    Arguments left out come from the environment as for ``keyplane serve`` (``KEYPLANE_DATABASE_URL``,
    ``KEYPLANE_MASTER_KEY`` or ``KEYPLANE_MASTER_KEY_FILE``, ``KEYPLANE_REDIS_URL``,
    ``KEYPLANE_ENDPOINTS[_FILE]``). With ``follow_changes`` (the default) a background thread follows the
    store's key changes, so a key changed by the server or the CLI stops verifying here within 0.25 s;
    use it as a context manager, or call ``close()``. Example::

        with keyplane.open_verifier("sqlite:///keyplane.db") as verifier:
            result = verifier.verify(keyplane.SignedRequest(method, path, query, headers, body, client_ip))
            if result.valid: ...  # result.account, result.key, result.rate_limit
    """
    settings = Settings.from_env(database_url)
    changes: dict[str, object] = {}
    if master_key is not None:
        changes["master_key"] = master_key
    if master_key_file is not None:
        changes["master_key_file"] = Path(master_key_file)
    if redis_url is not None:
        changes["redis_url"] = redis_url
    if endpoints is not None:
        changes["endpoints"] = endpoints
    runtime = build_runtime(replace(settings, **changes), follow_changes=follow_changes)  # type: ignore[arg-type]
    runtime.verifier._closers.append(runtime.close)
    return runtime.verifier
