"""Last use written in batches (auth/usage.py) on SQLite and on PostgreSQL: one statement per flush, a later
use wins whatever order processes flush in, a key deleted meanwhile is left out, and a master-key reseal
covers the secrets rotations replaced."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from keyplane import crypto
from keyplane.auth.usage import UsageRecorder
from keyplane.domain.model import Scheme
from keyplane.services import KeyplaneService
from keyplane.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyplaneService]:
    url = f"sqlite:///{tmp_path / 'k.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    store = Store(url)
    store.migrate()
    yield KeyplaneService(store, crypto.MasterKey(os.urandom(32)))
    store.close()


def _statements(store: Store) -> list[str]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "key_usage" in statement:
            seen.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", count)
    return seen


def test_uses_are_written_in_one_statement_a_later_use_wins_and_a_deleted_key_is_left_out(
    service: KeyplaneService,
) -> None:
    store = service.store
    account = service.accounts.create_main_account("usage")
    keys = [service.keys.issue_main_key(account.uid, Scheme.WHITEBIT).key for _ in range(3)]
    recorder = UsageRecorder(store, interval=0)  # no thread: flushed by hand
    statements = _statements(store)
    for key in keys:
        for ip in ("10.0.0.1", "10.0.0.2"):  # many uses of a key between two flushes: the last one is kept
            recorder.used(key.id, ip)
    assert recorder.flush() == 3 and len(statements) == 1
    shown = [service.keys.find_key(k.api_key) for k in keys]
    assert {k.last_used_ip for k in shown} == {"10.0.0.2"} and all(k.last_used_at for k in shown)
    # another process's older stamp, flushed later, does not overwrite the newer one
    with store.transaction() as tx:
        tx.record_usage([(keys[0].id, 1, "192.0.2.1")])
    assert service.keys.find_key(keys[0].api_key).last_used_ip == "10.0.0.2"
    # a key deleted between its use and the flush: the others are still written
    recorder.used(keys[1].id, "10.0.0.3")
    recorder.used(keys[2].id, "10.0.0.3")
    service.keys.revoke_key(keys[1].api_key)
    assert recorder.flush() == 2
    assert service.keys.find_key(keys[2].api_key).last_used_ip == "10.0.0.3"
    with store.reading() as tx:
        assert tx.existing_key_ids([keys[1].id]) == set()
    assert recorder.flush() == 0  # nothing left over


def test_a_store_that_fails_keeps_the_batch_for_the_next_flush(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    store.migrate()
    service = KeyplaneService(store, crypto.MasterKey(os.urandom(32)))
    key = service.keys.issue_main_key(service.accounts.create_main_account("down").uid, Scheme.BITGET).key
    recorder = UsageRecorder(store, interval=0)
    recorder.used(key.id, "10.0.0.9")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE key_usage RENAME TO key_usage_away")
    assert recorder.flush() == 0  # refused, logged once, kept
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE key_usage_away RENAME TO key_usage")
    assert recorder.flush() == 1
    assert service.keys.find_key(key.api_key).last_used_ip == "10.0.0.9"
    store.close()


def test_a_master_key_reseal_covers_the_secret_a_rotation_replaced(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    store.migrate()
    old_raw, new_raw = os.urandom(32), os.urandom(32)
    old = crypto.MasterKey(old_raw)
    service = KeyplaneService(store, old)
    key = service.keys.issue_main_key(service.accounts.create_main_account("reseal").uid, Scheme.BITGET).key
    service.lifecycle.rotate(api_key=key.api_key, grace_s=3600)
    with store.reading() as tx:
        before = tx.credentials(key.id)
    assert before.previous_sealed_secret is not None and before.previous_sealed_secret != before.sealed_secret
    new = crypto.MasterKey(new_raw)
    assert service.sealing.reseal_secrets(crypto.MasterKey(new_raw, old_raw)) == 2  # the ring: new first
    with store.reading() as tx:
        after = tx.credentials(key.id)
    assert after.previous_sealed_secret is not None and after.sealed_secret is not None
    assert before.sealed_secret is not None
    assert new.unseal(after.previous_sealed_secret, key.id) == old.unseal(before.previous_sealed_secret, key.id)
    assert new.unseal(after.sealed_secret, key.id) == old.unseal(before.sealed_secret, key.id)
    store.close()
