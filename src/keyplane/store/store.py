"""The store: every read and write keyplane makes, over one SQLAlchemy engine.

Writes run in ``Store.transaction()``. On SQLite that transaction starts with ``BEGIN IMMEDIATE``,
which takes the database's write lock up front: two writers can then never both read a count and
both insert past a limit. On PostgreSQL the same guarantee comes from ``lock_account`` (``SELECT …
FOR UPDATE`` on the main account's row), which every limit-checking use-case takes first.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine, Row

from keyplane.domain.model import (
    Account,
    AccountStatus,
    ApiKey,
    AuditEvent,
    EndpointRule,
    KeyCredentials,
    Scheme,
    SignType,
)
from keyplane.errors import NameTaken
from keyplane.store.tables import (
    MAIN_ACCOUNT_NAME_INDEX,
    accounts,
    api_keys,
    audit_events,
    key_changes,
    key_nonces,
    key_usage,
    seen_nonces,
    store_settings,
)

_MIGRATIONS = Path(__file__).parent / "migrations"
# PostgreSQL: (b"keyp" as a class id, the schema) -> one migrating process per schema at a time
_MIGRATION_LOCK = sa.text("SELECT pg_advisory_xact_lock(1801812336, hashtext(coalesce(current_schema(), '')))")

log = logging.getLogger("keyplane.store")
MASTER_KEY_FINGERPRINT = "master_key_fingerprint"


class MigrationRefused(Exception):
    """A migration that cannot run on this database's data (one line: what to do); nothing was changed."""


@dataclass(frozen=True)
class Revision:
    """One schema revision: its id and the first line of its description."""

    id: str
    title: str


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_alembic_config())


def head_revision() -> str:
    """The newest schema revision this keyplane knows."""
    head = _scripts().get_current_head()
    assert head is not None
    return head


def _pending(current: str | None) -> list[Revision]:
    """The revisions an upgrade from ``current`` (None: an empty database) applies, oldest first; a revision
    this keyplane does not know (a newer keyplane upgraded the database) is ``MigrationRefused``."""
    scripts = _scripts()
    known = {script.revision for script in scripts.walk_revisions()}
    if current is not None and current not in known:
        raise MigrationRefused(
            f"the database is at schema revision {current}, which this keyplane (newest: {head_revision()}) does "
            "not know: a newer keyplane upgraded it; run that version"
        )
    found = scripts.iterate_revisions("heads", current or "base")
    return [Revision(script.revision, (script.doc or "").split("\n", 1)[0]) for script in reversed(list(found))]


def now_ms() -> int:
    return int(time.time() * 1000)


def normalize_url(url: str) -> str:
    """Plain ``postgresql://`` URLs use psycopg 3, the driver keyplane ships with."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        # Outages (keyplane.outages): a connection checked out of the pool is pinged first, so one that a
        # database restart dropped is replaced instead of failing its request; a connection attempt to a
        # database that does not answer gives up after 2 s (libpq's minimum), a wait for a free pooled one
        # after 10 s. Statement parameters (sealed secrets, hashes) never appear in an error's text.
        return sa.create_engine(
            url, pool_size=10, max_overflow=20, pool_pre_ping=True, pool_timeout=10, hide_parameters=True,
            connect_args={"connect_timeout": 2},
        )
    engine = sa.create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when a transaction begins (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get("keyplane_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _account(row: Row[Any]) -> Account:
    return Account(
        uid=row.uid,
        public_id=row.public_id,
        parent_uid=row.parent_uid,
        name=row.name,
        label=row.label,
        email=row.email,
        share_kyc=bool(row.share_kyc),
        permissions=tuple(row.permissions),
        status=AccountStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _api_key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        api_key=row.api_key,
        account_uid=row.account_uid,
        scheme=Scheme(row.scheme),
        sign_type=SignType(row.sign_type),
        label=row.label,
        permissions=tuple(row.permissions),
        key_type=row.key_type,
        ip_list=tuple(row.ip_list),
        endpoints=tuple(EndpointRule(url=e["url"], enabled=bool(e["enabled"])) for e in row.endpoints),
        enabled=bool(row.enabled),
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
        previous_until=row.previous_until,
        # only the public reads join key_usage (``_PUBLIC_KEY``); verification does not need it
        last_used_at=row._mapping.get("last_used_at"),
        last_used_ip=row._mapping.get("last_used_ip"),
    )


def _credentials(row: Row[Any]) -> KeyCredentials:
    return KeyCredentials(
        sealed_secret=row.sealed_secret, public_key_pem=row.public_key, passphrase_hash=row.passphrase_hash,
        previous_sealed_secret=row.previous_sealed_secret, previous_passphrase_hash=row.previous_passphrase_hash,
    )


# Built once: constructing this select took most of a cache miss's time (bench/README.md).
_KEY_FOR_VERIFICATION = (
    sa.select(api_keys, *[c.label(f"acct_{c.name}") for c in accounts.c])
    .join(accounts, accounts.c.uid == api_keys.c.account_uid)
    .where(api_keys.c.api_key == sa.bindparam("api_key"))
)

_SECRET_COLUMNS = (
    "sealed_secret", "public_key", "passphrase_hash", "previous_sealed_secret", "previous_passphrase_hash",
)
_PUBLIC_KEY_COLUMNS = [c for c in api_keys.c if c.name not in _SECRET_COLUMNS]
# a key's public record with its last use (NULL until one is recorded)
_PUBLIC_KEY: sa.Select[Any] = sa.select(
    *_PUBLIC_KEY_COLUMNS, key_usage.c.last_used_at, key_usage.c.last_used_ip
).select_from(api_keys.outerjoin(key_usage, key_usage.c.api_key_id == api_keys.c.id))


# One upsert for a batch of last uses (SQLite and PostgreSQL alike): compiled once, executed over the rows.
_RECORD_USAGE = sa.text(
    "INSERT INTO key_usage (api_key_id, last_used_at, last_used_ip) VALUES (:key_id, :at, :ip) "
    "ON CONFLICT (api_key_id) DO UPDATE SET last_used_at = excluded.last_used_at, "
    "last_used_ip = excluded.last_used_ip WHERE excluded.last_used_at > key_usage.last_used_at"
)

KeyListener = Callable[[Sequence[str]], None]

# PostgreSQL's NOTIFY payload limit is 8000 bytes; a longer list goes as an empty payload ("read the feed")
_NOTIFY_MAX = 7900


class Transaction:
    """The reads and writes of one use-case, inside one database transaction.

    Every write that touches a key or its account records the key in ``changed_keys``; the store turns
    them into ``key_changes`` rows in the same transaction and tells its listeners after the commit, so
    no use-case can forget to invalidate a cache.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.changed_keys: set[str] = set()

    def _key_changed(self, key_id: str) -> None:
        api_key = self.conn.execute(sa.select(api_keys.c.api_key).where(api_keys.c.id == key_id)).scalar()
        if api_key is not None:
            self.changed_keys.add(api_key)

    def _account_changed(self, uid: int) -> None:
        self.changed_keys.update(self.api_key_ids_of(uid))

    # accounts ---------------------------------------------------------------------------------

    def lock_account(self, uid: int) -> Account | None:
        """Reads an account and holds its row until commit (a no-op lock on SQLite, see module doc)."""
        row = self.conn.execute(sa.select(accounts).where(accounts.c.uid == uid).with_for_update()).first()
        return _account(row) if row else None

    def get_account(self, uid: int) -> Account | None:
        row = self.conn.execute(sa.select(accounts).where(accounts.c.uid == uid)).first()
        return _account(row) if row else None

    def get_account_by_public_id(self, public_id: str) -> Account | None:
        row = self.conn.execute(sa.select(accounts).where(accounts.c.public_id == public_id)).first()
        return _account(row) if row else None

    def insert_account(
        self,
        *,
        name: str,
        parent_uid: int | None,
        label: str = "",
        email: str | None = None,
        share_kyc: bool = False,
        permissions: Sequence[str] = (),
        status: AccountStatus = AccountStatus.NORMAL,
    ) -> Account:
        at = now_ms()
        values: dict[str, Any] = {
            "public_id": str(uuid.uuid4()),
            "parent_uid": parent_uid,
            "name": name,
            "alias_key": name.lower() if parent_uid is not None else None,
            "label": label,
            "email": email,
            "share_kyc": share_kyc,
            "permissions": list(permissions),
            "status": status.value,
            "created_at": at,
            "updated_at": at,
        }
        insert = sa.insert(accounts).values(**values).returning(accounts.c.uid)
        if parent_uid is not None:
            uid = self.conn.execute(insert).scalar_one()
        else:
            # The unique index on main-account names (0004) is the rule; a caller's own look-up first only makes
            # the common refusal cheaper. A savepoint keeps the transaction usable after a lost race.
            try:
                with self.conn.begin_nested():
                    uid = self.conn.execute(insert).scalar_one()
            except sa.exc.IntegrityError as error:
                if MAIN_ACCOUNT_NAME_INDEX not in str(error.orig):
                    raise
                raise NameTaken(f"a main account is already named {name!r}", field="name") from None
        return Account(
            uid=uid,
            public_id=values["public_id"],
            parent_uid=parent_uid,
            name=name,
            label=label,
            email=email,
            share_kyc=share_kyc,
            permissions=tuple(permissions),
            status=status,
            created_at=at,
            updated_at=at,
        )

    def insert_account_unless_taken(self, **values: Any) -> Account | None:
        """``insert_account``, or None when a concurrent transaction took the name first.

        On PostgreSQL two main accounts' transactions run side by side, so both may find a name free; the
        venue-wide unique index then fails the later insert. A savepoint keeps this transaction usable.
        """
        try:
            with self.conn.begin_nested():
                return self.insert_account(**values)
        except sa.exc.IntegrityError:
            return None

    def update_account(self, uid: int, **values: Any) -> Account:
        if "name" in values:
            values["alias_key"] = values["name"].lower()
        if "permissions" in values:
            values["permissions"] = list(values["permissions"])
        if "status" in values:
            values["status"] = AccountStatus(values["status"]).value
        values["updated_at"] = now_ms()
        self.conn.execute(sa.update(accounts).where(accounts.c.uid == uid).values(**values))
        self._account_changed(uid)
        account = self.get_account(uid)
        assert account is not None
        return account

    def delete_account(self, uid: int) -> None:
        self._account_changed(uid)
        self.conn.execute(sa.delete(api_keys).where(api_keys.c.account_uid == uid))
        self.conn.execute(sa.delete(accounts).where(accounts.c.uid == uid))

    def alias_taken(self, alias: str, *, except_uid: int | None = None) -> bool:
        query = sa.select(accounts.c.uid).where(accounts.c.alias_key == alias.lower())
        if except_uid is not None:
            query = query.where(accounts.c.uid != except_uid)
        return self.conn.execute(query).first() is not None

    def count_sub_accounts(self, main_uid: int) -> int:
        query = sa.select(sa.func.count()).select_from(accounts).where(accounts.c.parent_uid == main_uid)
        return int(self.conn.execute(query).scalar_one())

    def list_main_accounts(
        self, *, name_contains: str | None = None, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Account]:
        """The operator's view: main accounts, oldest first (UID order), filtered by name and status."""
        query = sa.select(accounts).where(accounts.c.parent_uid.is_(None))
        if status is not None:
            query = query.where(accounts.c.status == status)
        if name_contains:
            query = query.where(sa.func.lower(accounts.c.name).contains(name_contains.lower(), autoescape=True))
        query = query.order_by(accounts.c.uid).limit(limit).offset(offset)
        return [_account(row) for row in self.conn.execute(query)]

    def main_account_named(self, name: str) -> Account | None:
        query = sa.select(accounts).where(
            accounts.c.parent_uid.is_(None), sa.func.lower(accounts.c.name) == name.lower()
        )
        row = self.conn.execute(query.limit(1)).first()
        return _account(row) if row else None

    def list_sub_accounts(
        self,
        main_uid: int,
        *,
        status: str | None = None,
        uid_less_than: int | None = None,
        search: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Account]:
        """Newest first (highest UID first), which is also the order Bitget's ``idLessThan`` pages in."""
        query = sa.select(accounts).where(accounts.c.parent_uid == main_uid)
        if status is not None:
            query = query.where(accounts.c.status == status)
        if uid_less_than is not None:
            query = query.where(accounts.c.uid < uid_less_than)
        if search:
            pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(
                sa.or_(
                    accounts.c.alias_key.like(pattern, escape="\\"),
                    sa.func.lower(accounts.c.email).like(pattern, escape="\\"),
                )
            )
        query = query.order_by(accounts.c.uid.desc()).limit(limit).offset(offset)
        return [_account(row) for row in self.conn.execute(query)]

    # API keys ---------------------------------------------------------------------------------

    def insert_api_key(
        self,
        *,
        key_id: str,
        api_key: str,
        account_uid: int,
        scheme: Scheme,
        sign_type: SignType,
        sealed_secret: bytes | None,
        public_key_pem: str | None,
        passphrase_hash: str | None,
        label: str,
        permissions: Sequence[str],
        key_type: int | None,
        ip_list: Sequence[str],
        endpoints: Sequence[EndpointRule] = (),
        expires_at: int | None = None,
    ) -> ApiKey:
        at = now_ms()
        self.conn.execute(
            sa.insert(api_keys).values(
                id=key_id,
                api_key=api_key,
                account_uid=account_uid,
                scheme=scheme.value,
                sign_type=sign_type.value,
                sealed_secret=sealed_secret,
                public_key=public_key_pem,
                passphrase_hash=passphrase_hash,
                label=label,
                permissions=list(permissions),
                key_type=key_type,
                ip_list=list(ip_list),
                endpoints=[{"url": e.url, "enabled": e.enabled} for e in endpoints],
                enabled=True,
                created_at=at,
                updated_at=at,
                expires_at=expires_at,
            )
        )
        key = self.get_api_key(key_id)
        assert key is not None
        return key

    def update_api_key(self, key_id: str, **values: Any) -> ApiKey:
        for name in ("permissions", "ip_list"):
            if name in values:
                values[name] = list(values[name])
        if "endpoints" in values:
            values["endpoints"] = [{"url": e.url, "enabled": e.enabled} for e in values["endpoints"]]
        values["updated_at"] = now_ms()
        self.conn.execute(sa.update(api_keys).where(api_keys.c.id == key_id).values(**values))
        self._key_changed(key_id)
        key = self.get_api_key(key_id)
        assert key is not None
        return key

    def delete_api_key(self, key_id: str) -> None:
        self._key_changed(key_id)
        self.conn.execute(sa.delete(key_nonces).where(key_nonces.c.api_key_id == key_id))
        self.conn.execute(sa.delete(seen_nonces).where(seen_nonces.c.api_key_id == key_id))
        self.conn.execute(sa.delete(api_keys).where(api_keys.c.id == key_id))

    def get_api_key(self, key_id: str, *, lock: bool = False) -> ApiKey | None:
        """The key; ``lock`` holds its row until commit (a no-op on SQLite, see the module's doc)."""
        query = _PUBLIC_KEY.where(api_keys.c.id == key_id)
        # FOR UPDATE OF the key's row only: PostgreSQL locks no nullable side of an outer join
        row = self.conn.execute(query.with_for_update(of=api_keys) if lock else query).first()
        return _api_key(row) if row else None

    def find_api_key(self, api_key: str, *, lock: bool = False) -> ApiKey | None:
        query = _PUBLIC_KEY.where(api_keys.c.api_key == api_key)
        # FOR UPDATE OF the key's row only: PostgreSQL locks no nullable side of an outer join
        row = self.conn.execute(query.with_for_update(of=api_keys) if lock else query).first()
        return _api_key(row) if row else None

    def load_key_for_verification(self, api_key: str) -> tuple[ApiKey, KeyCredentials, Account] | None:
        """The one indexed lookup a verifier cache miss costs: the key, its credentials, its account."""
        row = self.conn.execute(_KEY_FOR_VERIFICATION, {"api_key": api_key}).first()
        if row is None:
            return None
        mapping = row._mapping
        account = Account(
            uid=mapping["acct_uid"],
            public_id=mapping["acct_public_id"],
            parent_uid=mapping["acct_parent_uid"],
            name=mapping["acct_name"],
            label=mapping["acct_label"],
            email=mapping["acct_email"],
            share_kyc=bool(mapping["acct_share_kyc"]),
            permissions=tuple(mapping["acct_permissions"]),
            status=AccountStatus(mapping["acct_status"]),
            created_at=mapping["acct_created_at"],
            updated_at=mapping["acct_updated_at"],
        )
        return _api_key(row), _credentials(row), account

    def sealed_secrets(self, *, previous: bool = False) -> list[tuple[str, bytes]]:
        """(key id, sealed secret) of every key that has one; ``previous``: the secrets rotations replaced."""
        column = api_keys.c.previous_sealed_secret if previous else api_keys.c.sealed_secret
        query = sa.select(api_keys.c.id, column.label("sealed")).where(column.is_not(None))
        return [(row.id, row.sealed) for row in self.conn.execute(query)]

    def recorded_master_key_fingerprint(self) -> str | None:
        query = sa.select(store_settings.c.value).where(store_settings.c.name == MASTER_KEY_FINGERPRINT)
        value = self.conn.execute(query).scalar()
        return str(value) if value is not None else None

    def one_sealed_secret(self) -> tuple[str, bytes] | None:
        query = sa.select(api_keys.c.id, api_keys.c.sealed_secret).where(api_keys.c.sealed_secret.is_not(None))
        row = self.conn.execute(query.limit(1)).first()
        return (row.id, row.sealed_secret) if row else None

    def reseal(self, key_id: str, old: bytes, sealed_secret: bytes, *, previous: bool = False) -> int:
        """Replaces a sealed secret by the same secret sealed under another master key, only if the row still
        holds ``old`` (a secret reset since it was read stays as it is); 1 if replaced, else 0. ``previous``:
        the secret a rotation replaced."""
        column = api_keys.c.previous_sealed_secret if previous else api_keys.c.sealed_secret
        replaced = self.conn.execute(
            sa.update(api_keys).where(api_keys.c.id == key_id, column == old).values({column.name: sealed_secret})
        ).rowcount
        if replaced:
            self._key_changed(key_id)
        return int(replaced)

    def credentials(self, key_id: str) -> KeyCredentials:
        """The key's sealed secrets and passphrase hashes (a rotation moves the current ones aside)."""
        query = sa.select(*(api_keys.c[name] for name in _SECRET_COLUMNS)).where(api_keys.c.id == key_id)
        row = self.conn.execute(query).first()
        if row is None:
            return KeyCredentials(sealed_secret=None, public_key_pem=None, passphrase_hash=None)
        return _credentials(row)

    def passphrase_hash(self, key_id: str) -> str | None:
        query = sa.select(api_keys.c.passphrase_hash).where(api_keys.c.id == key_id)
        value = self.conn.execute(query).scalar()
        return str(value) if value is not None else None

    def count_api_keys(self, account_uid: int) -> int:
        query = sa.select(sa.func.count()).select_from(api_keys).where(api_keys.c.account_uid == account_uid)
        return int(self.conn.execute(query).scalar_one())

    def list_api_keys(
        self, account_uids: Sequence[int], *, limit: int | None = None, offset: int = 0, scheme: Scheme | None = None
    ) -> list[ApiKey]:
        """Newest first."""
        query = (
            _PUBLIC_KEY.where(api_keys.c.account_uid.in_(list(account_uids)))
            .order_by(api_keys.c.created_at.desc(), api_keys.c.id.desc())
            .offset(offset)
        )
        if scheme is not None:
            query = query.where(api_keys.c.scheme == scheme.value)
        if limit is not None:
            query = query.limit(limit)
        return [_api_key(row) for row in self.conn.execute(query)]

    def keys_expiring(self, before_ms: int, *, after_ms: int | None = None) -> list[ApiKey]:
        """Keys that expire before ``before_ms`` (and at or after ``after_ms``), soonest first."""
        query = _PUBLIC_KEY.where(api_keys.c.expires_at < before_ms)
        if after_ms is not None:
            query = query.where(api_keys.c.expires_at >= after_ms)
        return [_api_key(row) for row in self.conn.execute(query.order_by(api_keys.c.expires_at, api_keys.c.id))]

    def count_expiring(self, now_ms: int, before_ms: int) -> tuple[int, int]:
        """(keys expired at ``now_ms``, keys that expire from then until ``before_ms``): two index range counts."""
        expires = api_keys.c.expires_at
        expired = sa.select(sa.func.count()).select_from(api_keys).where(expires < now_ms)
        soon = sa.select(sa.func.count()).select_from(api_keys).where(expires >= now_ms, expires < before_ms)
        return int(self.conn.execute(expired).scalar_one()), int(self.conn.execute(soon).scalar_one())

    def record_usage(self, used: Sequence[tuple[str, int, str]]) -> None:
        """Records (key id, Unix ms, client address) as each key's last use: one statement for the batch,
        executed over its rows (a prepared statement's executemany, PostgreSQL's in one pipeline). A later use
        wins (processes flush in any order)."""
        if used:
            rows = [{"key_id": key_id, "at": at, "ip": ip[:64]} for key_id, at, ip in used]
            self.conn.execute(_RECORD_USAGE, rows)

    def existing_key_ids(self, key_ids: Sequence[str]) -> set[str]:
        query = sa.select(api_keys.c.id).where(api_keys.c.id.in_(list(key_ids)))
        return {row.id for row in self.conn.execute(query)}

    def sub_account_uids(self, main_uid: int) -> list[int]:
        query = sa.select(accounts.c.uid).where(accounts.c.parent_uid == main_uid)
        return [row.uid for row in self.conn.execute(query)]

    def api_key_ids_of(self, account_uid: int) -> list[str]:
        query = sa.select(api_keys.c.api_key).where(api_keys.c.account_uid == account_uid)
        return [row.api_key for row in self.conn.execute(query)]

    # nonces (WhiteBIT) ------------------------------------------------------------------------

    def last_nonce(self, key_id: str) -> int | None:
        query = sa.select(key_nonces.c.last_nonce).where(key_nonces.c.api_key_id == key_id)
        value = self.conn.execute(query).scalar()
        return int(value) if value is not None else None

    def set_last_nonce(self, key_id: str, nonce: int) -> None:
        updated = self.conn.execute(
            sa.update(key_nonces).where(key_nonces.c.api_key_id == key_id).values(last_nonce=nonce)
        )
        if updated.rowcount == 0:
            self.conn.execute(sa.insert(key_nonces).values(api_key_id=key_id, last_nonce=nonce))

    def record_seen_nonce(self, key_id: str, nonce: int, expires_at: int) -> bool:
        """Records a windowed nonce; False when it was already seen (a replay)."""
        seen = sa.select(seen_nonces.c.nonce).where(
            seen_nonces.c.api_key_id == key_id, seen_nonces.c.nonce == nonce
        )
        if self.conn.execute(seen).first() is not None:
            return False
        self.conn.execute(sa.insert(seen_nonces).values(api_key_id=key_id, nonce=nonce, expires_at=expires_at))
        return True

    def purge_seen_nonces(self, before: int) -> None:
        self.conn.execute(sa.delete(seen_nonces).where(seen_nonces.c.expires_at < before))

    # key changes (cache invalidation across processes) ----------------------------------------------

    def last_key_change(self) -> int:
        return int(self.conn.execute(sa.select(sa.func.coalesce(sa.func.max(key_changes.c.id), 0))).scalar_one())

    def key_changes_after(
        self, change_id: int, also: Sequence[int] = (), limit: int = 10_000
    ) -> list[tuple[int, str]]:
        """Changes with an id above ``change_id``, and those among the ids ``also`` (gaps the reader saw below
        it: an id is taken before its transaction commits, so a lower id may commit after a higher one)."""
        condition = key_changes.c.id > change_id
        if also:
            condition = sa.or_(condition, key_changes.c.id.in_(list(also)))
        query = sa.select(key_changes.c.id, key_changes.c.api_key).where(condition).order_by(key_changes.c.id)
        return [(row.id, row.api_key) for row in self.conn.execute(query.limit(limit))]

    def purge_key_changes(self, before: int) -> None:
        """Drops old changes, always keeping the newest row: SQLite gives a new row the highest id + 1, so an
        emptied table would hand out ids that followers have already read past."""
        newest = sa.select(sa.func.max(key_changes.c.id)).scalar_subquery()
        self.conn.execute(sa.delete(key_changes).where(key_changes.c.at < before, key_changes.c.id < newest))

    def key_versions(self, keys: Sequence[str]) -> dict[str, tuple[int, int]]:
        """api_key -> (the key's and its account's ``updated_at``) for those of ``keys`` that exist: what the
        key cache compares to re-validate entries it has held for a while (every change bumps one of them)."""
        query = (
            sa.select(api_keys.c.api_key, api_keys.c.updated_at, accounts.c.updated_at.label("account_updated_at"))
            .join(accounts, accounts.c.uid == api_keys.c.account_uid)
            .where(api_keys.c.api_key.in_(list(keys)))
        )
        return {row.api_key: (row.updated_at, row.account_updated_at) for row in self.conn.execute(query)}

    # audit --------------------------------------------------------------------------------------

    def add_audit(
        self,
        *,
        action: str,
        target: str,
        account_uid: int | None,
        actor_uid: int | None,
        actor_key: str | None,
        ip: str | None,
        detail: dict[str, Any] | None = None,
        actor_token: str | None = None,
    ) -> None:
        self.conn.execute(
            sa.insert(audit_events).values(
                at=now_ms(),
                account_uid=account_uid,
                actor_uid=actor_uid,
                actor_key=actor_key,
                action=action,
                target=target,
                ip=ip,
                detail=detail or {},
                actor_token=actor_token,
            )
        )

    def list_audit(self, *, account_uid: int | None = None, limit: int = 1000) -> list[AuditEvent]:
        query = sa.select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
        if account_uid is not None:
            query = query.where(audit_events.c.account_uid == account_uid)
        return [
            AuditEvent(
                id=row.id,
                at=row.at,
                actor_uid=row.actor_uid,
                actor_key=row.actor_key,
                action=row.action,
                target=row.target,
                ip=row.ip,
                detail=dict(row.detail),
                actor_token=row.actor_token,
                account_uid=row.account_uid,
            )
            for row in self.conn.execute(query)
        ]



# A write to make in the same commit as the next change of this context (see ``in_the_same_commit``).
_SAME_COMMIT: ContextVar[Callable[[Transaction], None] | None] = ContextVar("keyplane_same_commit", default=None)


@contextmanager
def in_the_same_commit(write: Callable[[Transaction], None]) -> Iterator[None]:
    """Runs ``write`` inside every write transaction this context (and the threads ``asyncio.to_thread``
    starts from it) commits, just before the commit: it lands with the change or not at all.

    Why: an idempotent create records "this key's create committed" on its claim in the create's own
    commit, so a process that dies before it records the answer cannot leave a claim that a retry would
    take over and run a second time (services/idempotency.py).
    """
    token = _SAME_COMMIT.set(write)
    try:
        yield
    finally:
        _SAME_COMMIT.reset(token)

class Store:
    """The database behind keyplane: SQLite (WAL) by default, PostgreSQL to scale."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = _make_engine(self.url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._key_listeners: list[KeyListener] = []
        self._changes_channel: str | None = None

    def changes_channel(self, conn: Connection | None = None) -> str | None:
        """PostgreSQL: the ``NOTIFY`` channel each transaction that changes keys signals at its commit (one per
        schema, since channels are per database). None on SQLite."""
        if self.is_sqlite:
            return None
        if self._changes_channel is None:
            if conn is None:
                with self.engine.connect() as own:
                    return self.changes_channel(own)
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
            self._changes_channel = f"keyplane_key_changes.{schema}"
        return self._changes_channel

    def listen_connection_args(self) -> tuple[Any, dict[str, Any]]:
        """How to open a connection of the store's driver outside the pool (the change feed's ``LISTEN``)."""
        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        return tuple(args), dict(kwargs)

    def on_keys_changed(self, listener: KeyListener) -> None:
        """``listener`` hears of the keys each transaction changed, right after it commits."""
        self._key_listeners.append(listener)

    def schema_revision(self) -> str | None:
        """The schema revision the database is at; None before any (no keyplane tables)."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def pending_revisions(self) -> list[Revision]:
        """What ``migrate`` would apply now, oldest first (``MigrationRefused``: a revision newer than ours)."""
        return _pending(self.schema_revision())

    def migrate(self) -> list[Revision]:
        """Brings the schema to the newest Alembic revision and returns the revisions it applied (none when
        it was current); safe when many processes start at once.

        The migration runs in one transaction that first takes a lock, so processes started together on
        an empty database migrate one after the other and every later one finds the schema at head (a
        no-op). SQLite: ``BEGIN IMMEDIATE`` (see ``_make_engine``) is that lock. PostgreSQL: a
        transaction-scoped advisory lock keyed by the schema, released at commit; without it two nodes
        both created ``alembic_version`` and one died.
        """
        config = _alembic_config()
        with self.engine.begin() as conn:
            if not self.is_sqlite:
                conn.execute(_MIGRATION_LOCK)
            # read under the lock: what another process migrated meanwhile is not reported as ours
            pending = _pending(MigrationContext.configure(conn).get_current_revision())
            if pending:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        return pending

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self.engine.begin() as conn:
            tx = Transaction(conn)
            yield tx
            same_commit = _SAME_COMMIT.get()
            if same_commit is not None:
                same_commit(tx)
            if tx.changed_keys:
                at = now_ms()
                changed = sorted(tx.changed_keys)
                conn.execute(sa.insert(key_changes), [{"api_key": k, "at": at} for k in changed])
                channel = self.changes_channel(conn)
                if channel is not None:
                    # delivered to every listener at commit, never before, never after a rollback
                    payload = ",".join(changed)
                    conn.execute(
                        sa.select(sa.func.pg_notify(channel, payload if len(payload) < _NOTIFY_MAX else ""))
                    )
        if tx.changed_keys:
            changed = sorted(tx.changed_keys)
            for listener in self._key_listeners:
                # The change is committed: a listener that fails (a Redis publish with Redis down) must not
                # turn it into an error. Other processes still learn of it from ``key_changes``.
                try:
                    listener(changed)
                except Exception as error:
                    log.warning(
                        "a listener missed %d key change(s) (%s: %s); the change feed carries them",
                        len(changed), type(error).__name__, str(error).split("\n", 1)[0],
                    )

    @contextmanager
    def reading(self) -> Iterator[Transaction]:
        """A read-only transaction: on SQLite it does not take the write lock."""
        with self.engine.connect().execution_options(keyplane_read_only=True) as conn, conn.begin():
            yield Transaction(conn)

    def has_schema(self) -> bool:
        """Whether keyplane's tables are there (Alembic's version table): a database ``keyplane init`` made."""
        with self.engine.connect() as conn:
            return sa.inspect(conn).has_table("alembic_version")

    # the master key's fingerprint (store_settings) -------------------------------------------------

    def master_key_fingerprint(self) -> str | None:
        with self.reading() as tx:
            return tx.recorded_master_key_fingerprint()

    def record_master_key_fingerprint(self, fingerprint: str, *, replace: bool = False) -> str:
        """Records ``fingerprint`` unless one is recorded (``replace``: always); returns the one in force.
        Two processes recording the first one at once: the loser's insert fails and it reads the winner's."""
        try:
            with self.transaction() as tx:
                values = {"value": fingerprint, "updated_at": now_ms()}
                where = store_settings.c.name == MASTER_KEY_FINGERPRINT
                recorded = tx.conn.execute(sa.select(store_settings.c.value).where(where)).scalar()
                if recorded is None:
                    tx.conn.execute(sa.insert(store_settings).values(name=MASTER_KEY_FINGERPRINT, **values))
                elif replace:
                    tx.conn.execute(sa.update(store_settings).where(where).values(**values))
                else:
                    return str(recorded)
                return fingerprint
        except sa.exc.IntegrityError:
            recorded = self.master_key_fingerprint()
            if recorded is None:
                raise
            return recorded if not replace else self.record_master_key_fingerprint(fingerprint, replace=True)

    def close(self) -> None:
        self.engine.dispose()
