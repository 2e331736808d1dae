"""The store and the service over a real SQLite file: ordering and paging, unique names, transactions that
leave nothing behind, and what leaves the store (never a plaintext secret)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy.exc

from keyplane import crypto
from keyplane.domain.model import AccountStatus, Scheme
from keyplane.domain.policy import Policy
from keyplane.domain.rules import BITGET_PERMISSIONS
from keyplane.errors import InvalidIp, NameTaken, SubAccountLimit
from keyplane.services import Actor, KeyplaneService, NewKeySpec, NewSubAccountWithKey
from keyplane.store import Store


@pytest.fixture
def service(tmp_path: Path) -> Iterator[KeyplaneService]:
    store = Store(f"sqlite:///{tmp_path / 'keyplane.db'}")
    store.migrate()
    yield KeyplaneService(store, crypto.MasterKey(os.urandom(32)))
    store.close()


def _actor(service: KeyplaneService, name: str = "venue") -> Actor:
    account = service.accounts.create_main_account(name)
    # a main key holding every permission: a key grants only what it holds (tests/security/test_grants.py)
    key = service.keys.issue_main_key(account.uid, Scheme.BITGET, permissions=BITGET_PERMISSIONS)
    return Actor(account=account, api_key=key.key.api_key, ip="127.0.0.1")


def _entry(name: str, ips: tuple[str, ...] = ()) -> NewSubAccountWithKey:
    return NewSubAccountWithKey(name=name, key=NewKeySpec(label="l", passphrase="abcd1234", ip_list=ips))


def _count(service: KeyplaneService, table: str) -> int:
    with service.store.reading() as tx:
        return int(tx.conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


def test_uids_look_like_bitgets_and_sub_accounts_list_newest_first_in_pages(service: KeyplaneService) -> None:
    actor = _actor(service)
    assert actor.account.uid >= 1_000_000_001
    made = service.subaccounts.create_sub_accounts(actor, [f"abcdefg{c}" for c in "abcdefg"], Scheme.BITGET, ()).created
    uids = [a.uid for a in made]
    assert uids == sorted(uids)
    listed = service.subaccounts.list_sub_accounts(actor, limit=3)
    assert [a.uid for a in listed] == uids[::-1][:3]
    rest = service.subaccounts.list_sub_accounts(actor, uid_less_than=listed[-1].uid, limit=100)
    assert [a.uid for a in listed + rest] == uids[::-1]
    service.subaccounts.modify_sub_account(actor, uid=uids[0], status=AccountStatus.FREEZE)
    assert [a.uid for a in service.subaccounts.list_sub_accounts(actor, status="freeze")] == [uids[0]]


def test_names_are_unique_across_the_venue_whatever_their_case(service: KeyplaneService) -> None:
    first, second = _actor(service, "a"), _actor(service, "b")
    service.subaccounts.create_sub_account(first, Scheme.BITGET, name="SameName")
    with pytest.raises(NameTaken):
        service.subaccounts.create_sub_account(second, Scheme.BITGET, name="samename")
    assert service.subaccounts.create_sub_accounts(second, ["SAMENAME"], Scheme.BITGET, ()).failed == ["SAMENAME"]
    # the unique index holds even when the check before the insert is skipped
    with pytest.raises(sqlalchemy.exc.IntegrityError), service.store.transaction() as tx:
        tx.insert_account(name="sAmEnAmE", parent_uid=second.account.uid)


def test_a_batch_failing_on_its_last_entry_leaves_nothing(service: KeyplaneService) -> None:
    actor = _actor(service)
    accounts, keys, events = _count(service, "accounts"), _count(service, "api_keys"), _count(service, "audit_events")
    entries = [_entry("abcdefgh"), _entry("bcdefghi"), _entry("cdefghij", ips=("10.0.0.1", "not-an-ip"))]
    with pytest.raises(InvalidIp):
        service.subaccounts.batch_create_sub_accounts_with_keys(actor, entries, Scheme.BITGET)
    assert (_count(service, "accounts"), _count(service, "api_keys"), _count(service, "audit_events")) == (
        accounts, keys, events)
    issued = service.subaccounts.batch_create_sub_accounts_with_keys(actor, entries[:2], Scheme.BITGET)
    assert [i.key.account_uid for i in issued] == [a.uid for a in service.subaccounts.list_sub_accounts(actor)][::-1]


def test_threads_racing_batches_never_pass_the_limit(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'race.db'}")
    store.migrate()
    service = KeyplaneService(store, crypto.MasterKey(os.urandom(32)),
                              Policy.from_overrides({"bitget": {"sub_accounts_per_main": 7}}))
    actor = _actor(service)
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def run(index: int) -> None:
        start.wait()
        try:
            service.subaccounts.batch_create_sub_accounts_with_keys(
                actor, [_entry(f"race{chr(97 + index)}{c}xy") for c in "ab"], Scheme.BITGET)
            outcomes.append("ok")
        except SubAccountLimit:
            outcomes.append("limit")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["limit"] * 5 + ["ok"] * 3
    assert len(service.subaccounts.list_sub_accounts(actor)) == 6
    store.close()


def test_only_sealed_secrets_and_passphrase_hashes_reach_the_database(service: KeyplaneService, tmp_path: Path) -> None:
    actor = _actor(service)
    (issued,) = service.subaccounts.batch_create_sub_accounts_with_keys(actor, [_entry("secretss")], Scheme.BITGET)
    main_key = service.keys.issue_main_key(actor.account.uid, Scheme.BITGET, passphrase="mainpass1")
    assert issued.secret and main_key.secret
    with sqlite3.connect(tmp_path / "keyplane.db") as conn:
        rows = conn.execute("SELECT sealed_secret, passphrase_hash FROM api_keys").fetchall()
    assert len(rows) == 3  # the actor's main key, the sub-account's and the second main key
    for sealed, passphrase_hash in rows:
        assert issued.secret.encode() not in sealed and main_key.secret.encode() not in sealed
        assert passphrase_hash.startswith("$argon2id$") and "abcd1234" not in passphrase_hash
    with service.store.reading() as tx:
        loaded = tx.load_key_for_verification(issued.key.api_key)
    assert loaded is not None
    key, credentials, account = loaded
    assert service.master_key.unseal(credentials.sealed_secret or b"", key.id) == issued.secret.encode()
    assert account.uid == issued.key.account_uid and account.parent_uid == actor.account.uid


def test_listeners_hear_of_changed_keys_after_commit_and_never_after_a_rollback(service: KeyplaneService) -> None:
    actor = _actor(service)
    (issued,) = service.subaccounts.batch_create_sub_accounts_with_keys(actor, [_entry("listenme")], Scheme.BITGET)
    heard: list[list[str]] = []
    service.on_keys_changed(lambda keys: heard.append(list(keys)))
    service.subaccounts.modify_sub_account(actor, uid=issued.key.account_uid, status=AccountStatus.FREEZE)
    assert heard == [[issued.key.api_key]]
    with pytest.raises(RuntimeError), service.store.transaction() as tx:
        tx.update_account(issued.key.account_uid, status=AccountStatus.NORMAL)
        raise RuntimeError("abort")
    assert heard == [[issued.key.api_key]]
    assert service.subaccounts.list_sub_accounts(actor)[0].status is AccountStatus.FREEZE


@pytest.fixture
def pg_service(pg_url: str) -> Iterator[KeyplaneService]:
    """The service over a fresh schema of the PostgreSQL test database (conftest's ``pg_url``)."""
    store = Store(pg_url)
    store.migrate()
    yield KeyplaneService(store, crypto.MasterKey(os.urandom(32)))
    store.close()


def _race(service: KeyplaneService, actors: list[Actor], name: str) -> tuple[list[str], list[str]]:
    start = threading.Barrier(len(actors))
    created: list[str] = []
    failed: list[str] = []

    def run(actor: Actor) -> None:
        start.wait()
        outcome = service.subaccounts.create_sub_accounts(actor, [name], Scheme.BITGET, ())
        created.extend(a.name for a in outcome.created)
        failed.extend(outcome.failed)

    threads = [threading.Thread(target=run, args=(actor,)) for actor in actors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return created, failed


@pytest.mark.postgres
def test_postgres_two_main_accounts_racing_for_a_name_get_one_success_and_one_failure(
    pg_service: KeyplaneService,
) -> None:
    # their transactions lock different main accounts, so both can find the name free; the loser's
    # insert used to fail the unique index with an IntegrityError (HTTP 500), now it is a failureList entry
    actors = [_actor(pg_service, "a"), _actor(pg_service, "b")]
    for round_ in range(8):
        name = "racing" + "".join(chr(97 + (round_ * 5 + k) % 26) for k in range(2))
        assert _race(pg_service, actors, name) == ([name], [name])


def test_sqlite_two_main_accounts_racing_for_a_name_get_one_success_and_one_failure(
    service: KeyplaneService,
) -> None:
    actors = [_actor(service, "a"), _actor(service, "b")]
    for round_ in range(4):
        name = "racing" + "".join(chr(97 + (round_ * 5 + k) % 26) for k in range(2))
        assert _race(service, actors, name) == ([name], [name])
