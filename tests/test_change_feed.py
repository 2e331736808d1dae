"""The change feed cannot skip: a change id that commits after a higher one is still read, PostgreSQL's
NOTIFY brings a change at once, purging never rewinds SQLite's ids, cached keys are re-validated after their
TTL, and a Redis reconnect re-reads what it missed instead of dropping every cached key."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from keyplane.auth.changes import KeyChangeFeed
from keyplane.config import Settings
from keyplane.domain.model import Scheme
from keyplane.runtime import build_runtime
from keyplane.services import Actor, NewKeySpec
from keyplane.store import Store
from keyplane.store.store import now_ms
from keyplane.store.tables import key_changes


class Heard:
    def __init__(self) -> None:
        self.keys: list[str] = []

    def __call__(self, keys: Sequence[str]) -> None:
        self.keys.extend(keys)

    def wait_for(self, key: str, seconds: float) -> float:
        started = time.monotonic()
        while key not in self.keys:
            assert time.monotonic() - started < seconds, f"{key} not heard within {seconds} s"
            time.sleep(0.002)
        return time.monotonic() - started


@pytest.mark.postgres
def test_a_lower_id_that_commits_after_a_higher_one_is_not_skipped(pg_url: str) -> None:
    store = Store(pg_url)
    store.migrate()
    heard = Heard()
    feed = KeyChangeFeed(store, heard, interval=3600, listen=False)  # polled by hand below
    try:
        slow = store.engine.connect()
        slow_tx = slow.begin()
        slow.execute(sa.insert(key_changes).values(api_key="slow", at=now_ms()))  # takes the lower id
        with store.engine.begin() as conn:
            conn.execute(sa.insert(key_changes).values(api_key="fast", at=now_ms()))
        feed.poll()
        assert "fast" in heard.keys and "slow" not in heard.keys
        assert feed.gaps == 1
        slow_tx.commit()
        slow.close()
        feed.poll()
        assert "slow" in heard.keys
        assert feed.gaps == 0
    finally:
        feed.close()
        store.close()


@pytest.mark.postgres
def test_notify_brings_a_change_at_once_without_waiting_for_a_poll(pg_url: str) -> None:
    settings = Settings(database_url=pg_url, master_key="ab" * 32)
    writer = build_runtime(settings)
    reader = build_runtime(settings)
    heard = Heard()
    feed = KeyChangeFeed(reader.store, heard, interval=3600)
    try:
        assert feed.listening.wait(5)
        main = writer.service.accounts.create_main_account("venue")
        for _ in range(20):
            key = writer.service.keys.issue_main_key(main.uid, Scheme.WHITEBIT).key
            writer.service.keys.revoke_key(key.api_key)
            heard.wait_for(key.api_key, 0.5)  # the feed polls once an hour: only NOTIFY can bring it
    finally:
        feed.close()
        writer.close()
        reader.close()


def test_purging_old_changes_never_hands_out_an_id_a_follower_read_past(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    store.migrate()
    with store.engine.begin() as conn:
        for name in ("a", "b", "c"):
            conn.execute(sa.insert(key_changes).values(api_key=name, at=1))
    heard = Heard()
    feed = KeyChangeFeed(store, heard, interval=3600)
    try:
        with store.transaction() as tx:
            tx.purge_key_changes(before=now_ms())
        with store.engine.begin() as conn:
            conn.execute(sa.insert(key_changes).values(api_key="after-purge", at=now_ms()))
        feed.poll()
        assert "after-purge" in heard.keys
    finally:
        feed.close()
        store.close()


def _plane(runtime: Any) -> tuple[Actor, Any]:
    main = runtime.service.accounts.create_main_account("venue")
    actor = Actor(account=main)
    sub = runtime.service.subaccounts.create_sub_account(actor, Scheme.BITGET, name="ttlsub")
    issued = runtime.service.keys.create_sub_key(
        actor, Scheme.BITGET, NewKeySpec(label="k", passphrase="abcd1234", permissions=("read",)), uid=sub.uid
    )
    return actor, issued


def test_entries_past_their_ttl_are_revalidated_off_the_hot_path(tmp_path: Path) -> None:
    runtime = build_runtime(Settings(database_url=f"sqlite:///{tmp_path / 'k.db'}", master_key="ab" * 32))
    try:
        _actor, issued = _plane(runtime)
        cache = runtime.verifier.cache
        api_key = issued.key.api_key

        def versions(keys: Sequence[str]) -> dict[str, tuple[int, int]]:
            with runtime.store.reading() as tx:
                return tx.key_versions(keys)

        entry = cache.get(api_key)
        assert entry is not None and entry.passphrase_ok("abcd1234")
        assert cache.revalidate(versions, ttl=60) == 0  # young: not even read
        assert cache.revalidate(versions, ttl=0) == 0  # unchanged: kept with its verified passphrase
        assert cache.get(api_key) is entry and entry.passphrase_digest is not None
        # a change no listener heard of (written around the service, as a lost message would leave it)
        with runtime.store.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE api_keys SET ip_list = '[\"10.0.0.1\"]', updated_at = updated_at + 1")
        assert cache.get(api_key) is entry  # the hot path does not look
        assert cache.revalidate(versions, ttl=0) == 1
        fresh = cache.get(api_key)
        assert fresh is not None and fresh is not entry and fresh.key.ip_list == ("10.0.0.1",)
        # the passphrase hash did not change: the reloaded entry needs no argon2id run
        assert fresh.passphrase_digest is not None and not fresh.passphrase_needs_slow_check
        with runtime.store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM api_keys")
        assert cache.revalidate(versions, ttl=0) == 1
        assert len(cache) == 0
    finally:
        runtime.close()


@pytest.mark.redis
def test_a_redis_reconnect_keeps_the_cache_and_reads_what_it_missed(tmp_path: Path, private_redis: Any) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'k.db'}", master_key="ab" * 32, redis_url=private_redis.url
    )
    writer = build_runtime(settings)
    reader = build_runtime(settings, follow_changes=True)
    try:
        actor, issued = _plane(writer)
        other = writer.service.keys.create_sub_key(
            actor, Scheme.BITGET, NewKeySpec(label="o", passphrase="abcd1234"),
            uid=issued.key.account_uid,
        )
        cache = reader.verifier.cache
        kept, changed = cache.get(issued.key.api_key), cache.get(other.key.api_key)
        assert kept is not None and changed is not None and kept.passphrase_ok("abcd1234")
        private_redis.stop()
        writer.service.keys.delete_sub_key(actor, key_id=other.key.id)  # committed while Redis is down
        private_redis.start()
        deadline = time.monotonic() + 10
        while cache.get(other.key.api_key) is not None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert cache.get(issued.key.api_key) is kept and kept.passphrase_digest is not None
    finally:
        writer.close()
        reader.close()


@pytest.mark.postgres
def test_listen_comes_back_after_a_postgres_restart(private_postgres: Any) -> None:
    settings = Settings(database_url=private_postgres.new_database(), master_key="ab" * 32)
    writer = build_runtime(settings)
    heard = Heard()
    feed = KeyChangeFeed(writer.store, heard, interval=3600)
    try:
        assert feed.listening.wait(5)
        main = writer.service.accounts.create_main_account("venue")
        private_postgres.stop()
        deadline = time.monotonic() + 10
        while feed.listening.is_set():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        private_postgres.start()
        assert feed.listening.wait(15)
        key = writer.service.keys.issue_main_key(main.uid, Scheme.WHITEBIT).key
        writer.service.keys.revoke_key(key.api_key)
        heard.wait_for(key.api_key, 0.5)  # polls are an hour apart: the notification came back
    finally:
        feed.close()
        writer.close()
