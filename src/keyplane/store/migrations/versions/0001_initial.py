"""The initial schema: accounts, API keys, nonce state, audit events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
FIRST_UID = 1_000_000_001


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("uid", BigId, sa.Identity(start=FIRST_UID), primary_key=True),
        sa.Column("public_id", sa.String(36), nullable=False, unique=True),
        sa.Column("parent_uid", sa.BigInteger, sa.ForeignKey("accounts.uid"), nullable=True, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("alias_key", sa.String(64), nullable=True, unique=True),
        sa.Column("label", sa.String(64), nullable=False, server_default=""),
        sa.Column("email", sa.String(255), nullable=True),
        sa.Column("share_kyc", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("permissions", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"INSERT INTO sqlite_sequence (name, seq) VALUES ('accounts', {FIRST_UID - 1})")
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("api_key", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "account_uid", sa.BigInteger, sa.ForeignKey("accounts.uid", ondelete="CASCADE"),
            nullable=False, index=True,
        ),
        sa.Column("scheme", sa.String(16), nullable=False),
        sa.Column("sign_type", sa.String(8), nullable=False),
        sa.Column("sealed_secret", sa.LargeBinary, nullable=True),
        sa.Column("public_key", sa.Text, nullable=True),
        sa.Column("passphrase_hash", sa.String(255), nullable=True),
        sa.Column("label", sa.String(64), nullable=False, server_default=""),
        sa.Column("permissions", sa.JSON, nullable=False),
        sa.Column("key_type", sa.SmallInteger, nullable=True),
        sa.Column("ip_list", sa.JSON, nullable=False),
        sa.Column("endpoints", sa.JSON, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "key_nonces",
        sa.Column(
            "api_key_id", sa.String(36), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("last_nonce", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "seen_nonces",
        sa.Column(
            "api_key_id", sa.String(36), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("nonce", sa.BigInteger, primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("account_uid", sa.BigInteger, nullable=True, index=True),
        sa.Column("actor_uid", sa.BigInteger, nullable=True),
        sa.Column("actor_key", sa.String(64), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("detail", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for table in ("audit_events", "seen_nonces", "key_nonces", "api_keys", "accounts"):
        op.drop_table(table)
