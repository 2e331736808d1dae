"""Secrets stay out of sight (issue 8, item 8, its repr part): no secret, passphrase or signature in any
``repr``, log line or traceback, even when something fails with them at hand.

Reprs are checked directly; then failures are provoked with secrets in the request and in the failing
frames' locals (a use-case that raises, a store that fails under the verifier), and the log records and
formatted tracebacks are scanned. The server logs of the whole run are scanned by
``tests/test_secrets_scan.py``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import bitget_helpers as h
from keyplane.app import create_app
from keyplane.auth.request import SignedRequest
from keyplane.config import Settings
from keyplane.domain.model import Scheme
from keyplane.runtime import Runtime, build_runtime
from keyplane.services import IssuedKey, NewKeySpec, NewSubAccountWithKey

MASTER_KEY = "34" * 32
TOKEN = "secrets-test-verify-token-0123456789"
SUB_PASSPHRASE = "Subpassphrase77"


@pytest.fixture()
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = build_runtime(Settings(database_url=f"sqlite:///{tmp_path / 'keyplane.db'}", master_key=MASTER_KEY,
                                verify_token=TOKEN))
    yield rt
    rt.close()


def _main(runtime: Runtime) -> tuple[IssuedKey, list[str]]:
    service = runtime.service
    uid = service.accounts.create_main_account("secrets").uid
    issued = service.keys.issue_main_key(uid, Scheme.BITGET, permissions=["read", "spot_trade"], ip_list=["127.0.0.1"])
    assert issued.secret is not None and issued.passphrase is not None
    return issued, [issued.secret, issued.passphrase]


def _signed(issued: IssuedKey, method: str, path: str, body: bytes) -> dict[str, str]:
    assert issued.secret is not None and issued.passphrase is not None
    ts = h.now_ms()
    return {"ACCESS-KEY": issued.key.api_key, "ACCESS-SIGN": h.sign(issued.secret, ts, method, path, "", body),
            "ACCESS-TIMESTAMP": ts, "ACCESS-PASSPHRASE": issued.passphrase, "Content-Type": "application/json"}


def _leaks(text: str, secrets: list[str]) -> list[str]:
    return [secret[:4] + "…" for secret in secrets if secret and secret in text]


def test_no_repr_shows_a_secret_or_passphrase(runtime: Runtime) -> None:
    issued, secrets = _main(runtime)
    spec = NewKeySpec(label="l", passphrase=SUB_PASSPHRASE)
    headers = _signed(issued, "GET", "/api/v2/spot/account/info", b"")
    request = SignedRequest("POST", "/p", "a=1", {k.lower(): v for k, v in headers.items()},
                            b'{"passphrase":"' + SUB_PASSPHRASE.encode() + b'"}', "127.0.0.1")
    with runtime.store.reading() as tx:
        loaded = tx.load_key_for_verification(issued.key.api_key)
    assert loaded is not None
    credentials = loaded[1]
    runtime.verifier.verify(SignedRequest("GET", "/api/v2/spot/account/info", "",
                                          {k.lower(): v for k, v in headers.items()}, b"", "127.0.0.1"))
    cached = runtime.verifier.cache.peek(issued.key.api_key)
    assert cached is not None and cached.passphrase_digest is not None
    shown = "\n".join(repr(thing) for thing in (
        issued, spec, NewSubAccountWithKey(name="n", key=spec), request, credentials, cached,
        Settings(master_key=MASTER_KEY, verify_token=TOKEN),
    ))
    signature = headers["ACCESS-SIGN"]
    sealed = credentials.sealed_secret
    assert sealed is not None and credentials.passphrase_hash is not None
    assert _leaks(shown, [*secrets, SUB_PASSPHRASE, signature, MASTER_KEY, TOKEN, credentials.passphrase_hash,
                          repr(sealed)[2:40], cached.passphrase_digest.hex()]) == []
    # what the reprs still say: enough to debug with
    assert issued.key.api_key in repr(issued) and "'/p'" in repr(request) and "access-key" in repr(request)


def test_a_failing_use_case_logs_no_secret_and_answers_the_dialects_500(
    runtime: Runtime, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a use-case, with the caller's passphrase and the new key's in the request and in the
    failing frames: the answer is Bitget's own 500 envelope and the logged traceback carries no secret."""
    issued, secrets = _main(runtime)

    def broken(actor: Any, scheme: Scheme, spec: NewKeySpec, **kwargs: Any) -> Any:
        passphrase = spec.passphrase  # a secret in the failing frame's locals
        raise RuntimeError(f"a bug while making a key for {spec!r}" if passphrase else "a bug")

    monkeypatch.setattr(runtime.service.keys, "create_sub_key", broken)
    app = create_app(Settings(database_url="sqlite://", master_key=MASTER_KEY, verify_token=TOKEN), runtime)
    path = "/api/v2/user/create-virtual-subaccount-apikey"
    body = ('{"subAccountUid":"1000000002","passphrase":"' + SUB_PASSPHRASE + '","label":"x"}').encode()

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://keyplane") as client:
            return await client.post(path, content=body, headers=_signed(issued, "POST", path, body))

    with caplog.at_level(logging.DEBUG):
        response = asyncio.run(call())
    assert response.status_code == 500
    assert response.json()["code"] == "40015" and response.json()["msg"] == "System is abnormal, please try again later"
    errors = [record for record in caplog.records if record.exc_info]
    assert errors, caplog.text
    logged = caplog.text + "".join(traceback.format_exception(*errors[0].exc_info))  # type: ignore[misc]
    assert "RuntimeError" in logged
    assert _leaks(logged + response.text, [*secrets, SUB_PASSPHRASE]) == []


def test_a_store_failure_under_the_verifier_logs_no_secret(
    runtime: Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    issued, secrets = _main(runtime)
    headers = {k.lower(): v for k, v in _signed(issued, "GET", "/api/v2/spot/account/info", b"").items()}
    request = SignedRequest("GET", "/api/v2/spot/account/info", "", headers, b"", "127.0.0.1")
    with sqlite3.connect(tmp_path / "keyplane.db") as conn:  # the store breaks under the running verifier
        conn.execute("ALTER TABLE api_keys RENAME TO api_keys_gone")
    with caplog.at_level(logging.DEBUG):
        result = runtime.verifier.verify(request)
    assert result.reason.value == "UNAVAILABLE"
    logged = caplog.text + "".join(
        "".join(traceback.format_exception(*record.exc_info)) for record in caplog.records if record.exc_info
    )
    assert logged  # it was logged
    assert _leaks(logged, [*secrets, headers["access-sign"]]) == []
