"""whitebit-python-sdk 1.1.17, unchanged and pointed at keyplane, creates sub-accounts and keys and lists
them. It signs with integer nonces and ``nonceWindow: true``.

The SDK cannot live in .venv (it pins urllib3<2, ccxt 4.5.90 pins urllib3==2.8.0), so it has a venv of its
own, ``.venv-whitebit-sdk``, which ``scripts/test-deps`` builds (and this module builds too when it is
missing); ``tests/clients/whitebit_sdk_driver.py`` runs there and reports what the SDK got back as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clients.whitebit_http import Operator, WhitebitClient
from conftest import Server
from keyplane.store import Store
from keyplane.store.nonces import recorded_nonces

ROOT = Path(__file__).resolve().parent.parent
SDK_VENV = ROOT / ".venv-whitebit-sdk"
SDK_VERSION = "1.1.17"
DRIVER = Path(__file__).resolve().parent / "clients" / "whitebit_sdk_driver.py"


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    """The SDK venv's interpreter, building the venv the way scripts/test-deps does when it is missing."""
    python = SDK_VENV / "bin" / "python"
    stamp = SDK_VENV / f".installed-{SDK_VERSION}"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", str(SDK_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"whitebit-python-sdk=={SDK_VERSION}"], check=True
        )
        stamp.touch()
    return python


def run_sdk(sdk_python: Path, server: Server, key: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [str(sdk_python), str(DRIVER), server.base_url, key["apiKey"], key["apiSecret"]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_sdk_creates_and_lists_sub_accounts_and_keys(server: Server, sdk_python: Path) -> None:
    operator = Operator(server.database_url)
    try:
        key = operator.whitebit_main_key(operator.main_account("sdk"))
    finally:
        operator.close()
    got = run_sdk(sdk_python, server, key)
    assert got["sdkVersion"] == SDK_VERSION

    sub = got["subAccount"]
    assert sub["alias"] == "sdk" + key["apiKey"][:8] and sub["kyc"]["shareKyc"] is True
    assert [a["id"] for a in got["subAccounts"]["data"]] == [sub["id"]]

    created = got["created"]
    assert created["subAccountId"] == sub["id"] and created["type"] == 1 and created["title"] == "SDK key"
    assert created["apiSecret"] and created["apiKey"]
    assert got["createdType2"]["type"] == 2

    listed = got["listed"]
    assert listed["limit"] == 100 and listed["offset"] == 0
    assert [k["id"] for k in listed["data"]] == [got["createdType2"]["id"], created["id"]]
    assert [k["type"] for k in listed["data"]] == ["2", "1"]
    assert all(k["apiSecret"] == "" for k in listed["data"])

    assert got["edited"] == {}
    assert got["ipCreated"] == {"data": ["10.1.2.3"]} and got["ipListed"] == {"data": ["10.1.2.3"]}
    reset = got["reset"]
    assert reset["id"] == created["id"] and reset["apiSecret"] not in ("", created["apiSecret"])
    assert reset["title"] == "SDK renamed" and reset["restrictAccess"] is True
    assert len(got["listedAfter"]["data"]) == 1

    assert got["badType"]["status"] == 400
    assert got["badType"]["body"] == {"code": 0, "message": "Validation failed", "errors": {"type": ["validation.in"]}}

    # every call went through the windowed-nonce path with the SDK's integer nonces
    store = Store(server.database_url)  # the store's tables and its nonce journal, as the workers see them
    try:
        last, seen = recorded_nonces(store, key["id"])
    finally:
        store.close()
    assert (len(seen), last) == (11, None)

    # the reset secret signs: the key is refused only for its IP allowlist (code 2, checked after the
    # signature), while the old secret is an unauthorized request (code 10)
    fresh = WhitebitClient(server.base_url, created["apiKey"], reset["apiSecret"])
    assert fresh.post("/api/v4/sub-account/list").json()["code"] == 2
    stale = WhitebitClient(server.base_url, created["apiKey"], created["apiSecret"])
    assert stale.post("/api/v4/sub-account/list").json()["code"] == 10
