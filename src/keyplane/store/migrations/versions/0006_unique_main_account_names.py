"""Main-account names unique, whatever their case.

A partial unique index on ``lower(name)`` of the rows without a parent (sub-account names are already
unique venue-wide through ``alias_key``); partial and expression indexes work alike on SQLite and PostgreSQL.

A database that already holds two main accounts of one name is refused with one line naming them, and is
left as it was (the migration's transaction rolls back): the operator renames all but one, then upgrades.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.store.store import MigrationRefused

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEX = "uq_accounts_main_name"
MAIN_ONLY = sa.text("parent_uid IS NULL")


def _duplicates() -> list[tuple[str, list[int]]]:
    """(the first account's name, the UIDs) of each name more than one main account holds."""
    rows = op.get_bind().execute(
        sa.text("SELECT lower(name), name, uid FROM accounts WHERE parent_uid IS NULL ORDER BY uid")
    )
    groups: dict[str, tuple[str, list[int]]] = {}
    for key, name, uid in rows:
        groups.setdefault(key, (name, []))[1].append(int(uid))
    return [(name, uids) for name, uids in groups.values() if len(uids) > 1]


def upgrade() -> None:
    duplicates = _duplicates()
    if duplicates:
        shown = "; ".join(f"{name!r}: uids {', '.join(map(str, uids))}" for name, uids in duplicates[:10])
        more = f" (and {len(duplicates) - 10} more names)" if len(duplicates) > 10 else ""
        raise MigrationRefused(
            f"cannot make main-account names unique (revision 0006): main accounts share a name, ignoring case: "
            f"{shown}{more}; rename all but one of each (UPDATE accounts SET name = '...' WHERE uid = ...) and "
            "run `keyplane migrate` again; nothing was changed"
        )
    op.create_index(
        INDEX, "accounts", [sa.text("lower(name)")], unique=True,
        sqlite_where=MAIN_ONLY, postgresql_where=MAIN_ONLY,
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="accounts")
