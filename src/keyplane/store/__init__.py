"""Persistence: SQLAlchemy Core tables, one implementation for SQLite and PostgreSQL."""

from keyplane.store.store import MigrationRefused, Revision, Store, Transaction, head_revision

__all__ = ["MigrationRefused", "Revision", "Store", "Transaction", "head_revision"]
