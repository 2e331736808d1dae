"""Where a database URL points, and whether a database is already there (before anything connects to it).

Connecting to a SQLite file creates it, so "does it exist" must be asked of the file system first: every
command but ``serve`` and ``init`` refuses to make a database as a side effect (issue 10, "no silent new
state").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

_BACKENDS = ("sqlite", "postgresql")


class BadDatabaseUrl(ValueError):
    """A database URL keyplane cannot use; its message is one line and never carries a password."""


@dataclass(frozen=True)
class DatabaseLocation:
    url: str
    backend: str  # "sqlite" or "postgresql"
    path: Path | None  # the SQLite file (absolute); None in memory or on PostgreSQL
    shown: str  # for messages: the file, or the URL without its password

    @property
    def in_memory(self) -> bool:
        return self.backend == "sqlite" and self.path is None

    def file_missing(self) -> bool:
        """True for a SQLite file that is not there yet (a PostgreSQL schema is asked of the server)."""
        return self.path is not None and not self.path.exists()


def locate(url: str) -> DatabaseLocation:
    """The database ``url`` names, or ``BadDatabaseUrl`` naming what is wrong with it."""
    try:
        parsed: URL = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise BadDatabaseUrl(
            f"cannot parse the database URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST/NAME"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend not in _BACKENDS:
        raise BadDatabaseUrl(
            f"unsupported database URL {parsed.render_as_string(hide_password=True)} ({backend}): "
            "keyplane runs on sqlite:///PATH or postgresql://USER@HOST/NAME"
        )
    if backend == "sqlite":
        name = parsed.database or ""
        if name in ("", ":memory:") or name.startswith("file:"):
            return DatabaseLocation(url, backend, None, "an in-memory SQLite database")
        path = Path(name).expanduser().absolute()
        return DatabaseLocation(url, backend, path, str(path))
    if not parsed.database:
        raise BadDatabaseUrl(
            f"the database URL {parsed.render_as_string(hide_password=True)} names no database: "
            "postgresql://USER@HOST/NAME"
        )
    return DatabaseLocation(url, backend, None, parsed.render_as_string(hide_password=True))
