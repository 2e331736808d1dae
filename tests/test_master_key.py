"""Rotating the master key re-seals every secret, and running servers keep verifying throughout."""

from __future__ import annotations

import time

import httpx

from conftest import Server
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
