"""The ``keyplane`` command: the operator's tool for main accounts, their keys, the audit log, the server.

Every operator mistake ends as one ``error:`` line on stderr and one of the exit codes in ``ExitCode``
(``failure`` is the one place that maps an error to its line and code); a traceback means a bug.
Secrets and identifiers are printed whole, as plain ``name: value`` lines, never inside a table cell.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import IntEnum
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, NoReturn

import sqlalchemy.exc
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from keyplane import crypto, errors, logs
from keyplane.config import Settings
from keyplane.domain.durations import format_duration, parse_duration
from keyplane.domain.model import Account, AccountStatus, ApiKey, Scheme
from keyplane.domain.rules import normalize_bitget_permissions
from keyplane.domain.scopes import COLLATERAL, SPOT
from keyplane.domain.tokens import OperatorToken, Scope
from keyplane.outages import unavailable
from keyplane.runtime import (
    DatabaseMissing,
    MasterKeyMismatch,
    Runtime,
    SchemaOutOfDate,
    build_runtime,
    master_key_ring,
    require_explicit_master_key,
)
from keyplane.store import MigrationRefused, Store, head_revision
from keyplane.store.location import BadDatabaseUrl, DatabaseLocation, locate


class ExitCode(IntEnum):
    """What ``keyplane``'s exit status means (README "Exit codes" and ``keyplane --help`` show this table)."""

    OK = 0
    BUG = 1  # an unexpected error: a traceback; please report it
    REFUSED = 2  # a bad argument, setting, file or key material, or a rule the change breaks; nothing changed
    UNAVAILABLE = 3  # the database (or Redis) cannot be reached; nothing changed, try again
    NO_DATABASE = 4  # no database (or no keyplane tables) at the given place: `keyplane init` makes one
    WRONG_MASTER_KEY = 5  # the master key is not the one the database's secrets are sealed under
    CANNOT_LISTEN = 6  # serve: the address is taken (or not ours to use)
    NEEDS_MIGRATION = 7  # the database's schema is older than this keyplane's: `keyplane migrate`


EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 unexpected error (a bug: report it); 2 refused: bad argument, setting, file or key "
    "material, or a rule the change breaks (nothing changed); 3 the database or Redis is unavailable (nothing "
    "changed, try again); 4 no database at the given place (run `keyplane init`); 5 the master key is not the "
    "database's; 6 serve cannot listen (port taken); 7 the database needs `keyplane migrate` (also what `keyplane "
    "migrate --check` answers then)."
)


class Refused(Exception):
    """An operator mistake found by the command itself: one line, one exit code."""

    def __init__(self, line: str, code: ExitCode = ExitCode.REFUSED) -> None:
        super().__init__(line)
        self.line = line
        self.code = code


def failure(error: BaseException) -> tuple[ExitCode, str] | None:
    """The one mapping from an error to the operator's line and exit code; None for a bug (re-raised)."""
    if isinstance(error, Refused):
        return error.code, error.line
    if isinstance(error, DatabaseMissing):
        return ExitCode.NO_DATABASE, str(error)
    if isinstance(error, MasterKeyMismatch):
        return ExitCode.WRONG_MASTER_KEY, str(error)
    if isinstance(error, SchemaOutOfDate):
        return ExitCode.NEEDS_MIGRATION, str(error)
    if isinstance(error, MigrationRefused):
        return ExitCode.REFUSED, str(error)
    if isinstance(error, crypto.MasterKeyError | BadDatabaseUrl):
        return ExitCode.REFUSED, str(error)
    outage = unavailable(error)  # keyplane.outages: what counts as an outage, for the HTTP edge too
    if outage is not None:  # (errors.Unavailable is a KeyplaneError: ask this first)
        return ExitCode.UNAVAILABLE, f"{outage.message}; nothing was changed, try again"
    if isinstance(error, errors.KeyplaneError):
        return ExitCode.REFUSED, error.message
    if isinstance(error, sqlalchemy.exc.ArgumentError | sqlalchemy.exc.NoSuchModuleError):
        return ExitCode.REFUSED, f"bad database URL: {error}"
    return None


def _version() -> str:
    try:
        return metadata.version("keyplane")
    except metadata.PackageNotFoundError:
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        print(f"keyplane {_version()}")
        raise typer.Exit()


# never the values of local variables in a traceback: they may hold a key's secret or the master key
app = typer.Typer(
    help="keyplane: sub-accounts and API keys for a trading venue.", epilog=EXIT_CODES_HELP, no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """keyplane: sub-accounts and API keys for a trading venue."""


accounts_app = typer.Typer(help="Main accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="Main-account API keys.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
master_key_app = typer.Typer(help="The master key that seals every API secret.", no_args_is_help=True)
app.add_typer(master_key_app, name="master-key")
tokens_app = typer.Typer(help="Operator tokens for the native management API (/v1/).", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # an error stays one line, however narrow the terminal

DatabaseOption = Annotated[
    str | None, typer.Option("--database", help="Database URL (default: KEYPLANE_DATABASE_URL or ./keyplane.db).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")]
ExpiresInOption = Annotated[
    str | None, typer.Option("--expires-in", help="The key stops verifying after this long, e.g. 30d, 12h.")
]
ExpiresAtOption = Annotated[
    str | None,
    typer.Option("--expires-at", help="The key stops verifying at this time (ISO 8601; UTC without an offset)."),
]


def _runtime(database: str | None) -> Runtime:
    """The runtime over a database that is already there (``keyplane init`` or ``serve`` made it)."""
    _one_line_warnings()
    return build_runtime(_settings(database), create=False)


@contextmanager
def _opened(database: str | None) -> Iterator[Runtime]:
    """``_runtime``, closed when the command is done with it (also when it fails)."""
    runtime = _runtime(database)
    try:
        yield runtime
    finally:
        runtime.close()


class _OneLine(logging.Formatter):
    """Warnings as one line each: the command's user needs what happened, not a traceback."""

    def formatException(self, ei: Any) -> str:
        return ""


def _one_line_warnings() -> None:
    """For the commands that change or read the store (not ``serve``, which logs as a server)."""
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLine("warning: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def _settings(database: str | None = None) -> Settings:
    """The settings, or ``Refused`` naming the setting the environment holds wrong."""
    try:
        settings = Settings.from_env(database)
    except OSError as error:
        raise Refused(_file_line(error)) from None
    except ValueError as error:
        raise Refused(str(error)) from None
    locate(settings.database_url)  # a bad URL is one line now, before anything is made
    return settings


def _file_line(error: OSError, what: str = "") -> str:
    name = f"{what} {error.filename}" if what else str(error.filename or "a file")
    return f"cannot read {name}: {error.strerror or error}"


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as error:
        raise Refused(_file_line(error, what)) from None
    except UnicodeDecodeError:
        raise Refused(f"{what} {path} is not a text (PEM) file") from None


# C0 and C1 controls and DEL, shown as \xNN: a label or name a tenant chose through a dialect is shown to the
# operator's terminal, never obeyed by it (no escape sequence, title change or clipboard write)
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


def _value(value: Any) -> str:
    if isinstance(value, list | tuple):
        text = ", ".join(str(v) for v in value) or "-"
    elif isinstance(value, dict):
        text = json.dumps(value)
    else:
        text = "-" if value is None or value == "" else str(value)
    return text.translate(_CONTROLS)


def _lines(data: dict[str, Any]) -> None:
    """``name: value`` lines, each value whole on its line: a terminal's width never cuts a secret or an id."""
    width = max(len(name) for name in data) + 2
    for name, value in data.items():
        print(f"{name + ':':<{width}}{_value(value)}")


def _emit(data: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(data))
        return
    print(title)
    _lines(data)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str], whole: set[str], title: str) -> None:
    """A Rich table on a terminal wide enough for every cell on one line (the ``whole`` columns, identifiers,
    are never wrapped); otherwise, and when piped, one ``name: value`` block per row."""
    table = Table(title=title)
    for column in columns:
        if column in whole:
            longest = max([len(column), *(len(_value(row[column])) for row in rows)])
            table.add_column(column, no_wrap=True, min_width=longest)
        else:
            table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(_value(row[column])) for column in columns))  # Text: a cell is never Rich markup
    # Rich would shrink and fold columns to fit; a table is drawn only when every cell fits on one line
    unbounded = console.options.update(max_width=1_000_000)  # measure() clamps to the width it is given
    if console.is_terminal and console.measure(table, options=unbounded).maximum <= console.width:
        console.print(table)
        return
    print(f"{title}: {len(rows)}")
    for row in rows:
        print()
        _lines({column: row[column] for column in columns})


@app.command("init")
def init(database: DatabaseOption = None, as_json: JsonOption = False) -> None:
    """Create the database (its tables, and a master key file beside a SQLite file) and say where."""
    _one_line_warnings()
    settings = _settings(database)
    location = locate(settings.database_url)
    if _has_keyplane_tables(location):  # asked first: building a runtime would migrate an older schema
        master_key_ring(settings, create=False)  # a restored database without its key file: say that first
        raise Refused(f"a keyplane database is already at {location.shown}; nothing was changed")
    runtime = build_runtime(settings, create=True)
    try:
        created = runtime.created_database
        fingerprint = runtime.store.master_key_fingerprint()
    finally:
        runtime.close()
    if not created:
        raise Refused(f"a keyplane database is already at {location.shown}; nothing was changed")
    key = "KEYPLANE_MASTER_KEY" if settings.master_key else str(settings.resolved_master_key_file.absolute())
    _emit(
        {"database": location.shown, "masterKey": key, "masterKeyFingerprint": fingerprint},
        as_json, "database created",
    )


@app.command("migrate")
def migrate(
    check: Annotated[
        bool, typer.Option("--check", help="Only tell whether the schema is current (exit 7 if not); change nothing.")
    ] = False,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Bring the database's schema up to this keyplane's (back it up first) and say what was applied.

    `serve` does the same as it starts; other commands refuse an older schema (exit 7). Needs no master key.
    """
    _one_line_warnings()
    location = locate(_settings(database).database_url)
    with _existing_store(location) as store:
        current = store.schema_revision()
        pending = store.pending_revisions() if check else store.migrate()
    head = head_revision()
    applied = [{"revision": r.id, "title": r.title} for r in pending]
    if as_json:
        key = "pending" if check else "applied"
        print(json.dumps({"database": location.shown, "revision": current, "head": head, key: applied}))
    elif check and pending:
        print(f"{location.shown} is at schema revision {current}, this keyplane needs {head}: run `keyplane migrate`")
    elif check or not pending:
        print(f"{location.shown}: schema revision {head}, current; nothing to do")
    else:
        print(f"{location.shown}: schema migrated from revision {current} to {head}")
        for revision in pending:
            print(f"  {revision.id}  {revision.title}")
    if check and pending:
        raise typer.Exit(ExitCode.NEEDS_MIGRATION)


def _has_keyplane_tables(location: DatabaseLocation) -> bool:
    if location.in_memory or location.file_missing():
        return False
    store = Store(location.url)
    try:
        return store.has_schema()
    finally:
        store.close()


@contextmanager
def _existing_store(location: DatabaseLocation) -> Iterator[Store]:
    """The store at ``location``, which must hold keyplane's tables (``DatabaseMissing`` otherwise)."""
    if location.in_memory:
        raise Refused("an in-memory database is new in every process: there is nothing to migrate")
    if location.file_missing():
        raise DatabaseMissing(f"no database at {location.shown} (SQLite file missing): run `keyplane init` first")
    store = Store(location.url)
    try:
        if not store.has_schema():
            raise DatabaseMissing(f"no keyplane tables in {location.shown}: run `keyplane init` first")
        yield store
    finally:
        store.close()


@accounts_app.command("create")
def accounts_create(
    name: Annotated[str, typer.Option("--name", help="The main account's name.")],
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a main account."""
    with _opened(database) as runtime:
        account = runtime.service.accounts.create_main_account(name)
    _emit({"uid": str(account.uid), "id": account.public_id, "name": account.name}, as_json, "main account")




def _account_row(account: Account) -> dict[str, Any]:
    return {
        "uid": str(account.uid), "id": account.public_id, "name": account.name, "status": account.status.value,
        "createdAt": _when(account.created_at),
    }


def _when(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).isoformat(timespec="milliseconds")


@accounts_app.command("list")
def accounts_list(
    name_contains: Annotated[str | None, typer.Option("--name-contains", help="Only names with this text.")] = None,
    status: Annotated[AccountStatus | None, typer.Option("--status", help="Only accounts in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, oldest first.")] = 100,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many (the next page).")] = 0,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """List main accounts, by UID, filtered and paged."""
    with _opened(database) as runtime:
        found = runtime.service.accounts.list_main_accounts(name_contains=name_contains, status=status, limit=limit,
                                                   offset=offset)
    rows = [_account_row(account) for account in found]
    if as_json:
        print(json.dumps(rows))
        return
    _table(rows, ("uid", "id", "name", "status", "createdAt"), {"uid", "id", "createdAt"}, "main accounts")


@accounts_app.command("show")
def accounts_show(
    account: Annotated[int, typer.Option("--account", help="The main account's UID.")],
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one main account and how many keys it holds."""
    with _opened(database) as runtime:
        found = runtime.service.accounts.main_account(account)
        keys = runtime.service.keys.list_account_keys(account)
    _emit({**_account_row(found), "keys": len(keys)}, as_json, "main account")


def _set_status(account: int, status: AccountStatus, database: str | None, as_json: bool) -> None:
    with _opened(database) as runtime:
        updated = runtime.service.accounts.set_main_account_status(account, status)
    _emit(_account_row(updated), as_json, f"main account {status.value}")


@accounts_app.command("freeze")
def accounts_freeze(
    account: Annotated[int, typer.Option("--account", help="The main account's UID.")],
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Freeze a main account: its own keys stop verifying (running servers within 0.25 s)."""
    _set_status(account, AccountStatus.FREEZE, database, as_json)


@accounts_app.command("delete")
def accounts_delete(
    account: Annotated[int, typer.Option("--account", help="The main account's UID.")],
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a main account that holds no keys and no sub-accounts (its audit events stay)."""
    with _opened(database) as runtime:
        deleted = runtime.service.accounts.delete_main_account(account)
    _emit({"deleted": str(deleted.uid), "name": deleted.name}, as_json, "main account deleted")


@accounts_app.command("unfreeze")
def accounts_unfreeze(
    account: Annotated[int, typer.Option("--account", help="The main account's UID.")],
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Unfreeze a main account."""
    _set_status(account, AccountStatus.NORMAL, database, as_json)


@keys_app.command("create")
def keys_create(
    account: Annotated[int, typer.Option("--account", help="The main account's UID.")],
    dialect: Annotated[Scheme, typer.Option("--dialect", help="Signing scheme of the key.")],
    ip: Annotated[list[str] | None, typer.Option("--ip", help="Allowed IP or CIDR; repeat for more.")] = None,
    perm: Annotated[list[str] | None, typer.Option("--perm", help="Permission; repeat for more.")] = None,
    passphrase: Annotated[str | None, typer.Option(help="Bitget passphrase (generated if not given).")] = None,
    label: Annotated[str, typer.Option(help="A note for the key.")] = "",
    rsa_public_key: Annotated[
        Path | None, typer.Option("--rsa-public-key", help="Register an RSA public key (PEM) instead of a secret.")
    ] = None,
    key_type: Annotated[
        int | None, typer.Option("--key-type", help="WhiteBIT: 1 (no withdrawals) or 2 (withdrawals; the default).")
    ] = None,
    expires_in: ExpiresInOption = None,
    expires_at: ExpiresAtOption = None,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a main-account API key; its secret is shown this once."""
    permissions = _permissions(dialect, perm) if perm else _default_permissions(dialect)
    pem = _read_text(rsa_public_key, "--rsa-public-key") if rsa_public_key else None
    expiry = _expiry(expires_in, expires_at)
    with _opened(database) as runtime:
        issued = runtime.service.keys.issue_main_key(
            account,
            dialect,
            label=label,
            permissions=permissions,
            key_type=key_type,
            ip_list=ip or [],
            passphrase=passphrase,
            public_key_pem=pem,
            expires_at=expiry,
        )
    key = issued.key
    data: dict[str, Any] = {"apiKey": key.api_key}
    if dialect is Scheme.BITGET:
        if issued.secret is not None:
            data["secretKey"] = issued.secret
        data["passphrase"] = issued.passphrase
    else:
        data["apiSecret"] = issued.secret
    data.update(
        id=key.id, account=str(key.account_uid), signType=key.sign_type.value,
        permissions=list(key.permissions), ipList=list(key.ip_list),
    )
    if key.key_type is not None:
        data["keyType"] = key.key_type
    if key.expires_at is not None:
        data["expiresAt"] = _when(key.expires_at)
    _emit(data, as_json, "API key created; its secret is shown only now, keep it:")


@keys_app.command("list")
def keys_list(
    account: Annotated[int, typer.Option("--account", help="The account's UID (main or sub).")],
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """List an account's keys (never a secret)."""
    with _opened(database) as runtime:
        keys = runtime.service.keys.list_account_keys(account)
    rows = [
        {
            "apiKey": k.api_key, "id": k.id, "dialect": k.scheme.value, "signType": k.sign_type.value,
            "label": k.label, "permissions": list(k.permissions), "ipList": list(k.ip_list),
            **_lifecycle_fields(k),
        }
        for k in keys
    ]
    if as_json:
        print(json.dumps(rows))
        return
    columns = ("apiKey", "dialect", "signType", "label", "permissions", "ipList", "expiresAt", "lastUsedAt")
    _table(rows, columns, {"apiKey"}, f"keys of {account}")


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Option("--key", help="The API key to delete.")],
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a key; running servers refuse it within a second."""
    with _opened(database) as runtime:
        revoked = runtime.service.keys.revoke_key(key)
    _emit({"revoked": revoked.api_key, "account": str(revoked.account_uid)}, as_json, "key revoked")




def _key_row(key: ApiKey) -> dict[str, Any]:
    return {
        "apiKey": key.api_key, "id": key.id, "account": str(key.account_uid), "dialect": key.scheme.value,
        "signType": key.sign_type.value, "keyType": key.key_type, "enabled": key.enabled, "label": key.label,
        "permissions": list(key.permissions), "ipList": list(key.ip_list), "createdAt": _when(key.created_at),
        **_lifecycle_fields(key),
    }


def _lifecycle_fields(key: ApiKey) -> dict[str, Any]:
    """Expiry, a rotation's overlap and the last use (None when there is none: "-" in a table)."""
    now = int(time.time() * 1000)
    return {
        "expiresAt": _when(key.expires_at) if key.expires_at is not None else None,
        "expired": key.expired(now),
        # the secret a rotation replaced verifies until then (only while it does)
        "previousSecretUntil": _when(key.previous_until) if key.in_grace(now) and key.previous_until else None,
        "lastUsedAt": _when(key.last_used_at) if key.last_used_at is not None else None,
        "lastUsedIp": key.last_used_ip,
    }


def _expiry(expires_in: str | None, expires_at: str | None) -> int | None:
    """Unix ms from ``--expires-in`` or ``--expires-at`` (not both); None without either. The service checks
    that it lies in the future."""
    if expires_in is not None and expires_at is not None:
        raise Refused("give --expires-in or --expires-at, not both")
    if expires_in is not None:
        try:
            seconds = parse_duration(expires_in)
        except ValueError as error:
            raise Refused(f"--expires-in: {error}") from None
        if seconds <= 0:
            raise Refused("--expires-in must be longer than 0")
        return int(time.time() * 1000 + seconds * 1000)
    if expires_at is not None:
        try:
            when = datetime.fromisoformat(expires_at.strip().replace("Z", "+00:00"))
        except ValueError:
            raise Refused(f"--expires-at: {expires_at!r} is not an ISO 8601 time, e.g. 2027-01-31T12:00:00Z") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return int(when.timestamp() * 1000)
    return None


def _duration(option: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise Refused(f"{option}: {error}") from None


@keys_app.command("rotate")
def keys_rotate(
    key: Annotated[str, typer.Option("--key", help="The API key.")],
    grace: Annotated[
        str, typer.Option("--grace", help="How long the old secret keeps working, 0 to 7d (e.g. 0, 90s, 1h, 2d).")
    ],
    passphrase: Annotated[
        str | None, typer.Option(help="Bitget: a new passphrase for the new secret (default: keep the key's).")
    ] = None,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a new secret; the old one keeps working for the grace period, then stops on every server."""
    grace_s = _duration("--grace", grace)
    with _opened(database) as runtime:
        rotated = runtime.service.lifecycle.rotate(api_key=key, grace_s=grace_s, passphrase=passphrase)
    found = rotated.key
    data: dict[str, Any] = {"apiKey": found.api_key}
    data["secretKey" if found.scheme is Scheme.BITGET else "apiSecret"] = rotated.secret
    if rotated.passphrase is not None:
        data["passphrase"] = rotated.passphrase
    data.update(
        id=found.id, account=str(found.account_uid),
        previousSecretUntil=_when(rotated.previous_until) if rotated.previous_until is not None else None,
    )
    _emit(data, as_json, "API key rotated; its new secret is shown only now, keep it:")


@keys_app.command("expire")
def keys_expire(
    key: Annotated[str, typer.Option("--key", help="The API key.")],
    expires_in: ExpiresInOption = None,
    expires_at: ExpiresAtOption = None,
    never: Annotated[bool, typer.Option("--never", help="Remove the key's expiry.")] = False,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set when a key stops verifying (--expires-in or --expires-at), or remove its expiry (--never)."""
    expiry = _expiry(expires_in, expires_at)
    if never == (expiry is not None):
        raise Refused("give one of --expires-in, --expires-at or --never")
    with _opened(database) as runtime:
        updated = runtime.service.lifecycle.set_expiry(api_key=key, expires_at=expiry)
    _emit(_key_row(updated), as_json, "expiry removed" if never else "expiry set")


@keys_app.command("expiring")
def keys_expiring(
    within: Annotated[str, typer.Option("--within", help="The horizon, e.g. 7d (the default), 24h.")] = "7d",
    include_expired: Annotated[
        bool, typer.Option("--include-expired", help="Also list keys already past their expiry.")
    ] = False,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the keys (of every account) that expire within the horizon, soonest first."""
    within_s = _duration("--within", within)
    with _opened(database) as runtime:
        keys = runtime.service.lifecycle.expiring(within_s, include_expired=include_expired)
    rows = [
        {
            "apiKey": k.api_key, "id": k.id, "account": str(k.account_uid), "dialect": k.scheme.value,
            "label": k.label, **_lifecycle_fields(k),
        }
        for k in keys
    ]
    if as_json:
        print(json.dumps(rows))
        return
    columns = ("apiKey", "account", "dialect", "expiresAt", "lastUsedAt")
    _table(rows, columns, {"apiKey", "expiresAt"}, f"keys expiring within {format_duration(within_s)}")


@keys_app.command("show")
def keys_show(
    key: Annotated[str, typer.Option("--key", help="The API key.")],
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one key (never its secret)."""
    with _opened(database) as runtime:
        found = runtime.service.keys.find_key(key)
    _emit(_key_row(found), as_json, "API key")


def _set_enabled(key: str, enabled: bool, database: str | None, as_json: bool) -> None:
    with _opened(database) as runtime:
        updated = runtime.service.keys.set_key_enabled(key, enabled)
    _emit(_key_row(updated), as_json, "key enabled" if enabled else "key disabled")


@keys_app.command("disable")
def keys_disable(
    key: Annotated[str, typer.Option("--key", help="The API key.")],
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Turn a key off without deleting it; running servers refuse it within 0.25 s."""
    _set_enabled(key, False, database, as_json)


@keys_app.command("enable")
def keys_enable(
    key: Annotated[str, typer.Option("--key", help="The API key.")],
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Turn a disabled key on again."""
    _set_enabled(key, True, database, as_json)


def _permissions(dialect: Scheme, given: list[str]) -> list[str]:
    """``--perm`` values checked against the dialect's names: Bitget's, or for WhiteBIT the trading scopes
    its sub-accounts carry (``spot_trade``, ``margin_trade``, ``contract_trade``)."""
    if dialect is Scheme.BITGET:
        return list(normalize_bitget_permissions(given))  # errors.InvalidPermission: one line (failure)
    allowed = SPOT + COLLATERAL
    unknown = [p for p in given if p not in allowed]
    if unknown:
        raise Refused(f"unknown WhiteBIT permission {unknown[0]!r}: use {', '.join(allowed)}")
    return list(dict.fromkeys(given))


def _default_permissions(dialect: Scheme) -> list[str]:
    if dialect is Scheme.BITGET:
        return ["read", "spot_trade", "margin_trade", "contract_trade", "transfer"]
    return []


@app.command("audit")
def audit(
    account: Annotated[int | None, typer.Option("--account", help="Only this main account's events.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 1000,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """List audit events: who changed what, when, from which IP."""
    with _opened(database) as runtime:
        events = runtime.service.audit.audit_events(account_uid=account, limit=limit)
    rows = [
        {
            "id": e.id,
            "at": datetime.fromtimestamp(e.at / 1000, UTC).isoformat(timespec="milliseconds"),
            "actorUid": str(e.actor_uid) if e.actor_uid is not None else None,
            "actorKey": e.actor_key,
            "action": e.action,
            "target": e.target,
            "ip": e.ip,
            "detail": e.detail,
        }
        for e in events
    ]
    if as_json:
        print(json.dumps(rows))
        return
    columns = ("at", "action", "target", "actorUid", "actorKey", "ip")
    _table(rows, columns, {"at", "target", "actorUid", "actorKey", "ip"}, "audit events")


# operator tokens (the native management API: keyplane.services.tokens) -------------------------------


def _token_row(token: OperatorToken) -> dict[str, Any]:
    return {
        "id": token.id, "name": token.name, "scopes": [s.value for s in token.scopes], "hint": token.hint + "…",
        "createdAt": _when(token.created_at),
        "revokedAt": _when(token.revoked_at) if token.revoked_at is not None else None,
    }


@tokens_app.command("create")
def tokens_create(
    scope: Annotated[
        list[Scope], typer.Option("--scope", help="read, accounts, keys, audit or all; repeat for more.")
    ],
    name: Annotated[str, typer.Option("--name", help="What the token is for (shown in lists).")] = "",
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an operator token; the token is shown this once."""
    with _opened(database) as runtime:
        issued = runtime.service.tokens.create(scope, name=name)
    row = _token_row(issued.token)
    del row["revokedAt"]
    _emit({"token": issued.secret, **row}, as_json, "operator token created; it is shown only now, keep it:")


@tokens_app.command("list")
def tokens_list(
    active: Annotated[bool, typer.Option("--active", help="Leave out revoked tokens.")] = False,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """List operator tokens (never a token itself: its first characters as a hint)."""
    with _opened(database) as runtime:
        tokens = runtime.service.tokens.list(include_revoked=not active)
    rows = [_token_row(token) for token in tokens]
    if as_json:
        print(json.dumps(rows))
        return
    columns = ("id", "name", "scopes", "hint", "createdAt", "revokedAt")
    _table(rows, columns, {"id", "hint", "createdAt", "revokedAt"}, "operator tokens")


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Option("--id", help="The token's id (tok_…), as `tokens list` shows it.")],
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a token: every server refuses it from the next call on."""
    with _opened(database) as runtime:
        revoked = runtime.service.tokens.revoke(token_id)
    _emit(_token_row(revoked), as_json, "operator token revoked")


# How long a rotation waits, with the new key in the file, before its last pass: a node that read the old
# file just before it changed may still commit a secret sealed under the old key within this time.
RESEAL_GRACE_SECONDS = 2.0


@master_key_app.command("rotate")
def master_key_rotate(
    new_key: Annotated[
        str | None, typer.Option("--new-key", help="The new key (64 hex digits); generated if not given.")
    ] = None,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Re-seal every API secret under a new master key, without downtime.

    With a key file: the file first holds the new key and the old ones (running servers read it again, seal
    under the new key and open both), every secret is re-sealed, and once none is left under an old key the
    file holds the new key only. With KEYPLANE_MASTER_KEY, which keyplane cannot change on running servers:
    set it to NEW,OLD (newest first) on every node and restart them, then run this command; it re-seals
    everything under NEW, after which OLD can be dropped from the setting. Either way the database then
    records the new key's fingerprint: a process still on the old key alone is refused at start.
    """
    _one_line_warnings()
    settings = _settings(database)
    if settings.master_key:
        _rotate_environment_ring(settings, new_key, as_json)
        return
    new_text = new_key or crypto.new_master_key_text()
    try:
        new = crypto.MasterKey.from_text(new_text)  # refuse a malformed key before touching anything
    except ValueError as error:
        raise Refused(f"--new-key: {error}") from None
    runtime = _runtime(database)  # also refuses a missing, linked or loose key file, or the wrong key
    key_file = settings.resolved_master_key_file
    try:
        old_text = load_master_key_text(key_file)
        crypto.write_key_file(key_file, "\n".join([new_text, *old_text.split(",")]) + "\n")
        with _unfinished_rotation("the key file holds the new key and the old ones"):
            count = runtime.service.sealing.reseal_secrets()
            time.sleep(RESEAL_GRACE_SECONDS)
            count += runtime.service.sealing.reseal_secrets(only_stale=True)
            # every secret is under the new key now; the file still opens both until the next line
            runtime.store.record_master_key_fingerprint(new.fingerprints[0], replace=True)
        crypto.write_key_file(key_file, new_text + "\n")
    finally:
        runtime.close()
    _emit(
        {"resealed": count, "keyFile": str(key_file), "masterKeyFingerprint": new.fingerprints[0]},
        as_json, "master key rotated",
    )


def _rotate_environment_ring(settings: Settings, new_key: str | None, as_json: bool) -> None:
    assert settings.master_key is not None
    try:
        ring = crypto.MasterKey.from_text(settings.master_key)
    except ValueError as error:
        raise Refused(f"KEYPLANE_MASTER_KEY: {error}") from None
    if new_key is not None or len(ring) < 2:
        raise Refused(
            "KEYPLANE_MASTER_KEY is read at start only: set it to NEW,OLD (newest first) on every node, restart "
            "them, then run `keyplane master-key rotate` without --new-key"
        )
    runtime = build_runtime(settings, create=False)
    try:
        with _unfinished_rotation("KEYPLANE_MASTER_KEY still holds both keys"):
            count = runtime.service.sealing.reseal_secrets(ring)
            runtime.store.record_master_key_fingerprint(ring.fingerprints[0], replace=True)
    finally:
        runtime.close()
    _emit(
        {
            "resealed": count, "masterKeyFingerprint": ring.fingerprints[0],
            "next": "keep only the first key in KEYPLANE_MASTER_KEY on every node",
        },
        as_json, "master key rotated",
    )


@contextmanager
def _unfinished_rotation(state: str) -> Iterator[None]:
    """An outage part-way through re-sealing (many transactions): some secrets moved, not all. Every one
    still opens, and running the command again finishes the job: say that, not "nothing was changed"."""
    try:
        yield
    except Exception as error:
        outage = unavailable(error)
        if outage is None:
            raise
        raise Refused(
            f"{outage.message}; the rotation did not finish ({state}, so every secret still opens): run "
            "`keyplane master-key rotate` again", ExitCode.UNAVAILABLE,
        ) from None


def load_master_key_text(key_file: Path) -> str:
    text = crypto.read_key_file(key_file)  # MasterKeyError: one line (failure)
    return ",".join(text.split())  # all of them: an earlier rotation may not have finished


BACKLOG = 1024  # granian's default


def _listen_socket(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound here without SO_REUSEPORT: a second server on a taken port fails
    to bind (granian's own sockets set SO_REUSEPORT on Linux, so two servers would share the port)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG, reuse_port=False)
    except OSError as error:
        reason = "the port is already in use" if error.errno == errno.EADDRINUSE else error.strerror or str(error)
        raise Refused(f"cannot listen on {host}:{port}: {reason}", ExitCode.CANNOT_LISTEN) from None
    sock.set_inheritable(True)
    return sock


def _granian_on(sock: socket.socket, **options: Any) -> Any:
    """A granian server whose workers accept on ``sock`` (granian's shared-socket mode) instead of binding
    their own SO_REUSEPORT sockets."""
    from granian import Granian
    from granian._granian import SocketHolder

    class _OnSocket(Granian):  # type: ignore[misc,valid-type]
        def _init_shared_socket(self) -> None:
            self._ssp = None
            self._shd = SocketHolder(sock.fileno(), False, BACKLOG)  # type: ignore[call-arg]  # fd, uds, backlog
            self._sfd = sock.fileno()
            self._sso = sock

    return _OnSocket(**options)


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    database: DatabaseOption = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes. Each has its own key cache (see docs/architecture.md).")
    ] = 1,
) -> None:
    """Run the service (granian, ASGI). GET /health answers 200 once it is ready.

    On first start it makes the database and, beside a SQLite file, its master key (and says so on stderr).
    """
    from granian.constants import Interfaces

    if database:
        os.environ["KEYPLANE_DATABASE_URL"] = database
    settings = _settings()
    require_explicit_master_key(settings)
    try:
        log_config = logs.granian_log_config()
    except ValueError as error:  # KEYPLANE_LOG_LEVEL / KEYPLANE_LOG_FORMAT
        _fail(ExitCode.REFUSED, str(error))
    sock = _listen_socket(host, port)
    # Make the schema and the master key before the server starts, so problems surface here.
    runtime = build_runtime(settings, create=True)
    runtime.close()
    if runtime.created_database:
        print(logs.line(f"keyplane: created a new database at {locate(settings.database_url).shown}"), file=sys.stderr)
    elif runtime.migrated:
        applied = ", ".join(revision.id for revision in runtime.migrated)
        print(logs.line(f"keyplane: migrated the database's schema (applied revision {applied})"), file=sys.stderr)
    # how /v1/ is guarded (closed, token, or explicitly open), so no operator runs an open one unawares
    print(logs.line(f"keyplane: {settings.verify_mode}"), file=sys.stderr, flush=True)
    metrics_dir = _metrics_dir(settings, workers)
    try:
        _granian_on(
            sock,
            target="keyplane.app:app_from_env",
            address=host,
            port=port,
            interface=Interfaces.ASGI,
            factory=True,
            workers=workers,
            log_access=False,
            log_dictconfig=log_config,  # KEYPLANE_LOG_FORMAT for granian's own lines too
            backlog=BACKLOG,
        ).serve()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _metrics_dir(settings: Settings, workers: int) -> str | None:
    """With several workers, where each writes its counters so that any one answers /metrics for all
    (``keyplane.metrics``): KEYPLANE_METRICS_DIR (emptied of the last run's), or a fresh temporary directory
    (returned: removed at exit)."""
    if workers < 2 or not settings.metrics:
        return None
    if settings.metrics_dir is not None:
        settings.metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in settings.metrics_dir.glob("worker-*.json"):
            stale.unlink(missing_ok=True)
        return None
    made = tempfile.mkdtemp(prefix="keyplane-metrics-")
    os.environ["KEYPLANE_METRICS_DIR"] = made
    return made


def _fail(code: ExitCode, line: str) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(line.translate(_CONTROLS))}", markup=True, highlight=False)
    sys.exit(code)


def main() -> None:
    try:
        app()  # Click exits on its own for usage errors (2) and typer.Exit
    except Exception as error:
        known = failure(error)
        if known is None:
            raise
        _fail(*known)


if __name__ == "__main__":
    main()
