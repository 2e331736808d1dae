"""The schema, in SQLAlchemy Core. The same tables serve SQLite and PostgreSQL unchanged."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Sub-account UIDs look like Bitget's (10 digits): the sequence starts here on both databases.
FIRST_UID = 1_000_000_001

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("uid", BigId, sa.Identity(start=FIRST_UID), primary_key=True),
    sa.Column("public_id", sa.String(36), nullable=False, unique=True),
    sa.Column("parent_uid", sa.BigInteger, sa.ForeignKey("accounts.uid"), nullable=True, index=True),
    sa.Column("name", sa.String(64), nullable=False),
    # lower-cased alias of a sub-account: names are unique across the venue; NULL for main accounts
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

# Main-account names are unique, whatever their case (migration 0004); sub-accounts have ``alias_key``.
MAIN_ACCOUNT_NAME_INDEX = "uq_accounts_main_name"
sa.Index(
    MAIN_ACCOUNT_NAME_INDEX, sa.func.lower(accounts.c.name), unique=True,
    sqlite_where=accounts.c.parent_uid.is_(None), postgresql_where=accounts.c.parent_uid.is_(None),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("api_key", sa.String(64), nullable=False, unique=True),
    sa.Column(
        "account_uid", sa.BigInteger, sa.ForeignKey("accounts.uid", ondelete="CASCADE"), nullable=False,
        index=True,
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
    # rotation with an overlap: the secret a rotation replaced (sealed like the current one, under the same
    # key id), the passphrase it was used with, and the Unix ms at which it stops verifying
    sa.Column("previous_sealed_secret", sa.LargeBinary, nullable=True),
    sa.Column("previous_passphrase_hash", sa.String(255), nullable=True),
    sa.Column("previous_until", sa.BigInteger, nullable=True),
    # Unix ms after which the key verifies nothing; NULL: it does not expire
    sa.Column("expires_at", sa.BigInteger, nullable=True, index=True),
)

# When and from where each key last verified: written in batches by auth/usage.py (one statement per
# flush), in a table of its own so that the writes never touch a key's row, its version or its change feed.
key_usage = sa.Table(
    "key_usage",
    metadata,
    sa.Column("api_key_id", sa.String(36), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("last_used_at", sa.BigInteger, nullable=False),
    sa.Column("last_used_ip", sa.String(64), nullable=False),
)

# WhiteBIT nonce state, kept in the store so that a restarted server still refuses a replay.
key_nonces = sa.Table(
    "key_nonces",
    metadata,
    sa.Column("api_key_id", sa.String(36), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("last_nonce", sa.BigInteger, nullable=False),
)

seen_nonces = sa.Table(
    "seen_nonces",
    metadata,
    sa.Column("api_key_id", sa.String(36), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("nonce", sa.BigInteger, primary_key=True),
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
)

# Every committed change of a key or of its account, so that other processes drop it from their caches
# (auth/changes.py polls it; Redis pub/sub, when configured, only makes that faster).
key_changes = sa.Table(
    "key_changes",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("api_key", sa.String(64), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False, index=True),
)

# Facts about the store itself: "master_key_fingerprint" names the master key its secrets are sealed under.
store_settings = sa.Table(
    "store_settings",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", sa.BigInteger, nullable=False),
    # the main account whose plane changed: `keyplane audit --account UID` filters on it
    sa.Column("account_uid", sa.BigInteger, nullable=True, index=True),
    sa.Column("actor_uid", sa.BigInteger, nullable=True),
    sa.Column("actor_key", sa.String(64), nullable=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("ip", sa.String(64), nullable=True),
    sa.Column("detail", sa.JSON, nullable=False),
    # the operator token a native management call was made with (operator_tokens.id), else NULL
    sa.Column("actor_token", sa.String(32), nullable=True),
)
# Operator tokens of the native management API (migration 0004; audit_events.actor_token names one). The
# token itself is never stored: ``token_hash`` is its SHA-256 (keyplane.services.tokens says why).
operator_tokens = sa.Table(
    "operator_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, server_default=""),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
)

# One row per (token, Idempotency-Key): the claim a create takes before it runs, then its answer (never a
# one-time secret). ``status`` is NULL while the create runs; ``owner`` tells the claim's holder apart.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column(
        "token_id", sa.String(32), sa.ForeignKey("operator_tokens.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("owner", sa.String(32), nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=True),
    sa.Column("body", sa.LargeBinary, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False, index=True),
    sa.Column("claimed_at", sa.BigInteger, nullable=False),
)
