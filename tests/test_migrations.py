"""Schema migrations as the operator's own command (issue 10 item 8) and main-account names unique in the
database (item 4): ``keyplane migrate`` and ``--check`` on a database left at revision 0003, the refusal of a
database that already holds two main accounts of one name, and a race of processes creating one name, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from conftest import make_server
from keyplane.cli import ExitCode
from keyplane.config import Settings
from keyplane.errors import NameTaken
from keyplane.runtime import build_runtime
from keyplane.store import Store, head_revision
from keyplane.store.store import _alembic_config
from test_cli_operator import _env, _one_line_error, _run, _run_on_terminal

MASTER_KEY = "ab" * 32
MAIN_NAME_INDEX = "uq_accounts_main_name"
HEAD = head_revision()
REVISIONS = [f"{n:04d}" for n in range(1, int(HEAD) + 1)]


def _at_revision(url: str, revision: str, *main_names: str) -> None:
    """A keyplane database whose schema Alembic left at ``revision``, holding main accounts ``main_names``."""
    store = Store(url)
    try:
        with store.engine.begin() as conn:
            config = _alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        with store.engine.begin() as conn:
            for i, name in enumerate(main_names):
                conn.execute(
                    sa.text(
                        "INSERT INTO accounts (public_id, parent_uid, name, permissions, status, created_at, "
                        "updated_at) VALUES (:id, NULL, :name, '[]', 'normal', 0, 0)"
                    ),
                    {"id": f"00000000-0000-0000-0000-{i:012d}", "name": name},
                )
    finally:
        store.close()


def _state(url: str) -> tuple[str | None, bool]:
    """(the schema revision, whether the unique main-name index is there)."""
    store = Store(url)
    try:
        # (SQLAlchemy's reflection skips SQLite's expression indexes: ask the catalogues)
        query = (
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = :name" if store.is_sqlite
            else "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = :name"
        )
        with store.engine.connect() as conn:
            found = conn.execute(sa.text(query), {"name": MAIN_NAME_INDEX}).scalar_one()
        return store.schema_revision(), found == 1
    finally:
        store.close()


@pytest.fixture
def old_db(tmp_path: Path) -> str:
    """``keyplane init``'s database (with its master key file) taken back to revision 0003."""
    url = f"sqlite:///{tmp_path / 'keyplane.db'}"
    assert _run(tmp_path, "init", "--database", url).returncode == 0
    store = Store(url)
    with store.engine.begin() as conn:
        config = _alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    store.close()
    assert _state(url) == ("0003", False)
    return url


def test_check_on_an_old_database_says_so_in_one_line_and_changes_nothing(old_db: str, tmp_path: Path) -> None:
    for width in ({}, {"COLUMNS": "80"}):
        piped = _run(tmp_path, "migrate", "--check", "--database", old_db, env=_env(**width))
        assert piped.returncode == ExitCode.NEEDS_MIGRATION == 7, piped
        assert piped.stderr == "" and len(piped.stdout.splitlines()) == 1
        assert "revision 0003" in piped.stdout and HEAD in piped.stdout and "keyplane migrate" in piped.stdout
    as_json = _run(tmp_path, "migrate", "--check", "--json", "--database", old_db)
    pending = json.loads(as_json.stdout)["pending"]
    assert as_json.returncode == 7 and [r["revision"] for r in pending] == REVISIONS[3:]
    assert _state(old_db) == ("0003", False)
    # every other command refuses the old schema rather than migrate it as a side effect
    _one_line_error(_run(tmp_path, "accounts", "list", "--database", old_db), ExitCode.NEEDS_MIGRATION,
                    "revision 0003", "keyplane migrate")
    _one_line_error(_run(tmp_path, "init", "--database", old_db), ExitCode.REFUSED, "already", "nothing was changed")
    assert _state(old_db) == ("0003", False)


def test_migrate_applies_what_is_pending_says_what_and_is_then_current(old_db: str, tmp_path: Path) -> None:
    on_terminal = _run_on_terminal(tmp_path, "migrate", "--database", old_db, columns=80, env=_env())
    assert f"from revision 0003 to {HEAD}" in on_terminal and "0006  Main-account names unique" in on_terminal
    assert all(f"\n  {revision}  " in on_terminal for revision in REVISIONS[3:])
    assert _state(old_db) == (HEAD, True)
    current = _run_on_terminal(tmp_path, "migrate", "--check", "--database", old_db, columns=80, env=_env())
    assert current.strip().endswith(f"schema revision {HEAD}, current; nothing to do")
    piped = _run(tmp_path, "migrate", "--check", "--database", old_db)
    assert piped.returncode == 0 and piped.stdout == current.replace("\r", "")
    again = _run(tmp_path, "migrate", "--json", "--database", old_db)
    assert again.returncode == 0 and json.loads(again.stdout)["applied"] == []
    assert json.loads(again.stdout)["revision"] == HEAD
    assert _run(tmp_path, "accounts", "create", "--name", "after", "--database", old_db).returncode == 0


def test_migrate_refuses_a_database_that_is_missing_or_newer_than_this_keyplane(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    for args in (("migrate",), ("migrate", "--check")):
        _one_line_error(_run(tmp_path, *args, "--database", missing), ExitCode.NO_DATABASE, "keyplane init")
    assert not (tmp_path / "missing.db").exists()
    newer = f"sqlite:///{tmp_path / 'newer.db'}"
    _at_revision(newer, "head")
    with Store(newer).engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    for args in (("migrate",), ("migrate", "--check")):
        _one_line_error(_run(tmp_path, *args, "--database", newer), ExitCode.REFUSED, "9999", "newer keyplane")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_upgrade_is_refused_while_main_accounts_share_a_name(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'dup.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    _at_revision(url, "0003", "Acme", "other", "ACME", "solo")
    check = _run(tmp_path, "migrate", "--check", "--database", url)
    assert check.returncode == ExitCode.NEEDS_MIGRATION and "revision 0003" in check.stdout  # --check: a read
    refused = _run(tmp_path, "migrate", "--database", url, env=_env(COLUMNS="80"))
    line = _one_line_error(refused, ExitCode.REFUSED, "'Acme': uids 1000000001, 1000000003", "nothing was changed")
    assert "solo" not in line and "other" not in line
    assert _state(url) == ("0003", False)
    with Store(url).engine.begin() as conn:
        conn.execute(sa.text("UPDATE accounts SET name = 'Acme 2' WHERE uid = 1000000003"))
    assert _run(tmp_path, "migrate", "--database", url).returncode == 0
    assert _state(url) == (HEAD, True)


def test_serve_migrates_an_old_database_and_says_so(old_db: str, tmp_path: Path) -> None:
    server = make_server(tmp_path)  # its database is old_db's file
    assert server.database_url == old_db
    server.start()  # returns once /health answers
    server.stop()
    applied = ", ".join(REVISIONS[3:])
    assert f"migrated the database's schema (applied revision {applied})" in server.log_path.read_text()
    assert _state(old_db) == (HEAD, True)


# main-account names: the index decides, whoever asks --------------------------------------------------------


def _create_after_barrier(url: str, barrier: Any, results: Any) -> None:
    runtime = build_runtime(Settings(database_url=url, master_key=MASTER_KEY), create=False)
    try:
        barrier.wait(timeout=60)
        try:
            results.put(("made", runtime.service.accounts.create_main_account("Racing Venue").uid))
        except NameTaken as error:
            results.put(("refused", error.message))
    finally:
        runtime.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_racing_to_create_one_name_make_one_account(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    build_runtime(Settings(database_url=url, master_key=MASTER_KEY)).close()
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_create_after_barrier, args=(url, barrier, results)) for _ in range(4)]
    for process in processes:
        process.start()
    outcomes = sorted(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert [kind for kind, _ in outcomes] == ["made", "refused", "refused", "refused"]
    assert all(detail == "a main account is already named 'Racing Venue'" for _, detail in outcomes[1:])
    store = Store(url)
    with store.reading() as tx:
        assert [a.name for a in tx.list_main_accounts()] == ["Racing Venue"]
    store.close()


def test_postgresql_the_index_refuses_the_insert_that_a_lookup_let_through(pg_url: str) -> None:
    """Two transactions side by side: the second looks the name up before the first commits (and finds
    nothing), then its insert waits on the index and, once the first commits, is refused as NameTaken."""
    store = Store(pg_url)
    store.migrate()
    outcome: list[object] = []
    try:
        with store.transaction() as first:
            first.insert_account(name="Interleaved", parent_uid=None)

            def second() -> None:
                with store.transaction() as tx:
                    assert tx.main_account_named("interleaved") is None  # the first has not committed
                    try:
                        tx.insert_account(name="INTERLEAVED", parent_uid=None)
                        outcome.append("made")
                    except NameTaken as error:
                        outcome.append(error)
                    tx.insert_account(name="Interleaved 2", parent_uid=None)  # the refusal left tx usable

            thread = threading.Thread(target=second)
            thread.start()
            deadline = time.monotonic() + 30
            with store.engine.connect() as watcher:  # wait until the second insert waits on the first's row
                while not watcher.execute(sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar():
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
        thread.join(timeout=30)
        assert len(outcome) == 1 and isinstance(outcome[0], NameTaken)
        assert str(outcome[0]) == "a main account is already named 'INTERLEAVED'"
        with store.reading() as tx:
            assert [a.name for a in tx.list_main_accounts()] == ["Interleaved", "Interleaved 2"]
    finally:
        store.close()
