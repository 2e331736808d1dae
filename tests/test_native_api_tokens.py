"""Operator tokens (issue 11, item 1): ``keyplane tokens create|list|revoke`` as an operator meets them (the
token whole, once, at 80 columns and piped), stored as a digest only, scoped, revocable, audited."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from keyplane.cli import ExitCode
from keyplane.domain.tokens import Need, Scope
from keyplane.errors import InvalidInput, TokenNotFound
from keyplane.services.tokens import TokenService, token_digest
from keyplane.store import Store
from test_cli_operator import _env, _fields, _one_line_error, _run, _run_on_terminal

TOKEN = re.compile(r"kpt_[A-Za-z0-9]{43}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokens")
    assert _run(path, "init").returncode == 0
    return path


def _db(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'keyplane.db'}"


@pytest.mark.parametrize("columns", [80, None])
def test_create_prints_the_token_whole_once_on_a_terminal_and_piped(workdir: Path, columns: int | None) -> None:
    args = ("tokens", "create", "--scope", "keys", "--scope", "audit", "--name", f"back office {columns}")
    if columns is None:
        result = _run(workdir, *args)
        assert result.returncode == 0, result.stderr
        out = result.stdout
    else:
        out = _run_on_terminal(workdir, *args, columns=columns, env=_env())
    fields = _fields(out)
    assert TOKEN.fullmatch(fields["token"]), out
    assert out.count(fields["token"]) == 1  # once, on its own line, never in a table cell
    assert "│" not in out and "┃" not in out
    assert fields["scopes"] == "keys, audit"
    assert fields["hint"] == fields["token"][:8] + "…"
    token = TokenService(Store(_db(workdir))).authenticate(fields["token"])
    assert token is not None and token.id == fields["id"] and token.scopes == (Scope.KEYS, Scope.AUDIT)


def test_json_create_list_and_revoke(workdir: Path) -> None:
    made = json.loads(_run(workdir, "tokens", "create", "--scope", "read", "--json").stdout)
    assert TOKEN.fullmatch(made["token"]) and made["scopes"] == ["read"]
    listed = json.loads(_run(workdir, "tokens", "list", "--json").stdout)
    mine = [row for row in listed if row["id"] == made["id"]]
    assert mine and "token" not in mine[0] and mine[0]["revokedAt"] is None
    assert made["token"] not in json.dumps(listed)

    revoked = json.loads(_run(workdir, "tokens", "revoke", "--id", made["id"], "--json").stdout)
    assert revoked["id"] == made["id"] and revoked["revokedAt"]
    assert TokenService(Store(_db(workdir))).authenticate(made["token"]) is None
    active = json.loads(_run(workdir, "tokens", "list", "--active", "--json").stdout)
    assert made["id"] not in {row["id"] for row in active}

    again = _run(workdir, "tokens", "revoke", "--id", made["id"])
    _one_line_error(again, ExitCode.REFUSED, "already revoked")
    with pytest.raises(TokenNotFound, match="no operator token"):
        TokenService(Store(_db(workdir))).revoke("tok_0000000000000000")


def test_list_at_80_columns_and_piped_never_cuts_an_id(workdir: Path) -> None:
    for _ in range(2):
        TokenService(Store(_db(workdir))).create(["all"], name="a long name " * 4)
    ids = [row["id"] for row in json.loads(_run(workdir, "tokens", "list", "--json").stdout)]
    terminal = _run_on_terminal(workdir, "tokens", "list", columns=80, env=_env())
    for out in (terminal, _run(workdir, "tokens", "list").stdout):
        for token_id in ids:
            assert token_id in out
        assert not TOKEN.search(out)  # never a token, only hints


def test_bad_scope_and_name_are_one_line_and_make_nothing(workdir: Path) -> None:
    before = len(json.loads(_run(workdir, "tokens", "list", "--json").stdout))
    bad = _run(workdir, "tokens", "create", "--scope", "root")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    _one_line_error(_run(workdir, "tokens", "create", "--scope", "all", "--name", "x" * 65), ExitCode.REFUSED, "name")
    for name in ("a\x1bb", "a\nb", "x" * 65):
        with pytest.raises(InvalidInput, match="name"):
            TokenService(Store(_db(workdir))).create(["all"], name=name)
    with pytest.raises(InvalidInput, match="scope"):
        TokenService(Store(_db(workdir))).create([])
    assert len(json.loads(_run(workdir, "tokens", "list", "--json").stdout)) == before


def test_only_a_digest_is_stored_and_the_audit_names_the_token_id(workdir: Path) -> None:
    made = json.loads(_run(workdir, "tokens", "create", "--scope", "accounts", "--json").stdout)
    _run(workdir, "tokens", "revoke", "--id", made["id"])
    raw = b"".join(path.read_bytes() for path in workdir.glob("keyplane.db*") if path.is_file())
    assert made["token"].encode() not in raw
    with sqlite3.connect(workdir / "keyplane.db") as db:
        stored = db.execute("SELECT token_hash FROM operator_tokens WHERE id = ?", (made["id"],)).fetchone()[0]
        events = db.execute(
            "SELECT action, detail FROM audit_events WHERE target = ? ORDER BY id", (made["id"],)
        ).fetchall()
    assert stored == token_digest(made["token"])
    assert [action for action, _ in events] == ["token.create", "token.revoke"]
    assert made["token"] not in json.dumps(events)


def test_authenticate_refuses_without_a_store_read_what_cannot_be_a_token(workdir: Path) -> None:
    service = TokenService(Store(_db(workdir)))
    issued = service.create(["keys"], name="shape")
    assert service.authenticate(issued.secret) is not None
    for wrong in ("", issued.secret[:-1], issued.secret + "x", issued.secret.upper(), "Bearer " + issued.secret,
                  issued.secret[:-1] + "é", "kpt_" + "a" * 43, issued.secret.replace("kpt_", "kpx_")):
        assert service.authenticate(wrong) is None, wrong
    assert issued.secret not in repr(issued)


def test_scopes_grant_what_they_name() -> None:
    from keyplane.domain.tokens import OperatorToken

    def token(*scopes: Scope) -> OperatorToken:
        return OperatorToken(id="tok_x", name="", scopes=scopes, hint="kpt_", created_at=0)

    assert token(Scope.READ).grants(Need.READ_KEYS) and token(Scope.READ).grants(Need.READ_ACCOUNTS)
    assert not token(Scope.READ).grants(Need.WRITE_KEYS) and not token(Scope.READ).grants(Need.READ_AUDIT)
    assert token(Scope.KEYS).grants(Need.WRITE_KEYS) and not token(Scope.KEYS).grants(Need.WRITE_ACCOUNTS)
    assert token(Scope.ACCOUNTS).grants(Need.WRITE_ACCOUNTS) and not token(Scope.ACCOUNTS).grants(Need.READ_KEYS)
    assert token(Scope.AUDIT).grants(Need.READ_AUDIT) and not token(Scope.AUDIT).grants(Need.READ_KEYS)
    assert all(token(Scope.ALL).grants(need) for need in Need)
