"""key_changes: committed key changes, for cache invalidation across processes.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "key_changes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("api_key", sa.String(64), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("key_changes")
