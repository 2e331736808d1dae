"""The operator's CLI for accounts and keys (issue 10 item 4): list/show/freeze/unfreeze main accounts, show/
disable/enable keys, WhiteBIT key types, permissions checked per dialect, unique main-account names; each
with ``--json``, and every refusal one line with its exit code."""

from __future__ import annotations

import time

from conftest import Server
from keyplane.cli import ExitCode
from test_cli_operator import _bitget_ok, _env, _one_line_error, _run


def _until(check: object, want: bool) -> bool:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if check() is want:  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_accounts_list_filters_and_pages_and_show_counts_keys(server: Server) -> None:
    made = [server.main_account(f"pager-{i}") for i in range(5)]
    server.bitget_main_key(made[0])
    listed = server.cli("accounts", "list", "--name-contains", "PAGER-", "--limit", "2", "--offset", "1")
    assert [row["uid"] for row in listed] == made[1:3]
    assert all(set(row) == {"uid", "id", "name", "status", "createdAt"} for row in listed)
    assert [r["uid"] for r in server.cli("accounts", "list", "--name-contains", "pager-_")] == []  # no wildcard
    shown = server.cli("accounts", "show", "--account", made[0])
    assert shown["name"] == "pager-0" and shown["keys"] == 1 and shown["status"] == "normal"
    plain = _run(server.workdir, "accounts", "list", "--name-contains", "pager-", "--database", server.database_url,
                 env=_env(server.env, COLUMNS="40"))
    assert all(uid in plain.stdout for uid in made)


def test_freezing_a_main_account_stops_its_keys_and_unfreezing_restores_them(server: Server) -> None:
    uid = server.main_account("freezable")
    key = server.bitget_main_key(uid)
    args = (key["apiKey"], key["secretKey"], key["passphrase"])
    assert _bitget_ok(server, *args)
    assert server.cli("accounts", "freeze", "--account", uid)["status"] == "freeze"
    assert _until(lambda: _bitget_ok(server, *args), False)
    assert server.cli("accounts", "list", "--status", "freeze", "--name-contains", "freezable")[0]["uid"] == uid
    again = _run(server.workdir, "accounts", "freeze", "--account", uid, "--database", server.database_url,
                 env=_env(server.env))
    _one_line_error(again, ExitCode.REFUSED, "already")
    assert server.cli("accounts", "unfreeze", "--account", uid)["status"] == "normal"
    assert _until(lambda: _bitget_ok(server, *args), True)
    actions = [event["action"] for event in server.cli("audit", "--account", uid)]
    assert actions[:2] == ["account.unfreeze", "account.freeze"]


def test_only_an_empty_main_account_is_deleted(server: Server) -> None:
    uid = server.main_account("deletable")
    key = server.bitget_main_key(uid)
    held = _run(server.workdir, "accounts", "delete", "--account", uid, "--database", server.database_url,
                env=_env(server.env))
    _one_line_error(held, ExitCode.REFUSED, "1 key(s)", "revoke")
    server.cli("keys", "revoke", "--key", key["apiKey"])
    assert server.cli("accounts", "delete", "--account", uid) == {"deleted": uid, "name": "deletable"}
    gone = _run(server.workdir, "accounts", "show", "--account", uid, "--database", server.database_url,
                env=_env(server.env))
    _one_line_error(gone, ExitCode.REFUSED, f"no main account {uid}")
    assert server.cli("audit", "--account", uid)[0]["action"] == "account.delete"


def test_disabling_a_key_stops_it_and_enabling_restores_it(server: Server) -> None:
    uid = server.main_account("disabling")
    key = server.bitget_main_key(uid)
    args = (key["apiKey"], key["secretKey"], key["passphrase"])
    assert _bitget_ok(server, *args)
    assert server.cli("keys", "disable", "--key", key["apiKey"])["enabled"] is False
    assert _until(lambda: _bitget_ok(server, *args), False)
    shown = server.cli("keys", "show", "--key", key["apiKey"])
    assert shown["enabled"] is False and shown["apiKey"] == key["apiKey"] and "secretKey" not in shown
    assert server.cli("keys", "enable", "--key", key["apiKey"])["enabled"] is True
    assert _until(lambda: _bitget_ok(server, *args), True)
    missing = _run(server.workdir, "keys", "show", "--key", "bg_nope", "--database", server.database_url,
                   env=_env(server.env))
    _one_line_error(missing, ExitCode.REFUSED, "not found")


def test_whitebit_key_types_and_permissions_are_checked_per_dialect(server: Server) -> None:
    uid = server.main_account("typed")
    assert server.whitebit_main_key(uid, "--key-type", "1")["keyType"] == 1
    assert server.whitebit_main_key(uid)["keyType"] == 2
    db = ("--database", server.database_url)
    env = _env(server.env)
    for args, words in (
        (("--dialect", "whitebit", "--key-type", "3"), ("key type",)),
        (("--dialect", "bitget", "--key-type", "1"), ("key type",)),
        (("--dialect", "bitget", "--perm", "foo"), ("foo",)),
        (("--dialect", "whitebit", "--perm", "read"), ("read", "spot_trade")),
    ):
        _one_line_error(_run(server.workdir, "keys", "create", "--account", uid, *args, *db, env=env),
                        ExitCode.REFUSED, *words)
    assert server.bitget_main_key(uid, "--perm", "read,spot_trade")["permissions"] == ["read", "spot_trade"]


def test_main_account_names_are_unique_whatever_their_case(server: Server) -> None:
    server.main_account("unique-venue")
    for name in ("Unique-Venue", "unique-venue", " UNIQUE-VENUE ", ""):
        taken = _run(server.workdir, "accounts", "create", "--name", name, "--database", server.database_url,
                     env=_env(server.env))
        _one_line_error(taken, ExitCode.REFUSED, "already named" if name else "1 to 64")
