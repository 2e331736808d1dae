"""Persistence: SQLAlchemy Core tables, one implementation for SQLite and PostgreSQL."""

from keyplane.store.store import Store, Transaction

__all__ = ["Store", "Transaction"]
