"""Key lifecycle: rotation with an overlap (the previous secret and its deadline), explicit expiry, last use.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("previous_sealed_secret", sa.LargeBinary, nullable=True))
    op.add_column("api_keys", sa.Column("previous_passphrase_hash", sa.String(255), nullable=True))
    op.add_column("api_keys", sa.Column("previous_until", sa.BigInteger, nullable=True))
    op.add_column("api_keys", sa.Column("expires_at", sa.BigInteger, nullable=True))
    op.create_index("ix_api_keys_expires_at", "api_keys", ["expires_at"])
    op.create_table(
        "key_usage",
        sa.Column(
            "api_key_id", sa.String(36), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("last_used_at", sa.BigInteger, nullable=False),
        sa.Column("last_used_ip", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("key_usage")
    op.drop_index("ix_api_keys_expires_at", "api_keys")
    with op.batch_alter_table("api_keys") as batch:
        for name in ("expires_at", "previous_until", "previous_passphrase_hash", "previous_sealed_secret"):
            batch.drop_column(name)
