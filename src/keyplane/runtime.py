"""Wires the parts together: store, master key, service, verifier. Used by the app and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from keyplane.auth import Verifier
from keyplane.config import Settings
from keyplane.crypto import load_or_create_master_key
from keyplane.ratelimit import RateLimiter
from keyplane.service import KeyplaneService
from keyplane.store import Store


@dataclass
class Runtime:
    settings: Settings
    store: Store
    service: KeyplaneService
    verifier: Verifier

    def close(self) -> None:
        self.store.close()


def build_runtime(settings: Settings) -> Runtime:
    store = Store(settings.database_url)
    store.migrate()
    master_key = load_or_create_master_key(settings.master_key, settings.resolved_master_key_file)
    service = KeyplaneService(store, master_key, settings.policy)
    verifier = Verifier(store, master_key, RateLimiter(settings.redis_url))
    service.on_keys_changed(verifier.invalidate)
    return Runtime(settings=settings, store=store, service=service, verifier=verifier)
