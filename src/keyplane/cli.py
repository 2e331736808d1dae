"""The ``keyplane`` command: the operator's tool for main accounts, their keys, the audit log, the server.

Exit codes: 0 done; 2 refused (a bad setting or argument, a rule the change breaks; nothing changed);
3 unavailable (the database cannot be reached; nothing changed, try again; ``master-key rotate`` may have
re-sealed part of the secrets, all still open, and finishes when run again). An outage prints one line,
never a traceback. Redis down is not an outage for the command: a change is committed and other
processes learn of it from the store's change feed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from keyplane import crypto, errors
from keyplane.config import Settings
from keyplane.domain.model import Scheme
from keyplane.outages import unavailable
from keyplane.runtime import Runtime, build_runtime

# never the values of local variables in a traceback: they may hold a key's secret or the master key
app = typer.Typer(
    help="keyplane: sub-accounts and API keys for a trading venue.", no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
accounts_app = typer.Typer(help="Main accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="Main-account API keys.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
master_key_app = typer.Typer(help="The master key that seals every API secret.", no_args_is_help=True)
app.add_typer(master_key_app, name="master-key")

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # an error stays one line, however narrow the terminal

DatabaseOption = Annotated[
    str | None, typer.Option("--database", help="Database URL (default: KEYPLANE_DATABASE_URL or ./keyplane.db).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object, for scripts.")]


def _runtime(database: str | None) -> Runtime:
    _one_line_warnings()
    return _build(_settings(database))


def _build(settings: Settings) -> Runtime:
    """The runtime, or one clear line and exit code 2 when the master key cannot be used."""
    try:
        return build_runtime(settings)
    except crypto.MasterKeyError as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None


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
    """The settings, or one clear line and exit code 2 when the environment holds a bad one."""
    try:
        return Settings.from_env(database)
    except (ValueError, OSError) as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None


def _emit(data: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(data))
        return
    table = Table(title=title, show_header=False)
    for name, value in data.items():
        table.add_row(name, json.dumps(value) if isinstance(value, list | dict) else str(value))
    console.print(table)


@accounts_app.command("create")
def accounts_create(
    name: Annotated[str, typer.Option("--name", help="The main account's name.")],
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a main account."""
    runtime = _runtime(database)
    try:
        account = runtime.service.create_main_account(name)
    finally:
        runtime.close()
    _emit({"uid": str(account.uid), "id": account.public_id, "name": account.name}, as_json, "main account")


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
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a main-account API key; its secret is shown this once."""
    runtime = _runtime(database)
    try:
        issued = runtime.service.issue_main_key(
            account,
            dialect,
            label=label,
            permissions=perm or _default_permissions(dialect),
            ip_list=ip or [],
            passphrase=passphrase,
            public_key_pem=rsa_public_key.read_text() if rsa_public_key else None,
        )
    except errors.KeyplaneError as error:
        err_console.print(f"[red]error:[/red] {error.message}")
        raise typer.Exit(2) from None
    finally:
        runtime.close()
    key = issued.key
    data: dict[str, Any] = {"apiKey": key.api_key}
    if dialect is Scheme.BITGET:
        data.update(secretKey=issued.secret, passphrase=issued.passphrase)
    else:
        data.update(apiSecret=issued.secret)
    data.update(
        id=key.id, account=str(key.account_uid), signType=key.sign_type.value,
        permissions=list(key.permissions), ipList=list(key.ip_list),
    )
    _emit(data, as_json, "API key (the secret is shown only now)")


@keys_app.command("list")
def keys_list(
    account: Annotated[int, typer.Option("--account", help="The account's UID (main or sub).")],
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """List an account's keys (never a secret)."""
    runtime = _runtime(database)
    try:
        keys = runtime.service.list_account_keys(account)
    finally:
        runtime.close()
    rows = [
        {
            "apiKey": k.api_key, "id": k.id, "dialect": k.scheme.value, "signType": k.sign_type.value,
            "label": k.label, "permissions": list(k.permissions), "ipList": list(k.ip_list),
        }
        for k in keys
    ]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title=f"keys of {account}")
    for column in ("apiKey", "dialect", "signType", "label", "permissions", "ipList"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("apiKey", "dialect", "signType", "label", "permissions", "ipList")))
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Option("--key", help="The API key to delete.")],
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a key; running servers refuse it within a second."""
    runtime = _runtime(database)
    try:
        revoked = runtime.service.revoke_key(key)
    except errors.KeyplaneError as error:
        err_console.print(f"[red]error:[/red] {error.message}")
        raise typer.Exit(2) from None
    finally:
        runtime.close()
    _emit({"revoked": revoked.api_key, "account": str(revoked.account_uid)}, as_json, "key revoked")


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
    runtime = _runtime(database)
    try:
        events = runtime.service.audit_events(account_uid=account, limit=limit)
    finally:
        runtime.close()
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
    table = Table(title="audit events")
    for column in ("at", "action", "target", "actorUid", "actorKey", "ip"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c] or "") for c in ("at", "action", "target", "actorUid", "actorKey", "ip")))
    console.print(table)


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
    everything under NEW, after which OLD can be dropped from the setting.
    """
    _one_line_warnings()
    settings = _settings(database)
    if settings.master_key:
        _rotate_environment_ring(settings, new_key, as_json)
        return
    new_text = new_key or crypto.new_master_key_text()
    try:
        crypto.MasterKey.from_text(new_text)  # refuse a malformed key before touching anything
    except ValueError as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    runtime = _build(settings)  # also refuses a missing, linked or loose key file, in one line
    key_file = settings.resolved_master_key_file
    try:
        old_text = load_master_key_text(key_file)
        crypto.write_key_file(key_file, "\n".join([new_text, *old_text.split(",")]) + "\n")
        with _unfinished_rotation("the key file holds the new key and the old ones"):
            count = runtime.service.reseal_secrets()
            time.sleep(RESEAL_GRACE_SECONDS)
            count += runtime.service.reseal_secrets(only_stale=True)
        crypto.write_key_file(key_file, new_text + "\n")
    finally:
        runtime.close()
    _emit({"resealed": count, "keyFile": str(key_file)}, as_json, "master key rotated")


def _rotate_environment_ring(settings: Settings, new_key: str | None, as_json: bool) -> None:
    assert settings.master_key is not None
    try:
        ring = crypto.MasterKey.from_text(settings.master_key)
    except ValueError as error:
        err_console.print(f"[red]error:[/red] KEYPLANE_MASTER_KEY: {error}")
        raise typer.Exit(2) from None
    if new_key is not None or len(ring) < 2:
        err_console.print(
            "[red]error:[/red] KEYPLANE_MASTER_KEY is read at start only: set it to NEW,OLD (newest first) on "
            "every node, restart them, then run `keyplane master-key rotate` without --new-key"
        )
        raise typer.Exit(2)
    runtime = _build(settings)
    try:
        with _unfinished_rotation("KEYPLANE_MASTER_KEY still holds both keys"):
            count = runtime.service.reseal_secrets(ring)
    finally:
        runtime.close()
    _emit(
        {"resealed": count, "next": "keep only the first key in KEYPLANE_MASTER_KEY on every node"},
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
        err_console.print(
            f"[red]error:[/red] {outage.message}; the rotation did not finish ({state}, so every secret "
            "still opens): run `keyplane master-key rotate` again", soft_wrap=True,
        )
        raise typer.Exit(EXIT_UNAVAILABLE) from None


def load_master_key_text(key_file: Path) -> str:
    try:
        text = crypto.read_key_file(key_file)
    except crypto.MasterKeyError as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    return ",".join(text.split())  # all of them: an earlier rotation may not have finished


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    database: DatabaseOption = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes. Each has its own key cache (see docs/architecture.md).")
    ] = 1,
) -> None:
    """Run the service (granian, ASGI). GET /health answers 200 once it is ready."""
    from granian import Granian
    from granian.constants import Interfaces

    if database:
        os.environ["KEYPLANE_DATABASE_URL"] = database
    # Make the schema and the master key before the server starts, so problems surface here.
    settings = _settings()
    _build(settings).close()
    # how /v1/ is guarded (closed, token, or explicitly open), so no operator runs an open one unawares
    print(f"keyplane: {settings.verify_mode}", file=sys.stderr, flush=True)
    Granian(
        "keyplane.app:app_from_env",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        factory=True,
        workers=workers,
        log_access=False,
    ).serve()


EXIT_UNAVAILABLE = 3


def main() -> None:
    try:
        app()
    except Exception as error:
        outage = unavailable(error)
        if outage is None:
            raise
        err_console.print(f"[red]error:[/red] {outage.message}; nothing was changed, try again", soft_wrap=True)
        sys.exit(EXIT_UNAVAILABLE)


if __name__ == "__main__":
    main()
