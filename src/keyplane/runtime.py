"""Wires the parts together: store, master key, service, verifier. Used by the app and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from keyplane.auth import Verifier
from keyplane.auth.changes import KeyChangeFeed
from keyplane.auth.invalidation import RedisInvalidationBus
from keyplane.config import Settings
from keyplane.crypto import MasterKey, load_or_create_master_key
from keyplane.ratelimit import RateLimiter
from keyplane.service import KeyplaneService
from keyplane.store import Store


@dataclass
class Runtime:
    settings: Settings
    store: Store
    service: KeyplaneService
    verifier: Verifier
    bus: RedisInvalidationBus | None = None
    feed: KeyChangeFeed | None = None

    def close(self) -> None:
        if self.feed is not None:
            self.feed.close()
        if self.bus is not None:
            self.bus.close()
        self.store.close()


def load_master_key(settings: Settings) -> MasterKey:
    return load_or_create_master_key(settings.master_key, settings.resolved_master_key_file)


def build_runtime(settings: Settings, *, follow_changes: bool = False) -> Runtime:
    """The parts, wired. ``follow_changes`` (servers) also follows key changes made by other processes."""
    store = Store(settings.database_url)
    store.migrate()
    master_key = load_master_key(settings)
    service = KeyplaneService(store, master_key, settings.policy)
    verifier = Verifier(
        store, master_key, RateLimiter(settings.redis_url), reload_master_key=lambda: load_master_key(settings)
    )
    service.on_keys_changed(verifier.invalidate)
    bus = None
    if settings.redis_url:
        # several processes or instances: each change reaches every other process's cache too
        bus = RedisInvalidationBus(settings.redis_url, verifier.invalidate, verifier.cache.clear)
        service.on_keys_changed(bus.publish)
    feed = KeyChangeFeed(store, verifier.invalidate) if follow_changes else None
    return Runtime(settings=settings, store=store, service=service, verifier=verifier, bus=bus, feed=feed)
