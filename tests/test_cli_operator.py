"""The CLI as an operator meets it (issue 10, items 1-3): secrets whole at any width and when piped, no silent
new database or master key, a master key that is not the database's refused by fingerprint, a taken port
refused, and one line with a documented exit code for every operator mistake, never a traceback."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from clients.whitebit_http import WhitebitClient
from conftest import KEYPLANE, Server, free_port
from keyplane.auth.bitget import prehash, sign_hmac
from keyplane.cli import EXIT_CODES_HELP, ExitCode
from keyplane.crypto import MasterKey

OTHER_KEY = "cd" * 32
NEW_KEY = "ef" * 32


def _env(workdir_env: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_") and k not in ("COLUMNS", "LINES")}
    return {**env, **(workdir_env or {}), **extra}


def _run(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``keyplane ARGS`` with stdout and stderr piped (no terminal)."""
    return subprocess.run(
        [*KEYPLANE, *args], cwd=workdir, env=env or _env(), capture_output=True, text=True, timeout=120
    )


def _run_on_terminal(workdir: Path, *args: str, columns: int, env: dict[str, str]) -> str:
    """``keyplane ARGS`` with stdout on a pseudo-terminal ``columns`` wide; what it printed there."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*KEYPLANE, *args], cwd=workdir, stdout=follower, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env={**env, "COLUMNS": str(columns), "LINES": "50", "TERM": "xterm"},
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the follower side closed: the process is done
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif process.poll() is not None:
            break
    os.close(leader)
    assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", b"".join(chunks).decode()).replace("\r\n", "\n")


def _fields(text: str) -> dict[str, str]:
    """The ``name: value`` lines of a command's plain output."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([A-Za-z]+):\s+(\S.*)", line)
        if match:
            found.setdefault(match.group(1), match.group(2))
    return found


def _one_line_error(result: subprocess.CompletedProcess[str], code: ExitCode, *words: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _bitget_ok(server: Server, api_key: str, secret: str, passphrase: str) -> bool:
    timestamp = str(int(time.time() * 1000))
    path = "/api/v2/spot/account/info"
    signature = sign_hmac(secret.encode(), prehash(timestamp, "GET", path, "", b""))
    headers = {"ACCESS-KEY": api_key, "ACCESS-SIGN": signature, "ACCESS-TIMESTAMP": timestamp,
               "ACCESS-PASSPHRASE": passphrase}
    return bool(httpx.get(server.base_url + path, headers=headers).json()["code"] == "00000")


# 1. Secrets are never lost to formatting ---------------------------------------------------------------------


@pytest.mark.parametrize("columns", ["80", "40", None])
def test_keys_create_prints_every_secret_whole_and_they_sign(server: Server, columns: str | None) -> None:
    uid = server.main_account(f"whole{columns}")
    env = _env(server.env) | ({"COLUMNS": columns} if columns else {})
    db = ("--database", server.database_url)
    bitget = _run(server.workdir, "keys", "create", "--account", uid, "--dialect", "bitget", "--ip", "127.0.0.1",
                  "--perm", "read", "--perm", "spot_trade", *db, env=env)
    assert bitget.returncode == 0, bitget.stderr
    fields = _fields(bitget.stdout)
    assert re.fullmatch(r"bg_[0-9a-f]{32}", fields["apiKey"])
    assert re.fullmatch(r"[0-9a-f]{64}", fields["secretKey"])
    assert re.fullmatch(r"[0-9a-f]{16}", fields["passphrase"])
    assert fields["permissions"] == "read, spot_trade"
    assert "[" not in bitget.stdout and "…" not in bitget.stdout
    assert _bitget_ok(server, fields["apiKey"], fields["secretKey"], fields["passphrase"])

    whitebit = _run(server.workdir, "keys", "create", "--account", uid, "--dialect", "whitebit", "--ip", "127.0.0.1",
                    *db, env=env)
    assert whitebit.returncode == 0, whitebit.stderr
    fields = _fields(whitebit.stdout)
    assert re.fullmatch(r"[0-9a-f]{32}", fields["apiKey"]) and re.fullmatch(r"[0-9a-f]{32}", fields["apiSecret"])
    client = WhitebitClient(server.base_url, fields["apiKey"], fields["apiSecret"])
    response = client.post("/api/v4/sub-account/list", {})
    assert response.status_code == 200, response.text


def test_json_stays_the_machine_form_with_the_same_fields(server: Server) -> None:
    uid = server.main_account("jsonform")
    created = server.bitget_main_key(uid, "--perm", "read")
    assert set(created) >= {"apiKey", "secretKey", "passphrase", "id", "permissions", "ipList"}
    assert created["permissions"] == ["read"]
    assert _bitget_ok(server, created["apiKey"], created["secretKey"], created["passphrase"])


@pytest.mark.parametrize("columns", [80, 40])
def test_tables_never_cut_an_identifier_on_a_terminal_or_piped(server: Server, columns: int) -> None:
    uid = server.main_account(f"tables{columns}")
    keys = [server.bitget_main_key(uid, "--perm", "read", "--perm", "spot_trade", "--label", "a long label " * 3)
            for _ in range(2)]
    keys.append(server.whitebit_main_key(uid, "--ip", "2001:db8:ffff:ffff:ffff:ffff:ffff:fff1"))
    env = _env(server.env)
    db = ("--database", server.database_url)
    audit = server.cli("audit", "--account", uid)
    for output in (
        _run_on_terminal(server.workdir, "keys", "list", "--account", uid, *db, columns=columns, env=env),
        _run(server.workdir, "keys", "list", "--account", uid, *db, env=env | {"COLUMNS": str(columns)}).stdout,
    ):
        for key in keys:
            assert key["apiKey"] in output, output
        assert "read, spot_trade" in output and "['read'" not in output
        assert "…" not in output
    for output in (
        _run_on_terminal(server.workdir, "audit", "--account", uid, *db, columns=columns, env=env),
        _run(server.workdir, "audit", "--account", uid, *db, env=env | {"COLUMNS": str(columns)}).stdout,
    ):
        for event in audit:
            assert event["at"] in output and event["target"] in output, output
        assert "…" not in output


def test_a_wide_terminal_gets_a_table(server: Server) -> None:
    uid = server.main_account("widetable")
    key = server.bitget_main_key(uid)
    output = _run_on_terminal(server.workdir, "keys", "list", "--account", uid, "--database", server.database_url,
                              columns=200, env=_env(server.env))
    assert "┃" in output or "│" in output, output
    assert key["apiKey"] in output


# 2. No silent new state ----------------------------------------------------------------------------------------


COMMANDS_ON_A_DATABASE = [
    ("accounts", "create", "--name", "acme"),
    ("keys", "create", "--account", "1000000001", "--dialect", "bitget"),
    ("keys", "list", "--account", "1000000001"),
    ("keys", "revoke", "--key", "bg_0"),
    ("audit",),
    ("master-key", "rotate"),
    ("accounts", "list"),
    ("accounts", "freeze", "--account", "1000000001"),
    ("keys", "disable", "--key", "bg_0"),
]


@pytest.mark.parametrize("command", COMMANDS_ON_A_DATABASE, ids=lambda c: "-".join(c[:2]))
def test_commands_refuse_a_database_that_does_not_exist_and_make_nothing(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    line = _one_line_error(_run(tmp_path, *command), ExitCode.NO_DATABASE, str(tmp_path / "keyplane.db"), "init")
    assert "SQLite file missing" in line
    elsewhere = tmp_path / "sub" / "x.db"
    _one_line_error(_run(tmp_path, *command, "--database", f"sqlite:///{elsewhere}"), ExitCode.NO_DATABASE,
                    str(elsewhere))
    assert list(tmp_path.iterdir()) == []  # no database, no master key, no directory


def test_an_empty_file_is_not_a_database_either(tmp_path: Path) -> None:
    (tmp_path / "keyplane.db").touch()
    _one_line_error(_run(tmp_path, "audit"), ExitCode.NO_DATABASE, "no keyplane tables", "init")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keyplane.db"]


@pytest.mark.postgres
def test_a_postgresql_database_without_keyplane_tables_is_refused_and_init_makes_them(
    pg_url: str, tmp_path: Path
) -> None:
    env = _env(KEYPLANE_DATABASE_URL=pg_url, KEYPLANE_MASTER_KEY=OTHER_KEY)
    line = _one_line_error(_run(tmp_path, "audit", env=env), ExitCode.NO_DATABASE, "no keyplane tables", "init")
    assert "password" not in line
    made = _run(tmp_path, "init", "--json", env=env)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["masterKey"] == "KEYPLANE_MASTER_KEY"
    assert _run(tmp_path, "audit", "--json", env=env).stdout.strip() == "[]"
    _one_line_error(_run(tmp_path, "audit", env=env | {"KEYPLANE_MASTER_KEY": NEW_KEY}), ExitCode.WRONG_MASTER_KEY)


def test_init_makes_the_database_and_key_says_where_and_never_twice(tmp_path: Path) -> None:
    made = _run(tmp_path, "init")
    assert made.returncode == 0, made.stderr
    fields = _fields(made.stdout)
    assert fields["database"] == str(tmp_path / "keyplane.db")
    assert fields["masterKey"] == str(tmp_path / "keyplane.db.master-key")
    key = MasterKey.from_text((tmp_path / "keyplane.db.master-key").read_text())
    assert fields["masterKeyFingerprint"] == key.fingerprints[0]
    assert "created a new master key" in made.stderr
    _one_line_error(_run(tmp_path, "init"), ExitCode.REFUSED, "already", str(tmp_path / "keyplane.db"))
    assert _run(tmp_path, "accounts", "create", "--name", "acme").returncode == 0


def test_serve_makes_its_database_on_first_start_and_says_so(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*KEYPLANE, "serve", "--port", str(port)], cwd=tmp_path, env=_env(),
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        text = log.read_text()
        assert f"created a new database at {tmp_path / 'keyplane.db'}" in text
        assert "created a new master key" in text
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert (tmp_path / "keyplane.db").exists() and (tmp_path / "keyplane.db.master-key").exists()


@pytest.fixture
def made(tmp_path: Path) -> Path:
    """A database with a main account (1000000001) and a Bitget key, made by ``init`` (its key file beside)."""
    assert _run(tmp_path, "init").returncode == 0
    uid = json.loads(_run(tmp_path, "accounts", "create", "--name", "acme", "--json").stdout)["uid"]
    assert _run(tmp_path, "keys", "create", "--account", uid, "--dialect", "bitget").returncode == 0
    return tmp_path


@pytest.mark.parametrize("command", [("keys", "create", "--account", "1000000001", "--dialect", "bitget"),
                                     ("accounts", "create", "--name", "b"), ("serve", "--port", "0")])
def test_another_master_key_is_refused_naming_both_fingerprints_never_the_key(
    made: Path, command: tuple[str, ...]
) -> None:
    mine = MasterKey.from_text((made / "keyplane.db.master-key").read_text()).fingerprints[0]
    other = MasterKey.from_text(OTHER_KEY).fingerprints[0]
    before = _run(made, "audit", "--json").stdout
    line = _one_line_error(_run(made, *command, env=_env(KEYPLANE_MASTER_KEY=OTHER_KEY)), ExitCode.WRONG_MASTER_KEY,
                           mine, other)
    assert OTHER_KEY not in line and (made / "keyplane.db.master-key").read_text().strip() not in line
    assert _run(made, "audit", "--json").stdout == before  # nothing issued


def test_a_restored_database_without_its_key_file_gets_no_new_key(made: Path) -> None:
    (made / "keyplane.db.master-key").unlink()
    for command in (("audit",), ("serve", "--port", "0"), ("init",)):
        _one_line_error(_run(made, *command), ExitCode.REFUSED, "master key file", "does not exist")
        assert not (made / "keyplane.db.master-key").exists()


def test_a_database_from_before_the_fingerprint_is_checked_by_its_secrets(made: Path) -> None:
    with sqlite3.connect(made / "keyplane.db") as conn:
        conn.execute("DELETE FROM store_settings")
    _one_line_error(_run(made, "audit", env=_env(KEYPLANE_MASTER_KEY=OTHER_KEY)), ExitCode.WRONG_MASTER_KEY,
                    "opens none")
    assert _run(made, "audit").returncode == 0  # the right key records its fingerprint again
    with sqlite3.connect(made / "keyplane.db") as conn:
        recorded = conn.execute("SELECT value FROM store_settings").fetchone()[0]
    assert recorded == MasterKey.from_text((made / "keyplane.db.master-key").read_text()).fingerprints[0]


def test_after_a_rotation_the_database_records_the_new_key(tmp_path: Path) -> None:
    old = _env(KEYPLANE_MASTER_KEY=OTHER_KEY)
    assert _run(tmp_path, "init", env=old).returncode == 0
    uid = json.loads(_run(tmp_path, "accounts", "create", "--name", "a", "--json", env=old).stdout)["uid"]
    assert _run(tmp_path, "keys", "create", "--account", uid, "--dialect", "bitget", env=old).returncode == 0
    ring = _env(KEYPLANE_MASTER_KEY=f"{NEW_KEY},{OTHER_KEY}")
    assert _run(tmp_path, "audit", env=ring).returncode == 0  # a ring that holds the recorded key passes
    rotated = _run(tmp_path, "master-key", "rotate", "--json", env=ring)
    assert rotated.returncode == 0, rotated.stderr
    new_fingerprint = MasterKey.from_text(NEW_KEY).fingerprints[0]
    assert json.loads(rotated.stdout)["masterKeyFingerprint"] == new_fingerprint
    assert _run(tmp_path, "audit", env=ring).returncode == 0
    assert _run(tmp_path, "audit", env=_env(KEYPLANE_MASTER_KEY=NEW_KEY)).returncode == 0
    _one_line_error(_run(tmp_path, "audit", env=old), ExitCode.WRONG_MASTER_KEY, new_fingerprint)


def test_serve_refuses_a_port_that_is_taken_and_does_not_share_it(server: Server) -> None:
    port = int(server.base_url.rsplit(":", 1)[1])
    _one_line_error(_run(server.workdir, "serve", "--port", str(port), "--database", server.database_url,
                         env=_env(server.env)), ExitCode.CANNOT_LISTEN, f"127.0.0.1:{port}", "in use")
    # the running server's socket was bound without SO_REUSEPORT: nobody can share its port
    with socket.socket() as intruder:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with pytest.raises(OSError):
            intruder.bind(("127.0.0.1", port))
    assert httpx.get(server.base_url + "/health").status_code == 200


# 3. One clear line for every operator mistake --------------------------------------------------------------------


def test_version_and_the_exit_code_table_in_help(tmp_path: Path) -> None:
    version = _run(tmp_path, "--version")
    assert version.returncode == 0 and re.fullmatch(r"keyplane \S+\n", version.stdout)
    text = " ".join(_run(tmp_path, "--help", env=_env(COLUMNS="200")).stdout.split())
    assert "Exit codes: 0 done" in text and "6 serve cannot listen" in text
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    for code in ExitCode:
        assert f"| {int(code)} |" in readme
    assert EXIT_CODES_HELP.startswith("Exit codes")


BAD_URLS = ["nonsense", "mysql://root@127.0.0.1/x", "postgresql://u:hunter2@127.0.0.1", "sqlite//x.db"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_database_url_is_one_line(tmp_path: Path, url: str) -> None:
    for command in (("audit",), ("init",), ("serve", "--port", "0")):
        line = _one_line_error(_run(tmp_path, *command, "--database", url), ExitCode.REFUSED, "database URL")
        assert "hunter2" not in line
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql://keyplane@127.0.0.1:{free_port()}/keyplane"
    env = _env(KEYPLANE_MASTER_KEY=OTHER_KEY)
    for command in (("audit",), ("init",), ("accounts", "create", "--name", "a")):
        _one_line_error(_run(tmp_path, *command, "--database", url, env=env), ExitCode.UNAVAILABLE, "unavailable")


def test_missing_or_unreadable_files_are_one_line(made: Path) -> None:
    create = ("keys", "create", "--account", "1000000001", "--dialect", "bitget", "--rsa-public-key")
    _one_line_error(_run(made, *create, str(made / "nope.pem")), ExitCode.REFUSED, "--rsa-public-key",
                    "No such file")
    _one_line_error(_run(made, *create, str(made)), ExitCode.REFUSED, "--rsa-public-key", "directory")
    (made / "binary.pem").write_bytes(b"\xff\xfe\x00garbage")
    _one_line_error(_run(made, *create, str(made / "binary.pem")), ExitCode.REFUSED, "--rsa-public-key")
    (made / "bad.pem").write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    _one_line_error(_run(made, *create, str(made / "bad.pem")), ExitCode.REFUSED, "RSA")
    for setting in ("KEYPLANE_POLICY_FILE", "KEYPLANE_ENDPOINTS_FILE", "KEYPLANE_MASTER_KEY_FILE"):
        for command in (("audit",), ("serve", "--port", "0")):
            _one_line_error(_run(made, *command, env=_env(**{setting: str(made / "missing.json")})),
                            ExitCode.REFUSED, str(made / "missing.json"))
        _one_line_error(_run(made, "audit", env=_env(**{setting: str(made)})), ExitCode.REFUSED, str(made))


BAD_SETTINGS = [
    ("KEYPLANE_POLICY", "{not json"),
    ("KEYPLANE_POLICY", "[1]"),
    ("KEYPLANE_ENDPOINTS", "{not json"),
    ("KEYPLANE_ENDPOINTS", "[1]"),
    ("KEYPLANE_ENDPOINTS", '{"rules": [7]}'),
    ("KEYPLANE_MASTER_KEY", "zz"),
    ("KEYPLANE_MASTER_KEY", "ab" * 31),
]


@pytest.mark.parametrize(("setting", "value"), BAD_SETTINGS)
def test_bad_json_or_key_material_in_a_setting_is_one_line(made: Path, setting: str, value: str) -> None:
    for command in (("audit",), ("serve", "--port", "0")):
        _one_line_error(_run(made, *command, env=_env(**{setting: value})), ExitCode.REFUSED, setting)


@pytest.mark.parametrize("content", [b"zz\n", b"", b"ab" * 33 + b"\n", b"\xff\xfe" * 32])
def test_bad_key_material_in_the_key_file_is_one_line(made: Path, content: bytes) -> None:
    key_file = made / "keyplane.db.master-key"
    key_file.write_bytes(content)
    _one_line_error(_run(made, "audit"), ExitCode.REFUSED, str(key_file))


def test_a_running_server_whose_key_file_is_swapped_for_another_key_issues_no_key(tmp_path: Path) -> None:
    from bitget_helpers import Raw
    from conftest import make_server
    from keyplane import crypto

    server = make_server(tmp_path / "swapped")
    server.start()
    try:
        uid = server.main_account("swapped")
        made = server.bitget_main_key(uid)
        raw = Raw(server, made["apiKey"], made["secretKey"], made["passphrase"])
        body = [{"subAccountName": "swappedx", "passphrase": "abcd1234", "label": "a", "ipList": ["127.0.0.1"]}]
        assert raw.get("virtual-subaccount-list").json()["code"] == "00000"  # the caller's key is now cached
        key_file = server.workdir / "keyplane.db.master-key"
        recorded = MasterKey.from_text(key_file.read_text()).fingerprints[0]
        crypto.write_key_file(key_file, OTHER_KEY + "\n")  # not a rotation: someone put another key there
        refused = raw.post("batch-create-subaccount-and-apikey", body)
        assert refused.status_code == 503 and refused.json()["code"] == "40015", refused.text
        with sqlite3.connect(server.workdir / "keyplane.db") as conn:
            assert conn.execute("SELECT count(*) FROM accounts WHERE parent_uid = ?", (int(uid),)).fetchone() == (0,)
        line = _one_line_error(
            _run(server.workdir, "keys", "create", "--account", uid, "--dialect", "bitget", "--database",
                 server.database_url, env=_env(server.env)),
            ExitCode.WRONG_MASTER_KEY, recorded, MasterKey.from_text(OTHER_KEY).fingerprints[0])
        assert OTHER_KEY not in line
        raw.close()
    finally:
        server.stop()
