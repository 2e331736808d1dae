"""No API secret (or passphrase) in plaintext: not in the SQLite database or its WAL, not in the server
log, not in any response body of the run except the creation responses that show a new secret once.

The scan covers this module's own busy server and every server the Bitget tests ran earlier in the same
session (``bitget_helpers.RECORD`` keeps what they issued and saw)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import ccxt
import pytest

import bitget_helpers as h
from conftest import Server, make_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = h.track(make_server(tmp_path_factory.mktemp("secrets-scan")))
    srv.start()
    yield srv
    srv.stop()


def _workload(server: Server) -> None:
    """Every endpoint, success and refusal, with keys made every way (CLI, batch, single create)."""
    main = h.main_key(server, cli=True)
    ex = h.ccxt_main(server, main)
    entries = [h.batch_entry(ipList=["127.0.0.1"]), h.batch_entry(permList=["read"])]
    made = ex.privateUserPostV2UserBatchCreateSubaccountAndApikey(entries)["data"]
    uid = made[0]["subAccountUid"]
    passphrase = h.new_passphrase()
    key = ex.privateUserPostV2UserCreateVirtualSubaccountApikey(
        {"subAccountUid": uid, "passphrase": passphrase, "label": "scan"})["data"]
    ex.privateUserPostV2UserModifyVirtualSubaccountApikey({
        "subAccountUid": uid, "subAccountApiKey": key["subAccountApiKey"], "passphrase": passphrase,
        "label": "scan2", "ipList": ["127.0.0.1"]})
    ex.privateUserPostV2UserCreateVirtualSubaccount({"subAccountList": [h.new_name()]})
    ex.privateUserGetV2UserVirtualSubaccountList()
    ex.privateUserGetV2UserVirtualSubaccountApikeyList({"subAccountUid": uid})
    for item, entry in zip(made, entries, strict=True):
        sub = h.ccxt_client(server, item["subAccountApiKey"], item["secretKey"], entry["passphrase"])
        sub.privateSpotGetV2SpotAccountInfo()
        wrong = h.ccxt_client(server, item["subAccountApiKey"], item["secretKey"], "Wrongpass1")
        with pytest.raises(ccxt.AuthenticationError):
            wrong.privateSpotGetV2SpotAccountInfo()
    ex.privateUserPostV2UserModifyVirtualSubaccount({"subAccountUid": uid, "permList": ["read"], "status": "freeze"})
    frozen = h.ccxt_client(server, made[0]["subAccountApiKey"], made[0]["secretKey"], entries[0]["passphrase"])
    with pytest.raises(ccxt.ExchangeError):
        frozen.privateSpotGetV2SpotAccountInfo()

    raw = h.raw_main(server, main)
    try:
        # refusals that carry secrets in the request: none of them may be echoed back
        h.assert_error(raw.post("modify-virtual-subaccount-apikey", {
            "subAccountUid": uid, "subAccountApiKey": key["subAccountApiKey"], "passphrase": "Wrong12345",
            "label": "x"}), "40036", "passphrase is error")
        h.assert_error(raw.post("modify-virtual-subaccount-apikey", {
            "subAccountUid": uid, "subAccountApiKey": key["secretKey"], "passphrase": passphrase,
            "label": "x"}), "40065", "This subApikey does not exist")
        h.assert_error(raw.get("virtual-subaccount-list", sign_with=made[1]["secretKey"]), "40009",
                       "sign signature error")
        stranger = h.Raw(server, made[1]["secretKey"], made[1]["secretKey"], main.passphrase)
        h.assert_error(stranger.request("GET", "/api/v2/spot/account/info"), "40037", "Apikey does not exist")
        stranger.close()
        h.paced()
        h.assert_error(raw.post("batch-create-subaccount-and-apikey", [h.batch_entry(passphrase=main.secret)]),
                       "40070", "passphrase 8-32 characters with letters and numbers")
    finally:
        raw.close()
    h.RECORD.body("cli:audit", 0, json.dumps(server.cli("audit")).encode())


def _files(workdir: Path) -> list[Path]:
    names = ("keyplane.db", "keyplane.db-wal", "server.log")
    return [workdir / name for name in names if (workdir / name).exists()]


def test_no_api_secret_in_the_database_the_wal_the_log_or_any_response(server: Server) -> None:
    _workload(server)
    # the collection works: creation responses do show the secrets it recorded
    shown = b"".join(body for path, status, body in h.RECORD.bodies if path in h.CREATION_PATHS and status == 200)
    assert shown and sum(secret.encode() in shown for secret in h.RECORD.secrets) >= 3
    assert (server.workdir / "keyplane.db-wal").exists(), "scan the WAL while the server still writes it"

    secrets = sorted(h.RECORD.secrets)
    assert len(secrets) >= 8
    leaks: list[str] = []
    scanned_files = 0
    for workdir in sorted(h.RECORD.workdirs):
        for path in _files(workdir):
            data = path.read_bytes()
            scanned_files += 1
            leaks += [f"{path}: {secret[:6]}…" for secret in secrets if secret.encode() in data]
    scanned_bodies = 0
    for path, status, body in h.RECORD.bodies:
        if path in h.CREATION_PATHS and status == 200:
            continue  # a secret shown once, to its owner, at creation
        scanned_bodies += 1
        leaks += [f"response {path} {status}: {secret[:6]}…" for secret in secrets if secret.encode() in body]
    assert scanned_files >= 3 and scanned_bodies >= 12
    assert leaks == []
