"""Master-key rotation on a running cluster: two ``keyplane serve`` nodes on one PostgreSQL schema and one key
file keep issuing keys over HTTP while ``keyplane master-key rotate`` runs; afterwards every secret is sealed
under the new key alone and verifies on both nodes, without a restart."""

from __future__ import annotations

import itertools
import json
import string
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from conftest import Server, make_server
from keyplane.auth.bitget import prehash, sign_hmac
from keyplane.crypto import MasterKey
from keyplane.store.store import normalize_url

pytestmark = [pytest.mark.postgres]

POLICY = json.dumps({"bitget": {"sub_accounts_per_main": 10_000,
                                "rate_limits": {"batch-create-subaccount-and-apikey": "10000/second"}}})
BATCH_PATH = "/api/v2/user/batch-create-subaccount-and-apikey"
INFO_PATH = "/api/v2/spot/account/info"


def _signed(key: dict[str, str], method: str, path: str, body: bytes = b"") -> dict[str, str]:
    timestamp = str(int(time.time() * 1000))
    signature = sign_hmac(key["secret"].encode(), prehash(timestamp, method, path, "", body))
    return {"ACCESS-KEY": key["apiKey"], "ACCESS-SIGN": signature, "ACCESS-TIMESTAMP": timestamp,
            "ACCESS-PASSPHRASE": key["passphrase"], "Content-Type": "application/json"}


def _names() -> Any:
    for letters in itertools.product(string.ascii_lowercase, repeat=4):
        yield "rotk" + "".join(letters)  # Bitget: 8 English letters


def test_rotation_while_two_nodes_issue_keys_leaves_every_secret_readable_everywhere(
    pg_url: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "master-key"
    env = {"KEYPLANE_MASTER_KEY_FILE": str(key_file), "KEYPLANE_POLICY": POLICY}
    nodes: list[Server] = []
    for n in range(2):
        node = make_server(tmp_path / f"node{n}", env)
        node.database_url = pg_url
        nodes.append(node)
    try:
        nodes[0].start()  # makes the schema and the key file; the second node then uses both
        nodes[1].start()
        uid = nodes[0].main_account()
        made = nodes[0].bitget_main_key(uid)
        main_key = {"apiKey": made["apiKey"], "secret": made["secretKey"], "passphrase": made["passphrase"]}
        old_key = MasterKey.from_text(key_file.read_text())

        issued: list[dict[str, str]] = []
        failures: list[str] = []
        stop = threading.Event()
        names = _names()
        lock = threading.Lock()

        def issue(node: Server) -> None:
            with httpx.Client(base_url=node.base_url, timeout=30) as client:
                while not stop.wait(0.3):  # paced: every key is verified on both nodes at the end (argon2id)
                    with lock:
                        name = next(names)
                    body = json.dumps([{"subAccountName": name, "passphrase": "abcd1234", "label": "r",
                                        "permList": ["read"]}]).encode()
                    answer = client.post(BATCH_PATH, content=body, headers=_signed(main_key, "POST", BATCH_PATH, body))
                    data = answer.json()
                    if data.get("code") != "00000":
                        failures.append(answer.text)
                        return
                    for entry in data["data"]:
                        issued.append({"apiKey": entry["subAccountApiKey"], "secret": entry["secretKey"],
                                       "passphrase": "abcd1234"})

        threads = [threading.Thread(target=issue, args=(node,)) for node in nodes]
        for thread in threads:
            thread.start()

        def until(count: int) -> None:
            deadline = time.monotonic() + 60
            while len(issued) < count and not failures and time.monotonic() < deadline:
                time.sleep(0.05)

        until(4)
        before = len(issued)
        rotated = nodes[0].cli("master-key", "rotate")
        after = len(issued)
        until(after + 4)
        stop.set()
        for thread in threads:
            thread.join()

        assert failures == []
        # keys were issued before, during and after the rotation
        assert before >= 4 and after > before and len(issued) >= after + 4
        assert rotated["resealed"] >= before
        assert len(key_file.read_text().split()) == 1
        new_key = MasterKey.from_text(key_file.read_text())
        engine = sa.create_engine(normalize_url(pg_url))
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, sealed_secret FROM api_keys WHERE sealed_secret IS NOT NULL")).all()
        engine.dispose()
        assert len(rows) == len(issued) + 1
        for key_id, sealed in rows:
            assert new_key.sealed_under_newest(sealed, key_id)
            assert not old_key.sealed_under_newest(sealed, key_id)
        for key in [main_key, *issued]:
            for node in nodes:
                answer = httpx.get(node.base_url + INFO_PATH, headers=_signed(key, "GET", INFO_PATH)).json()
                assert answer["code"] == "00000", (node.base_url, answer)
    finally:
        for node in nodes:
            node.stop()
