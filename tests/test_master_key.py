"""Rotating the master key re-seals every secret, and running servers keep verifying throughout."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import KEYPLANE, Server
from keyplane.auth.bitget import prehash, sign_hmac
from keyplane.crypto import MasterKey


def _account_info(server: Server, key: dict[str, str]) -> httpx.Response:
    timestamp = str(int(time.time() * 1000))
    path = "/api/v2/spot/account/info"
    signature = sign_hmac(key["secretKey"].encode(), prehash(timestamp, "GET", path, "", b""))
    headers = {"ACCESS-KEY": key["apiKey"], "ACCESS-SIGN": signature, "ACCESS-TIMESTAMP": timestamp,
               "ACCESS-PASSPHRASE": key["passphrase"]}
    return httpx.get(server.base_url + path, headers=headers)


def test_rotation_reseals_everything_and_running_servers_keep_verifying(server: Server) -> None:
    uid = server.main_account("rotating")
    used = server.bitget_main_key(uid)  # cached by the server before the rotation
    unused = server.bitget_main_key(uid)  # first seen by the server after it
    assert _account_info(server, used).json()["code"] == "00000"
    key_file = server.workdir / "keyplane.db.master-key"
    old_key = MasterKey.from_text(key_file.read_text())

    rotated = server.cli("master-key", "rotate")

    assert rotated["resealed"] >= 2
    assert len(key_file.read_text().split()) == 1
    assert MasterKey.from_text(key_file.read_text()) is not None
    assert _account_info(server, used).json()["code"] == "00000"
    assert _account_info(server, unused).json()["code"] == "00000"
    server.restart()
    assert _account_info(server, used).json()["code"] == "00000"
    assert _account_info(server, unused).json()["code"] == "00000"
    # the old key opens nothing any more
    import sqlalchemy as sa

    engine = sa.create_engine(server.database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, sealed_secret FROM api_keys")).all()
    engine.dispose()
    for key_id, sealed in rows:
        try:
            old_key.unseal(sealed, key_id)
        except Exception:
            continue
        raise AssertionError("a secret is still sealed under the old master key")
    events = server.cli("audit")
    assert any(event["action"] == "masterkey.rotate" for event in events)


def _cli(workdir: Path, *args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    env.update(env_extra)
    return subprocess.run([*KEYPLANE, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.postgres
def test_a_shared_database_needs_an_explicit_master_key(pg_url: str, tmp_path: Path) -> None:
    env = {"KEYPLANE_DATABASE_URL": pg_url}
    for args in (("accounts", "create", "--name", "acme"), ("serve", "--port", "1")):
        refused = _cli(tmp_path, *args, env_extra=env)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert refused.stderr.strip().count("\n") == 0 and "KEYPLANE_MASTER_KEY_FILE" in refused.stderr
    assert list(tmp_path.iterdir()) == []  # no key file made in the working directory
    made = _cli(tmp_path, "init", env_extra={**env, "KEYPLANE_MASTER_KEY_FILE": str(tmp_path / "mk")})
    assert made.returncode == 0, made.stderr
    made = _cli(tmp_path, "accounts", "create", "--name", "acme", "--json",
                env_extra={**env, "KEYPLANE_MASTER_KEY_FILE": str(tmp_path / "mk")})
    assert made.returncode == 0, made.stderr
    assert _cli(tmp_path, "accounts", "create", "--name", "b", env_extra={**env, "KEYPLANE_MASTER_KEY": "ab" * 32})


def test_rotation_with_the_environment_needs_a_ring_and_reseals_under_its_first_key(tmp_path: Path) -> None:
    old, new = "aa" * 32, "bb" * 32
    db = f"sqlite:///{tmp_path / 'k.db'}"
    env = {"KEYPLANE_DATABASE_URL": db, "KEYPLANE_MASTER_KEY": old}
    assert _cli(tmp_path, "init", env_extra=env).returncode == 0
    uid = json.loads(_cli(tmp_path, "accounts", "create", "--name", "a", "--json", env_extra=env).stdout)["uid"]
    key = json.loads(
        _cli(tmp_path, "keys", "create", "--account", uid, "--dialect", "bitget", "--json", env_extra=env).stdout
    )
    for refused in (
        _cli(tmp_path, "master-key", "rotate", env_extra=env),
        _cli(tmp_path, "master-key", "rotate", "--new-key", new, env_extra={**env, "KEYPLANE_MASTER_KEY": new}),
    ):
        assert refused.returncode == 2 and "NEW,OLD" in refused.stderr and "Traceback" not in refused.stderr
        assert refused.stderr.strip().count("\n") == 0
    rotated = _cli(tmp_path, "master-key", "rotate", "--json", env_extra={**env, "KEYPLANE_MASTER_KEY": f"{new},{old}"})
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["resealed"] == 1
    import sqlalchemy as sa

    engine = sa.create_engine(db)
    with engine.connect() as conn:
        key_id, sealed = conn.execute(sa.text("SELECT id, sealed_secret FROM api_keys")).one()
    engine.dispose()
    assert MasterKey.from_text(new).unseal(sealed, key_id) == key["secretKey"].encode()
