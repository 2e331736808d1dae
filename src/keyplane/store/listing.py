"""The operator's paged lists (the native management API): filtered, in a fixed order, continued from a
position (keyset paging), so that items made or deleted between two pages never shift one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from keyplane.domain.model import Account, ApiKey, AuditEvent, Scheme
from keyplane.store.store import _PUBLIC_KEY_COLUMNS, Transaction, _account, _api_key
from keyplane.store.tables import accounts, api_keys, audit_events, key_usage

# a key's public record, its last use and its main account's UID
_KEYS_WITH_MAIN: sa.Select[Any] = sa.select(
    *_PUBLIC_KEY_COLUMNS, key_usage.c.last_used_at, key_usage.c.last_used_ip,
    sa.func.coalesce(accounts.c.parent_uid, accounts.c.uid).label("main_uid"),
).select_from(
    api_keys.outerjoin(key_usage, key_usage.c.api_key_id == api_keys.c.id).join(
        accounts, accounts.c.uid == api_keys.c.account_uid
    )
)


def _contains(column: Any, text: str) -> Any:
    return sa.func.lower(column).contains(text.lower(), autoescape=True)


def main_accounts(
    tx: Transaction, *, name_contains: str | None, status: str | None, after_uid: int | None, limit: int
) -> list[Account]:
    """Oldest first (UID order)."""
    query = sa.select(accounts).where(accounts.c.parent_uid.is_(None))
    if name_contains:
        query = query.where(_contains(accounts.c.name, name_contains))
    if status is not None:
        query = query.where(accounts.c.status == status)
    if after_uid is not None:
        query = query.where(accounts.c.uid > after_uid)
    return [_account(row) for row in tx.conn.execute(query.order_by(accounts.c.uid).limit(limit))]


def sub_accounts(
    tx: Transaction, *, main_uid: int | None, name_contains: str | None, status: str | None, after_uid: int | None,
    limit: int,
) -> list[Account]:
    """Oldest first (UID order), of one main account or of all."""
    query = sa.select(accounts).where(accounts.c.parent_uid.is_not(None))
    if main_uid is not None:
        query = query.where(accounts.c.parent_uid == main_uid)
    if name_contains:
        query = query.where(_contains(accounts.c.name, name_contains))
    if status is not None:
        query = query.where(accounts.c.status == status)
    if after_uid is not None:
        query = query.where(accounts.c.uid > after_uid)
    return [_account(row) for row in tx.conn.execute(query.order_by(accounts.c.uid).limit(limit))]


def keys(
    tx: Transaction,
    *,
    account_uid: int | None,
    main_uid: int | None,
    scheme: Scheme | None,
    enabled: bool | None,
    after: tuple[int, str] | None,
    limit: int,
) -> list[tuple[ApiKey, int]]:
    """Newest first ((created_at, id) descending), each with its main account's UID."""
    query = _KEYS_WITH_MAIN
    if account_uid is not None:
        query = query.where(api_keys.c.account_uid == account_uid)
    if main_uid is not None:
        query = query.where(sa.or_(accounts.c.uid == main_uid, accounts.c.parent_uid == main_uid))
    if scheme is not None:
        query = query.where(api_keys.c.scheme == scheme.value)
    if enabled is not None:
        query = query.where(api_keys.c.enabled == enabled)
    if after is not None:
        created, key_id = after
        query = query.where(sa.or_(
            api_keys.c.created_at < created, sa.and_(api_keys.c.created_at == created, api_keys.c.id < key_id)
        ))
    query = query.order_by(api_keys.c.created_at.desc(), api_keys.c.id.desc()).limit(limit)
    return [(_api_key(row), int(row.main_uid)) for row in tx.conn.execute(query)]


def key_with_main(tx: Transaction, key_id: str) -> tuple[ApiKey, int] | None:
    row = tx.conn.execute(_KEYS_WITH_MAIN.where(api_keys.c.id == key_id)).first()
    return (_api_key(row), int(row.main_uid)) if row else None


def audit(
    tx: Transaction,
    *,
    account_uid: int | None,
    api_key: str | None,
    actions: Sequence[str],
    actor_token: str | None,
    since: int | None,
    until: int | None,
    before_id: int | None,
    limit: int,
) -> list[AuditEvent]:
    """Newest first (id descending). ``api_key``: events about the key or made with it; ``since`` is
    inclusive, ``until`` exclusive (Unix ms)."""
    query = sa.select(audit_events)
    if account_uid is not None:
        query = query.where(audit_events.c.account_uid == account_uid)
    if api_key is not None:
        query = query.where(sa.or_(audit_events.c.target == api_key, audit_events.c.actor_key == api_key))
    if actions:
        query = query.where(audit_events.c.action.in_(list(actions)))
    if actor_token is not None:
        query = query.where(audit_events.c.actor_token == actor_token)
    if since is not None:
        query = query.where(audit_events.c.at >= since)
    if until is not None:
        query = query.where(audit_events.c.at < until)
    if before_id is not None:
        query = query.where(audit_events.c.id < before_id)
    rows = tx.conn.execute(query.order_by(audit_events.c.id.desc()).limit(limit))
    return [
        AuditEvent(
            id=row.id, at=row.at, actor_uid=row.actor_uid, actor_key=row.actor_key, action=row.action,
            target=row.target, ip=row.ip, detail=dict(row.detail), actor_token=row.actor_token,
            account_uid=row.account_uid,
        )
        for row in rows
    ]
