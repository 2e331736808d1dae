"""Cache invalidation across processes and instances, through Redis pub/sub.

Each process's key cache hears of its own changes directly (the service's listener). When keyplane runs
as several processes or instances, each change is also published on a Redis channel, and every other
process drops those keys from its cache as the message arrives. This is the fast path only: the store's
change feed (auth/changes.py) carries every change too. If the subscription breaks, messages may have been
missed, so ``resync`` runs when it comes back: the runtime makes the feed read the store at once, which
re-validates exactly what changed instead of dropping every cached key (each would then re-run argon2id).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence

import redis

from keyplane.outages import redis_client

log = logging.getLogger("keyplane.invalidation")

CHANNEL = "keyplane:keys-changed"


class RedisInvalidationBus:
    def __init__(
        self,
        redis_url: str,
        invalidate: Callable[[Sequence[str]], None],
        resync: Callable[[], None],
    ) -> None:
        # short timeouts, no retries: publishing runs after a commit, on the caller's thread, and must not wait
        # for a Redis that is down
        self._redis = redis_client(redis_url)
        self._invalidate = invalidate
        self._resync = resync
        self._origin = uuid.uuid4().hex
        self._stopped = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="keyplane-invalidation", daemon=True)
        self._thread.start()
        self._subscribed.wait(timeout=5)

    def publish(self, api_keys: Sequence[str]) -> None:
        """Best effort: the change is committed, and every node reads it from the store's feed anyway."""
        try:
            self._redis.publish(CHANNEL, json.dumps({"origin": self._origin, "keys": list(api_keys)}))
        except redis.RedisError as error:
            log.warning("could not publish a key change on Redis (%s); other nodes read it from the store", error)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=3)  # the listener wakes at least once a second
        self._redis.close()

    def _listen(self) -> None:
        first = True
        while not self._stopped.is_set():
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(CHANNEL)
                if not first:
                    self._resync()  # messages may have been missed while disconnected
                first = False
                self._subscribed.set()
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._handle(message["data"])
            except redis.RedisError:
                log.warning("invalidation channel lost; reconnecting", exc_info=True)
                self._subscribed.set()  # never hold up a start (or a CLI call) while Redis is down
                self._stopped.wait(1.0)

    def _handle(self, data: bytes) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            return
        if isinstance(event, dict) and event.get("origin") != self._origin:
            self._invalidate([str(key) for key in event.get("keys", [])])
