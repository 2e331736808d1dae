"""The operator's command line: main accounts, their keys, the audit log, the master key file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import ccxt
import pytest

from conftest import KEYPLANE, Server


def _run(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    return subprocess.run([*KEYPLANE, *args], cwd=workdir, env=env, capture_output=True, text=True, check=check)


def test_init_makes_an_owner_only_master_key_and_says_where(tmp_path: Path) -> None:
    result = _run(tmp_path, "init", "--json")
    key_file = tmp_path / "keyplane.db.master-key"
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert str(key_file.name) in result.stderr
    assert json.loads(result.stdout)["masterKey"] == str(key_file)
    first = _run(tmp_path, "accounts", "create", "--name", "acme", "--json")
    assert json.loads(first.stdout)["uid"].isdigit()
    second = _run(tmp_path, "accounts", "create", "--name", "other", "--json")
    assert "created a new master key" not in first.stderr + second.stderr


def test_keys_create_prints_the_secret_once_as_json(tmp_path: Path) -> None:
    _run(tmp_path, "init")
    uid = json.loads(_run(tmp_path, "accounts", "create", "--name", "acme", "--json").stdout)["uid"]
    bitget = json.loads(
        _run(tmp_path, "keys", "create", "--account", uid, "--dialect", "bitget", "--ip", "10.0.0.0/8",
             "--ip", "2001:db8::1", "--perm", "read", "--label", "ops", "--json").stdout
    )
    assert set(bitget) >= {"apiKey", "secretKey", "passphrase"}
    assert bitget["ipList"] == ["10.0.0.0/8", "2001:db8::1"]
    assert bitget["permissions"] == ["read"]
    given = json.loads(
        _run(tmp_path, "keys", "create", "--account", uid, "--dialect", "bitget", "--passphrase", "abcd1234",
             "--json").stdout
    )
    assert given["passphrase"] == "abcd1234"
    whitebit = json.loads(_run(tmp_path, "keys", "create", "--account", uid, "--dialect", "whitebit", "--json").stdout)
    assert set(whitebit) >= {"apiKey", "apiSecret"}
    database = (tmp_path / "keyplane.db").read_bytes()
    for secret in (bitget["secretKey"], given["secretKey"], whitebit["apiSecret"], bitget["passphrase"]):
        assert secret.encode() not in database


def test_keys_create_refuses_a_bad_ip_or_unknown_account_without_a_traceback(tmp_path: Path) -> None:
    _run(tmp_path, "init")
    uid = json.loads(_run(tmp_path, "accounts", "create", "--name", "acme", "--json").stdout)["uid"]
    bad_ip = _run(tmp_path, "keys", "create", "--account", uid, "--dialect", "bitget", "--ip", "300.1.1.1",
                  check=False)
    assert bad_ip.returncode == 2 and "Traceback" not in bad_ip.stderr
    unknown = _run(tmp_path, "keys", "create", "--account", "42", "--dialect", "bitget", check=False)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr


def test_audit_lists_every_mutation_with_caller_and_ip_and_never_a_secret(server: Server) -> None:
    uid = server.main_account("audited")
    key = server.bitget_main_key(uid)
    exchange = ccxt.bitget({"apiKey": key["apiKey"], "secret": key["secretKey"], "password": key["passphrase"]})
    for group in exchange.urls["api"]:
        exchange.urls["api"][group] = server.base_url
    created = exchange.privateUserPostV2UserBatchCreateSubaccountAndApikey(
        [{"subAccountName": "auditedx", "passphrase": "abcd1234", "label": "a", "ipList": ["127.0.0.1"]}]
    )["data"][0]
    exchange.privateUserPostV2UserModifyVirtualSubaccount(
        {"subAccountUid": created["subAccountUid"], "permList": ["read"], "status": "freeze"}
    )
    events = server.cli("audit", "--account", uid)
    actions = [event["action"] for event in events]
    assert actions[:4] == ["subaccount.modify", "apikey.create", "subaccount.create", "apikey.create"]
    assert actions[-1] == "account.create"
    http_events = [e for e in events if e["action"] in ("subaccount.modify", "subaccount.create")]
    for event in http_events:
        assert event["ip"] == "127.0.0.1"
        assert event["actorKey"] == key["apiKey"]
        assert event["actorUid"] == uid
    text = json.dumps(events)
    for secret in (key["secretKey"], key["passphrase"], created["secretKey"], "abcd1234"):
        assert secret not in text


@pytest.mark.parametrize("command", [["--help"], ["accounts", "--help"], ["keys", "create", "--help"]])
def test_help_is_available(tmp_path: Path, command: list[str]) -> None:
    assert "Usage" in _run(tmp_path, *command).stdout


def test_a_key_revoked_on_the_command_line_stops_on_the_running_server(server: Server) -> None:
    import time

    import httpx

    from keyplane.auth.bitget import prehash, sign_hmac

    uid = server.main_account("revoking")
    key = server.bitget_main_key(uid)

    def account_info() -> dict[str, object]:
        timestamp = str(int(time.time() * 1000))
        path = "/api/v2/spot/account/info"
        signature = sign_hmac(key["secretKey"].encode(), prehash(timestamp, "GET", path, "", b""))
        headers = {"ACCESS-KEY": key["apiKey"], "ACCESS-SIGN": signature, "ACCESS-TIMESTAMP": timestamp,
                   "ACCESS-PASSPHRASE": key["passphrase"]}
        return dict(httpx.get(server.base_url + path, headers=headers).json())

    assert account_info()["code"] == "00000"  # now in the server's cache
    listed = server.cli("keys", "list", "--account", uid)
    assert [k["apiKey"] for k in listed] == [key["apiKey"]]
    assert "secretKey" not in json.dumps(listed) and key["secretKey"] not in json.dumps(listed)
    assert server.cli("keys", "revoke", "--key", key["apiKey"])["revoked"] == key["apiKey"]
    deadline = time.monotonic() + 2
    while account_info()["code"] == "00000" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert account_info()["code"] == "40037"
    assert server.cli("audit", "--account", uid)[0]["action"] == "apikey.revoke"


BAD_POLICIES = ['{"bitget": {"nope": 1}}', "not json", "[1]", '{"bitget": {"rate_limits": {"x": "lots"}}}']


@pytest.mark.parametrize("policy", BAD_POLICIES)
def test_a_bad_policy_is_one_clear_line_not_a_traceback(tmp_path: Path, policy: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")} | {"KEYPLANE_POLICY": policy}
    for command in (["accounts", "create", "--name", "x"], ["serve", "--port", "1"]):
        result = subprocess.run([*KEYPLANE, *command], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr and "error:" in result.stderr


@pytest.mark.parametrize("token", ["short", "x" * 15, "sixteen chars ok\x07"])
def test_a_weak_verify_token_is_one_clear_line_not_a_traceback(tmp_path: Path, token: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")} | {"KEYPLANE_VERIFY_TOKEN": token}
    result = subprocess.run([*KEYPLANE, "serve", "--port", "1"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "KEYPLANE_VERIFY_TOKEN" in result.stderr
