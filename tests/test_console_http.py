"""The console over HTTP without a browser (the app in this process, the real store and token service): the
cookie's attributes, CSRF and scope refusals that change nothing, the idle timeout, a revoked token, and
input no browser would send (never a 5xx). tests/test_console_browser.py drives it in Chromium."""

from __future__ import annotations

import asyncio
import datetime
import logging
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyplane.app import KeyplaneApp, create_app
from keyplane.config import Settings
from keyplane.domain.model import AccountStatus, Scheme
from keyplane.runtime import Runtime, build_runtime
from keyplane.services.tokens import TokenService

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    path = tmp_path_factory.mktemp("console-http") / "keyplane.db"
    runtime = build_runtime(Settings(database_url=f"sqlite:///{path}"))
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def tokens(runtime: Runtime) -> dict[str, str]:
    service = TokenService(runtime.store)
    return {
        scope: service.create([scope], name=f"{scope}-token").secret for scope in ("all", "read", "keys", "audit")
    }


def app_of(runtime: Runtime, **settings: Any) -> KeyplaneApp:
    return create_app(Settings(database_url=runtime.settings.database_url, **settings), runtime)


def run(app: KeyplaneApp, scenario: Callable[[httpx.AsyncClient], Awaitable[None]], *,
        base_url: str = "http://console.test") -> None:
    async def go() -> None:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            await scenario(client)
    asyncio.run(go())


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    page = await client.get("/console/signin")
    return await client.post("/console/signin", data={"csrf": CSRF.search(page.text)[1], "token": token})


async def csrf_of(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return CSRF.search(page.text)[1]


def test_sign_in_sets_a_sealed_http_only_strict_cookie_secure_on_https_or_when_told(
    runtime: Runtime, tokens: dict[str, str]
) -> None:
    async def plain(client: httpx.AsyncClient) -> None:
        signed = await sign_in(client, tokens["all"])
        assert signed.status_code == 303 and signed.headers["location"] == "/console/accounts"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie
        assert tokens["all"] not in cookie and "tok_" not in cookie
        page = await client.get("/console/accounts")
        assert page.status_code == 200 and "all-token" in page.text
        for name, value in (("cache-control", "no-store"), ("x-frame-options", "DENY")):
            assert page.headers[name] == value
        assert "script-src 'self'" in page.headers["content-security-policy"]

    run(app_of(runtime), plain)

    async def secure(client: httpx.AsyncClient) -> None:
        signed = await sign_in(client, tokens["all"])
        assert "; Secure" in signed.headers["set-cookie"]

    run(app_of(runtime), secure, base_url="https://console.test")
    run(app_of(runtime, console_secure_cookie=True), secure)


def test_a_wrong_token_is_refused_and_signs_nobody_in(runtime: Runtime, tokens: dict[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        last = tokens["all"][-1]
        for wrong in ("", "kpt_" + "A" * 43, tokens["all"][:-1] + ("y" if last == "x" else "x"), tokens["all"] + "x",
                      "x" * 5000,
                      tokens["all"].upper()):
            refused = await sign_in(client, wrong)
            assert refused.status_code == 401 and "That token is not valid." in refused.text
            assert (await client.get("/console/accounts")).headers["location"] == "/console/signin"
        # what a paste brings around it is not part of the token
        assert (await sign_in(client, f" {tokens['all']}\n")).status_code == 303

    run(app_of(runtime), scenario)


def test_a_form_without_its_csrf_token_or_from_another_origin_changes_nothing(
    runtime: Runtime, tokens: dict[str, str]
) -> None:
    main = runtime.service.accounts.create_main_account("csrf-target")

    async def scenario(client: httpx.AsyncClient) -> None:
        await sign_in(client, tokens["all"])
        csrf = await csrf_of(client, f"/console/accounts/{main.uid}")
        freeze = f"/console/accounts/{main.uid}/freeze"
        for data, headers in (
            ({}, {}),
            ({"csrf": ""}, {}),
            ({"csrf": csrf[:-1]}, {}),
            ({"csrf": csrf}, {"origin": "https://evil.example"}),
        ):
            refused = await client.post(freeze, data=data, headers=headers)
            assert refused.status_code == 403 and "CSRF" in refused.text, refused.text
        assert runtime.service.accounts.main_account(main.uid).status is AccountStatus.NORMAL
        # the sign-in form has its own: a login posted from elsewhere is refused too
        client.cookies.clear()
        refused = await client.post("/console/signin", data={"token": tokens["all"]})
        assert refused.status_code == 403
        assert (await client.get("/console/accounts")).status_code == 303
        await sign_in(client, tokens["all"])
        csrf = await csrf_of(client, f"/console/accounts/{main.uid}")
        done = await client.post(freeze, data={"csrf": csrf}, headers={"origin": "http://console.test"})
        assert done.status_code == 303
        assert runtime.service.accounts.main_account(main.uid).status is AccountStatus.FREEZE

    run(app_of(runtime), scenario)


def test_each_page_and_action_needs_its_scope(runtime: Runtime, tokens: dict[str, str]) -> None:
    main = runtime.service.accounts.create_main_account("scoped")

    async def scenario(client: httpx.AsyncClient) -> None:
        await sign_in(client, tokens["read"])
        csrf = await csrf_of(client, f"/console/accounts/{main.uid}")
        page = (await client.get(f"/console/accounts/{main.uid}")).text
        assert "Freeze" not in page and "Create a key" not in page  # what it may not do is not offered
        refused = await client.post(f"/console/accounts/{main.uid}/freeze", data={"csrf": csrf})
        assert refused.status_code == 403 and "needs the scope accounts or all" in refused.text
        refused = await client.post(f"/console/accounts/{main.uid}/keys", data={"csrf": csrf, "dialect": "bitget",
                                                                             "permission": "read"})
        assert refused.status_code == 403 and "keys or all" in refused.text
        assert (await client.get("/console/audit")).status_code == 403
        assert (await client.get("/console/verification")).status_code == 403
        assert runtime.service.keys.list_account_keys(main.uid) == []

        client.cookies.clear()
        signed = await sign_in(client, tokens["audit"])
        assert signed.headers["location"] == "/console/audit"  # the page it may open
        audit_page = await client.get("/console/audit")
        assert audit_page.status_code == 200 and ">Accounts</a>" not in audit_page.text
        assert (await client.get("/console/accounts")).status_code == 403
        assert "needs the scope read, accounts, keys or all" in (
            await client.get(f"/console/accounts/{main.uid}")).text

        client.cookies.clear()
        await sign_in(client, tokens["keys"])
        page = (await client.get(f"/console/accounts/{main.uid}")).text
        assert "Create a key" in page and "Freeze" not in page

    run(app_of(runtime), scenario)


def test_a_revoked_token_ends_its_sessions_and_an_idle_one_times_out(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = TokenService(runtime.store)
    issued = service.create(["all"], name="short-lived")
    app = app_of(runtime, console_idle_minutes=1)

    async def scenario(client: httpx.AsyncClient) -> None:
        await sign_in(client, issued.secret)
        assert (await client.get("/console/accounts")).status_code == 200
        cookie = client.cookies["keyplane_console"]
        import keyplane.console.app as console_app

        real = console_app.time.time
        monkeypatch.setattr(console_app.time, "time", lambda: real() + 61)
        idle = await client.get("/console/accounts")
        # the cookie's Max-Age is the idle timeout, so the client has dropped it too; the server refuses it anyway
        assert idle.status_code == 303 and idle.headers["location"] == "/console/signin"
        stale = await client.get("/console/accounts", headers={"cookie": f"keyplane_console={cookie}"})
        assert stale.headers["location"] == "/console/signin?ended=1"
        assert "Your session ended" in (await client.get(stale.headers["location"])).text
        monkeypatch.setattr(console_app.time, "time", real)
        client.cookies.clear()
        await sign_in(client, issued.secret)
        service.revoke(issued.token.id)
        assert (await client.get("/console/accounts")).headers["location"] == "/console/signin?ended=1"
        refused = await sign_in(client, issued.secret)
        assert refused.status_code == 401

    run(app, scenario)


def test_sign_out_clears_the_cookie(runtime: Runtime, tokens: dict[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await sign_in(client, tokens["all"])
        csrf = await csrf_of(client, "/console/accounts")
        refused = await client.post("/console/signout", data={})
        assert refused.status_code == 403
        out = await client.post("/console/signout", data={"csrf": csrf})
        assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
        assert (await client.get("/console/accounts")).headers["location"] == "/console/signin"

    run(app_of(runtime), scenario)


def test_input_no_browser_sends_is_a_4xx_never_a_5xx(runtime: Runtime, tokens: dict[str, str]) -> None:
    main = runtime.service.accounts.create_main_account("odd-input")
    key = runtime.service.keys.issue_main_key(main.uid, Scheme.BITGET, permissions=["read"]).key

    async def scenario(client: httpx.AsyncClient) -> None:
        await sign_in(client, tokens["all"])
        csrf = await csrf_of(client, "/console/accounts")
        base = f"/console/accounts/{main.uid}"
        cases: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", f"{base}/keys", {"content": b"csrf=" + csrf.encode() + b"&label=%FF%FE",
                                      "headers": {"content-type": "application/x-www-form-urlencoded"}}),
            ("POST", f"{base}/keys", {"content": b'{"csrf": "x"}', "headers": {"content-type": "application/json"}}),
            ("POST", f"{base}/keys", {"content": b"a=" + b"x" * 70_000,
                                      "headers": {"content-type": "application/x-www-form-urlencoded"}}),
            ("POST", f"{base}/keys", {"content": "&".join(f"f{i}=1" for i in range(200)).encode(),
                                      "headers": {"content-type": "application/x-www-form-urlencoded"}}),
            ("POST", f"{base}/keys", {"data": {"csrf": csrf, "dialect": "nope"}}),
            ("POST", f"{base}/keys", {"data": {"csrf": csrf, "dialect": "bitget", "permission": "fly"}}),
            ("POST", f"{base}/keys", {"data": {"csrf": csrf, "dialect": "bitget", "permission": "read",
                                               "ips": "300.1.1.1"}}),
            ("POST", f"{base}/keys", {"data": {"csrf": csrf, "dialect": "whitebit", "key_type": "9"}}),
            ("POST", f"{base}/keys", {"data": {"csrf": csrf, "dialect": "bitget", "permission": "read",
                                               "label": "l" * 21}}),
            ("POST", f"{base}/subaccounts", {"data": {"csrf": csrf, "name": "", "dialect": "bitget"}}),
            ("POST", f"{base}/subaccounts", {"data": {"csrf": csrf, "name": "a\x01b", "dialect": "bitget"}}),
            ("POST", f"/console/keys/{key.api_key}/rotate", {"data": {"csrf": csrf, "grace": "8d"}}),
            ("POST", f"/console/keys/{key.api_key}/rotate", {"data": {"csrf": csrf, "grace": "-1h"}}),
            ("POST", f"/console/keys/{key.api_key}/rotate", {"data": {"csrf": csrf, "grace": "1e9"}}),
            ("POST", f"/console/keys/{key.api_key}/expiry", {"data": {"csrf": csrf, "expires_in": "11y"}}),
            ("POST", f"/console/keys/{key.api_key}/expiry", {"data": {"csrf": csrf, "expires_in": "soon"}}),
            ("POST", f"/console/keys/{key.api_key}/expiry", {"data": {"csrf": csrf, "expires_in": "0"}}),
            ("POST", "/console/accounts/999999999/freeze", {"data": {"csrf": csrf}}),
            ("POST", "/console/keys/nope/disable", {"data": {"csrf": csrf}}),
            ("GET", "/console/accounts/999999999999999999", {}),
            ("GET", "/console/keys/nope/delete", {}),
            ("GET", "/console/accounts?page=99999999999&q=%00", {}),
            ("GET", "/console/accounts?q=%FF", {}),
            ("GET", "/console/audit?account=-1&action=%25&target=" + "x" * 500, {}),
            ("GET", "/console/static/../app.py", {}),
            ("GET", "/console/nothing", {}),
            ("PUT", "/console/accounts", {}),
        ]
        for method, path, extra in cases:
            response = await client.request(method, path, **extra)
            assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
        assert runtime.service.keys.list_account_keys(main.uid) == [key]  # no new key; not rotated, no expiry
        assert runtime.service.accounts.list_main_accounts(name_contains="odd-input")[0].status is AccountStatus.NORMAL

    run(app_of(runtime), scenario)


def test_static_files_come_from_the_package(runtime: Runtime) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        for name, kind in (("console.css", "text/css"), ("console.js", "text/javascript"),
                           ("favicon.svg", "image/svg+xml")):
            response = await client.get(f"/console/static/{name}")
            assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
            assert response.content == (Path(__file__).parents[1] / "src/keyplane/console/static" / name).read_bytes()

    run(app_of(runtime), scenario)


def test_the_audit_view_filters_and_pages_through_the_store(runtime: Runtime, tokens: dict[str, str]) -> None:
    main = runtime.service.accounts.create_main_account("audited")
    for _ in range(30):  # 60 events about this account, its own creation besides
        runtime.service.accounts.set_main_account_status(main.uid, AccountStatus.FREEZE)
        runtime.service.accounts.set_main_account_status(main.uid, AccountStatus.NORMAL)
    actions = re.compile(r"<td><code>(account\.[a-z]+)</code></td>")

    async def scenario(client: httpx.AsyncClient) -> None:
        await sign_in(client, tokens["audit"])
        first = await client.get("/console/audit", params={"account": str(main.uid)})
        assert first.status_code == 200
        assert actions.findall(first.text) == ["account.unfreeze", "account.freeze"] * 25
        older = re.search(r'href="\?([^"]+)">Older', first.text)
        assert older is not None and "account=" in older[1]
        second = await client.get("/console/audit?" + older[1].replace("&amp;", "&"))
        assert actions.findall(second.text) == ["account.unfreeze", "account.freeze"] * 5 + ["account.create"]
        assert "Older" not in second.text and "Newest" in second.text
        only = await client.get("/console/audit", params={"account": str(main.uid), "action": "account.create"})
        assert actions.findall(only.text) == ["account.create"]
        today = datetime.datetime.now(datetime.UTC).date()
        dated = await client.get("/console/audit", params={"account": str(main.uid), "since": str(today),
                                                          "until": str(today), "action": "account.create"})
        assert actions.findall(dated.text) == ["account.create"]
        tomorrow = today + datetime.timedelta(days=1)
        assert actions.findall((await client.get("/console/audit", params={
            "account": str(main.uid), "since": str(tomorrow)})).text) == []
        for bad in ({"since": "yesterday"}, {"account": "x1"}, {"before": "-5"}):
            refused = await client.get("/console/audit", params=bad)
            assert refused.status_code == 400, bad

    run(app_of(runtime), scenario)


def test_a_store_outage_is_a_503_page_and_a_bug_a_logged_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = build_runtime(Settings(database_url=f"sqlite:///{tmp_path / 'keyplane.db'}"))
    token = TokenService(runtime.store).create(["all"], name="outage").secret
    main = runtime.service.accounts.create_main_account("outage")

    async def scenario(client: httpx.AsyncClient) -> None:
        await sign_in(client, token)
        csrf = await csrf_of(client, f"/console/accounts/{main.uid}")
        with sqlite3.connect(tmp_path / "keyplane.db") as conn:  # the store loses a table under the server
            conn.execute("ALTER TABLE accounts RENAME TO accounts_gone")
        page = await client.get("/console/accounts")
        assert page.status_code == 503 and "nothing was changed" in page.text
        assert (await client.post(f"/console/accounts/{main.uid}/freeze", data={"csrf": csrf})).status_code == 503
        with sqlite3.connect(tmp_path / "keyplane.db") as conn:
            conn.execute("ALTER TABLE accounts_gone RENAME TO accounts")
        assert (await client.get("/console/accounts")).status_code == 200
        assert runtime.service.accounts.main_account(main.uid).status is AccountStatus.NORMAL

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(runtime.service.accounts, "list_main_accounts", broken)
        with caplog.at_level(logging.ERROR, logger="keyplane.console"):
            page = await client.get("/console/accounts")
        assert page.status_code == 500 and "it is logged" in page.text and "a bug" not in page.text
        assert "RuntimeError: a bug" in caplog.text

    try:
        run(app_of(runtime), scenario)
    finally:
        runtime.close()
